"""Weights: the package's weights file and the one reader of every file the project accepts.

This floor sits below the models (it imports no network); the converters of public checkpoints sit above
them, in :mod:`shufflenet.convert`.
"""

from .io import (
    CONVERT_COMMAND,
    FORMAT,
    WeightsError,
    WeightsFile,
    atomic_torch_save,
    extract_state_dict,
    load_state_dict_strict,
    load_weights,
    public_layout,
    read_checkpoint,
    read_weights,
    save_weights,
)

__all__ = [
    "CONVERT_COMMAND",
    "FORMAT",
    "WeightsError",
    "WeightsFile",
    "atomic_torch_save",
    "extract_state_dict",
    "load_state_dict_strict",
    "load_weights",
    "public_layout",
    "read_checkpoint",
    "read_weights",
    "save_weights",
]
