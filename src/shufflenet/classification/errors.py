"""Errors of the classification wing: one line that names the file / key / value and what was expected."""

from __future__ import annotations

from ..errors import ShuffleNetError


class ClassificationError(ShuffleNetError, ValueError):
    """Bad input to the classification wing (data folder, checkpoint, option value)."""


class DataError(ClassificationError):
    """A dataset root that cannot be used (missing, wrong layout, empty class folder, class mismatch)."""


class CheckpointMismatchError(ClassificationError):
    """A checkpoint that does not fit the model or the dataset (architecture or number of classes)."""


class TrainingInterrupted(Exception):
    """A run stopped by a signal after saving its state (not an input error: the CLI exits with 143)."""

    def __init__(self, signum: int, step: int, checkpoint: object = None) -> None:
        import signal as _signal

        self.signum, self.step, self.checkpoint = int(signum), int(step), checkpoint
        name = _signal.Signals(self.signum).name if self.signum in set(_signal.Signals) else str(signum)
        super().__init__(f"{name} at step {step}" + (f"; checkpoint {checkpoint}" if checkpoint else ""))
