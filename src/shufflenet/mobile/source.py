"""Where an exported model comes from: a registered name, a package weights file or a Lightning ``.ckpt``.

:func:`load_model` turns the first positional argument of ``mobile/export.py`` into an eval-mode
``nn.Module`` plus the facts the sidecar needs (name, normalization). Everything is built through the
ground floor (``shufflenet.create_model`` / ``shufflenet.weights``); nothing here defines a network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from ..models import create_model, get_spec, list_models
from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ShuffleNetError
from ..models.registry import UnknownModelError
from ..weights.io import WeightsError, extract_state_dict, load_state_dict_strict, read_checkpoint

__all__ = ["ModelSource", "load_model", "MobileError", "IMAGENET_MEAN", "IMAGENET_STD"]

#: The preprocessing of every model in this project (RGB in [0, 1], then torchvision's mean/std).


class MobileError(ShuffleNetError, RuntimeError):
    """A mobile-wing failure with a message meant for the person at the terminal (no traceback)."""


@dataclass
class ModelSource:
    """An eval-mode model and what the sidecar says about it."""

    model: nn.Module
    name: str  #: registered architecture name (or a descriptive name for non-registered models)
    origin: str  #: "registry", a file path, or "builder:<...>"
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    task: str = "classification"
    extra: Dict[str, Any] = field(default_factory=dict)
    input_spec: Optional[Dict[str, Any]] = None  #: replaces the classifier normalization (detectors)

    @property
    def normalization(self) -> Dict[str, Any]:
        if self.input_spec is not None:
            return dict(self.input_spec)
        return {
            "color": "RGB",
            "scale": "pixel / 255 (values in [0, 1])",
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": "NCHW float32 (channels_last input accepted)",
        }


def _num_classes_in(sd: Mapping[str, torch.Tensor]) -> Optional[int]:
    for key in ("fc.weight", "classifier.weight", "classifier.6.weight", "head.fc.weight"):
        if key in sd and sd[key].ndim == 2:
            return int(sd[key].shape[0])
    return None


def _arch_in_hparams(obj: Mapping[str, Any]) -> Optional[str]:
    """A registered name stored anywhere in a Lightning checkpoint's hyper-parameters (nested dicts too)."""
    names = set(list_models())
    stack = [obj.get("hyper_parameters") or {}]
    while stack:
        cur = stack.pop()
        if isinstance(cur, Mapping):
            for k, v in cur.items():
                if isinstance(v, str) and v in names:
                    return v
                if isinstance(v, Mapping):
                    stack.append(v)
    return None


def load_model(
    spec: str,
    arch: Optional[str] = None,
    num_classes: Optional[int] = None,
) -> ModelSource:
    """Build the model named by ``spec``: a registered name, or a weights/checkpoint file.

    * registered name (``shufflenet_v1_x0_5_g3``, ``alexnet``, ...): randomly initialised unless a
      weights file is given instead; ``num_classes`` overrides the classifier width.
    * package weights file (``save_weights``): its ``arch`` and ``config`` rebuild the network.
    * Lightning ``.ckpt`` of this project (backbone under ``model.``) or a plain state dict: the
      architecture comes from ``arch``, the checkpoint's hyper-parameters, or an error that says to pass
      ``--arch``; the class count is read from the classifier weight.
    """
    path = Path(spec)
    looks_like_file = path.suffix in (".pt", ".pth", ".ckpt", ".bin") or os.sep in spec or path.exists()
    if not looks_like_file:
        try:
            get_spec(spec)
        except UnknownModelError as e:
            raise MobileError(str(e)) from None
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        model = create_model(spec, **kwargs)
        return ModelSource(model.eval(), spec, "registry (random init: pass a weights file for trained weights)")

    try:
        obj = read_checkpoint(path)
    except WeightsError as e:
        raise MobileError(str(e)) from None
    if not isinstance(obj, Mapping):
        raise MobileError(f"{path}: expected a weights dict, got {type(obj).__name__}")
    try:
        sd = extract_state_dict(obj, str(path))
    except WeightsError as e:
        raise MobileError(str(e)) from None
    if any(k.startswith("model.") for k in sd):
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    name = arch or obj.get("arch") or _arch_in_hparams(obj)
    config = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
    if name is None and config is None:
        raise MobileError(
            f"{path}: the file does not say which architecture it holds (no 'arch' key, no registered name in "
            f"its hyper-parameters); pass --arch NAME (one of: {', '.join(list_models())})"
        )
    try:
        if config is not None and (arch is None or arch == obj.get("arch")):
            from ..models import ShuffleNetV1

            model = ShuffleNetV1(**dict(config))
            name = name or f"shufflenet_v1(custom: g={config.get('groups')}, s={config.get('width_mult')})"
        else:
            get_spec(name)
            n = num_classes or _num_classes_in(sd)
            model = create_model(name, **({} if n is None else {"num_classes": n}))
        load_state_dict_strict(model, sd, str(path))
    except (WeightsError, UnknownModelError) as e:
        raise MobileError(str(e)) from None
    except TypeError as e:
        raise MobileError(f"{path}: its 'config' does not build a ShuffleNetV1 ({e})") from None
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    return ModelSource(model.eval(), name, str(path), extra={"weights_meta": dict(meta)})
