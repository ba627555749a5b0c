"""The staged write every runtime shares: files are built as temporary siblings of their final names
(:class:`Staged`), verified (:func:`verify`), and only then renamed into place with the JSON sidecar; any
failure or interrupt before the commit leaves neither a file nor a temporary one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence

from ..fileio import sha256_file, tmp_sibling, write_json_staged
from .source import MobileError

__all__ = ["Staged", "filtered_stderr", "without_log_records"]

Log = Callable[[str], None]
#: torch's notice, logged when ExecuTorch or litert-torch (through torchao) is imported, for an Enum they register.
PYTREE_NOTICE = ("torch.utils._pytree", r"is an Enum subclass and is now natively supported")


class Staged:
    """Temporary siblings of the files one export writes; :meth:`commit` renames them into place."""

    def __init__(self, out_dir: os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.files: Dict[Path, Path] = {}  # final -> temporary

    def tmp(self, name: str) -> Path:
        final = self.out_dir / name
        self.files[final] = tmp_sibling(final)
        return self.files[final]

    def entry(self, name: str) -> Dict[str, Any]:
        """``file``, ``sha256`` and ``size_bytes`` of the staged file that will be ``name``."""
        t = self.files[self.out_dir / name]
        return {"file": name, "sha256": sha256_file(t), "size_bytes": t.stat().st_size}

    def commit(self, side: Dict[str, Any], sidecar_name: str, log: Log = print) -> List[Path]:
        """The sidecar is staged too, and renamed last: a failed write (a full disk) leaves the folder's earlier
        files as they were, never a new model beside an old sidecar."""
        made = list(self.files)
        side_path = self.out_dir / sidecar_name
        try:
            write_json_staged(side, self.tmp(sidecar_name))
            for final, t in self.files.items():
                os.replace(t, final)
        except OSError as e:
            raise MobileError(
                f"cannot write the export to {self.out_dir}: {e.strerror or e}; its files are kept"
            ) from None
        for final in made:
            log(f"[export] wrote {final} ({final.stat().st_size / 1e6:.2f} MB)")
        log(f"[export] wrote {side_path}")
        return made

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc: Any) -> None:
        for t in self.files.values():
            if t.exists():
                t.unlink()


@contextlib.contextmanager
def filtered_stderr(harmless: Sequence[str], fd: int = 2) -> Iterator[None]:
    """Drop the lines of native runtime chatter known to be harmless (``harmless``: regular expressions) that C++
    code writes to file descriptor ``fd`` (2: stderr, 1: stdout) inside the block; every other line is written
    out afterwards."""
    patterns = [re.compile(p) for p in harmless]
    stream = sys.stderr if fd == 2 else sys.stdout
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), fd)
        try:
            yield
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            buf.seek(0)
            kept = [
                line
                for line in buf.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not any(p.search(line) for p in patterns)
            ]
            if kept:
                stream.write("".join(kept))
                stream.flush()


@contextlib.contextmanager
def without_log_records(logger: str, harmless: str) -> Iterator[None]:
    """Drop the ``logging`` records of ``logger`` whose message matches ``harmless`` inside the block only."""
    pattern = re.compile(harmless)

    def keep(record: logging.LogRecord) -> bool:
        return not pattern.search(record.getMessage())

    log = logging.getLogger(logger)
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)
