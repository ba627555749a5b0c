"""Atomic file writes: every file the project writes appears whole or not at all.

Write to a temporary file in the destination folder, flush and fsync it, then ``os.replace`` it onto the
final name (atomic on POSIX and Windows). A crash or a kill mid-write leaves the old file (or none) and at
most a hidden ``.NAME.*.tmp`` file, never a truncated ``NAME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Union

PathLike = Union[str, os.PathLike]

__all__ = ["atomic_write", "tmp_sibling", "write_json_atomic", "write_text_atomic"]


def _umask_mode() -> int:
    """0o666 minus the process umask: the mode a plain ``open(path, "w")`` gives (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def tmp_sibling(final: PathLike) -> Path:
    """A new empty file next to ``final`` (same folder, so ``os.replace`` onto ``final`` is atomic), with the
    mode a plain ``open`` would give. For writers that need a path rather than a file object; the caller
    replaces or unlinks it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    return Path(tmp)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """``with atomic_write(path, "w") as f: ...``: ``f`` is a temporary file that becomes ``path`` on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = tmp_sibling(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(text: str, path: PathLike) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def _jsonable(value: Any) -> Any:
    """numpy / torch scalars as numbers, anything else unknown (paths, dtypes) as its text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def write_json_atomic(obj: Any, path: PathLike, indent: int = 2) -> Path:
    """``json.dumps`` (keys in the order given, trailing newline) through :func:`atomic_write`."""
    return write_text_atomic(json.dumps(obj, indent=indent, default=_jsonable) + "\n", path)
