"""A full disk for one test, injected where the package stages its writes.

Every file the package writes whole goes through :func:`shufflenet.fileio.atomic_write` (``open`` of a temporary
sibling, ``write``, ``fsync``, ``os.replace``), and every log it appends to through
:func:`shufflenet.fileio.append_text`. :func:`full_disk` patches the ``open`` that module calls, so the writes of
the files whose final name matches fail with ``ENOSPC`` after ``after`` bytes, as on a disk that fills up mid-write;
nothing else in the process is touched, and ``monkeypatch`` restores it at the end of the test.
"""

from __future__ import annotations

import builtins
import errno
import os
from typing import Callable, List, Optional

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


class _FillingFile:
    def __init__(self, f, budget: List[int]) -> None:
        self._f = f
        self._budget = budget

    def write(self, data) -> int:
        data = bytes(data) if not isinstance(data, str) else data
        if len(data) > self._budget[0]:
            self._f.write(data[: self._budget[0]])
            self._budget[0] = 0
            raise OSError(errno.ENOSPC, NO_SPACE)
        self._budget[0] -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def full_disk(monkeypatch, match: Optional[Callable[[str], bool]] = None, after: int = 0) -> List[str]:
    """From now on, staged writes of files whose final name ``match``\\ es (all when None) fail with ENOSPC after
    ``after`` bytes each. Returns the list of final names that were hit (filled in as they are)."""
    from shufflenet import fileio

    hit: List[str] = []

    def fake_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        name = os.path.basename(str(path))  # ".FINAL.<pid>.<random>.tmp"
        final = name[1:].rsplit(".", 3)[0] if name.startswith(".") and name.endswith(".tmp") else name
        if not ("w" in mode or "a" in mode) or (match is not None and not match(final)):
            return f
        hit.append(final)
        return _FillingFile(f, [after])

    monkeypatch.setattr(fileio, "open", fake_open, raising=False)
    return hit
