"""One error base for the whole project (core: imports nothing of the project).

Every error meant for the person at the terminal derives from :class:`ShuffleNetError`; each integration
subclasses it (``ClassificationError``, ``DetectionError``, ``MobileError``, ...) and the layers below raise their
own subclasses (``InvalidConfigError``, ``UnknownModelError``, ``WeightsError``). A subclass exists for an
integration or where some caller catches that kind separately; anything else raises its integration's base (or this
one) with a message that says what went wrong. Every command-line entry
point runs through :func:`run_cli`, which turns any ``ShuffleNetError`` into one ``error: ...`` line on
stderr and exit status 2, so no CLI lists the errors it catches by hand.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

__all__ = ["ShuffleNetError", "EXIT_USAGE", "EXIT_INTERRUPTED", "run_cli", "print_error"]

#: Exit status of a command that was given input it cannot use (argparse's convention).
EXIT_USAGE = 2
#: Exit status of a run stopped by a signal after saving its state (128 + SIGTERM, as shells report it).
EXIT_INTERRUPTED = 143


class ShuffleNetError(Exception):
    """Bad input or an impossible request; the message names the file, key or value and what was expected."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


def print_error(message: object) -> None:
    """The one line a CLI prints for a :class:`ShuffleNetError` (no traceback)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def run_cli(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Call ``main(argv)``; a :class:`ShuffleNetError` becomes ``error: ...`` on stderr and exit status 2."""
    try:
        return int(main(argv) or 0)
    except ShuffleNetError as e:
        print_error(e)
        return EXIT_USAGE
