"""File helpers (core): atomic writes and file hashes.

Every file the project writes appears whole or not at all: write to a temporary file in the destination
folder, flush and fsync it, then ``os.replace`` it onto the final name (atomic on POSIX and Windows). A
crash or a kill mid-write leaves the old file (or none) and at most a hidden ``.NAME.<pid>.*.tmp`` file,
never a truncated ``NAME``; the next writer of ``NAME`` removes such leftovers of processes that are gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional, Union

PathLike = Union[str, os.PathLike]

__all__ = [
    "check_output_dir",
    "atomic_write",
    "pid_alive",
    "tmp_sibling",
    "remove_stale_tmp",
    "sha256_file",
    "write_json_atomic",
    "write_text_atomic",
]


def _umask_mode() -> int:
    """0o666 minus the process umask: the mode a plain ``open(path, "w")`` gives (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (a pid we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_tmp(final: PathLike) -> int:
    """Remove temporary files of earlier writes of ``final`` whose writing process no longer runs.

    Only names this module makes (``.NAME.<pid>.<random>.tmp``) are touched; a write in progress in another
    live process is left alone. Returns the number of files removed.
    """
    final = Path(final)
    removed = 0
    if not final.parent.is_dir():
        return 0
    prefix = f".{final.name}."
    for tmp in final.parent.glob(f".{final.name}.*.tmp"):
        pid_text = tmp.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


def tmp_sibling(final: PathLike) -> Path:
    """A new empty file next to ``final`` (same folder, so ``os.replace`` onto ``final`` is atomic), with the
    mode a plain ``open`` would give. For writers that need a path rather than a file object; the caller
    replaces or unlinks it. Leftovers of killed earlier writers of ``final`` are removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent)
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
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # A writer that wraps the file (torch.save's zip writer) reports a failed write (a full disk) as its own
        # RuntimeError with the OSError as its context: raise the OSError, which callers handle as a write failure.
        cause = _os_error_behind(e)
        if cause is not None:
            raise cause from None
        raise


def _os_error_behind(error: BaseException) -> Optional[OSError]:
    if isinstance(error, OSError) or not isinstance(error, Exception):
        return None
    seen = error.__cause__ or error.__context__
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def append_text(text: str, path: PathLike) -> Path:
    """Append ``text`` to ``path`` whole or not at all: a failed write (a full disk) cuts the file back to the size
    it had, so a log never ends in a half-written row; the ``OSError`` is raised."""
    with open(path, "a", newline="") as f:
        start = f.tell()
        try:
            f.write(text)
            f.flush()
        except BaseException:
            with contextlib.suppress(OSError):
                f.truncate(start)
            raise
    return Path(path)


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


def _json_text(obj: Any, indent: int = 2) -> str:
    return json.dumps(obj, indent=indent, default=_jsonable) + "\n"  # keys in the order given, trailing newline


def write_json_atomic(obj: Any, path: PathLike, indent: int = 2) -> Path:
    """``json.dumps`` (keys in the order given, trailing newline) through :func:`atomic_write`."""
    return write_text_atomic(_json_text(obj, indent), path)


def write_json_staged(obj: Any, tmp: PathLike) -> Path:
    """The JSON :func:`write_json_atomic` writes, into ``tmp``: a staged file (:func:`tmp_sibling`) that its caller
    renames into place together with others."""
    with open(tmp, "w") as f:
        f.write(_json_text(obj))
        f.flush()
        os.fsync(f.fileno())
    return Path(tmp)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_output_dir(path: PathLike, what: str, error: Callable[[str], Exception]) -> Path:
    """Check, before any work, that ``path`` can be an output folder: ``error("<what> <path>: ...")`` (one line)
    if it names a file, lies under a file, or sits where this process cannot write. Nothing is created; the check
    writes and removes one probe file in the nearest existing folder."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise error(f"{what} {path}: is a file, not a folder")
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise error(f"{what} {path}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise error(f"{what} {path}: cannot write in {existing} ({e.strerror or e})") from None
    return path
