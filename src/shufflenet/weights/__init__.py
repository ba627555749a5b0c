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
    "convert_checkpoint",
    "convert_megvii",
    "convert_mmpretrain",
    "load_converted",
]

_CONVERT_NAMES = ("convert_checkpoint", "convert_megvii", "convert_mmpretrain", "load_converted")


def __getattr__(name: str):
    # Lazy, so that `python -m shufflenet.weights.convert` does not find its module already imported.
    if name in _CONVERT_NAMES:
        from . import convert

        return getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
