"""Errors of the classification wing: one line that names the file / key / value and what was expected."""

from __future__ import annotations

from ..errors import ShuffleNetError


class ClassificationError(ShuffleNetError, ValueError):
    """Bad input to the classification wing (data folder, checkpoint, option value)."""


class DataError(ClassificationError):
    """A dataset root that cannot be used (missing, wrong layout, empty class folder, class mismatch)."""


class CheckpointMismatchError(ClassificationError):
    """A checkpoint that does not fit the model or the dataset (architecture or number of classes)."""
