"""Weights: the package's weights file, strict loading, and converters for public checkpoints."""

from .io import (
    FORMAT,
    WeightsError,
    atomic_torch_save,
    extract_state_dict,
    load_state_dict_strict,
    load_weights,
    read_checkpoint,
    save_weights,
)

__all__ = [
    "FORMAT",
    "WeightsError",
    "atomic_torch_save",
    "extract_state_dict",
    "load_state_dict_strict",
    "load_weights",
    "read_checkpoint",
    "save_weights",
]
