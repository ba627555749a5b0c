"""Errors of the classification integration: one line that names the file / key / value and what was expected."""

from __future__ import annotations

from typing import Optional

from ..errors import ShuffleNetError


class ClassificationError(ShuffleNetError, ValueError):
    """Bad input to the classification integration (data folder, checkpoint, option value), or a run that
    cannot go on (a checkpoint that cannot be written, a NaN loss); one ``error:`` line, exit status 2."""


class DataError(ClassificationError):
    """A dataset root that cannot be used (missing, wrong layout, empty class folder, class mismatch)."""


class TrainingInterrupted(Exception):
    """A run stopped by a signal (not an input error: the CLI exits with 143). ``step`` is the step of the
    checkpoint written; ``None`` when the signal came during the sanity check, before any step (nothing saved)."""

    def __init__(self, signum: int, step: Optional[int], checkpoint: object = None) -> None:
        import signal as _signal

        self.signum, self.checkpoint = int(signum), checkpoint
        self.step = None if step is None else int(step)
        self.signal_name = _signal.Signals(self.signum).name if self.signum in set(_signal.Signals) else str(signum)
        where = "during the sanity check, before the first step" if step is None else f"at step {step}"
        super().__init__(f"{self.signal_name} {where}" + (f"; checkpoint {checkpoint}" if checkpoint else ""))
