"""The package's weights file: one format for trained, converted and exported models.

A weights file is a ``torch.save`` dict, loadable with ``torch.load(weights_only=True)``::

    {"format": "shufflenet-weights/1", "arch": <registered name or None>, "config": {constructor kwargs},
     "state_dict": {...}, "meta": {free-form, JSON-able: source, converter, accuracy, ...}}

``load_state_dict_strict`` is the one place that checks a state dict against a model, so every loader in
the project reports a mismatch the same way: the first mismatching key and both shapes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from ..fileio import atomic_write

FORMAT = "shufflenet-weights/1"
PathLike = Union[str, os.PathLike]


class WeightsError(ValueError):
    """A weights file or state dict that does not fit (message names the file/key and shapes)."""


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` through :func:`shufflenet.fileio.atomic_write`: never a half-written file."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def save_weights(
    model: nn.Module, path: PathLike, arch: Optional[str] = None, meta: Optional[Mapping[str, Any]] = None
) -> Path:
    """Write ``model`` as a package weights file (atomically)."""
    config = model.config() if hasattr(model, "config") else None
    obj = {
        "format": FORMAT,
        "arch": arch,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    return atomic_torch_save(obj, path)


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a clear message for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with code objects, not a torch file...
        raise WeightsError(f"{path}: cannot be read as a torch weights file ({type(e).__name__}: {e})") from None


def extract_state_dict(obj: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The state dict inside a package weights file, a Lightning ``.ckpt`` or a plain state dict."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: expected a dict, got {type(obj).__name__}")
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{source}: no tensor state dict found (keys: {sorted(obj)[:8]})")
    return dict(sd)


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
) -> nn.Module:
    """Load ``state_dict`` into ``model``; every key must exist on both sides with the same shape."""
    own = model.state_dict()
    for key, value in state_dict.items():
        if key not in own:
            raise WeightsError(f"{source}: unexpected key '{key}' (shape {tuple(value.shape)}) not in the model")
        if tuple(own[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"{source}: key '{key}' has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the model"
            )
    missing = [k for k in own if k not in state_dict]
    if missing:
        raise WeightsError(f"{source}: missing key '{missing[0]}' ({len(missing)} missing in all)")
    model.load_state_dict(state_dict, strict=True)
    return model


def load_weights(model: nn.Module, path: PathLike) -> nn.Module:
    """Load a package weights file (or a plain / Lightning state dict) into ``model``, strictly."""
    obj = read_checkpoint(path)
    sd = extract_state_dict(obj, str(path))
    # Lightning checkpoints of the classification module prefix the backbone with "model.".
    # Other top-level entries of such a checkpoint (an EMA copy, losses) are not the backbone.
    if any(k.startswith("model.") for k in sd) and not any(k.startswith("model.") for k in model.state_dict()):
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    return load_state_dict_strict(model, sd, str(path))
