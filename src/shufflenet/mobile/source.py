"""Where an exported model comes from, and the wing's error classes.

:func:`load_model` turns the first positional argument of ``mobile/export.py`` into an eval-mode
``nn.Module`` plus the facts the sidecar needs (name, normalization): a registered name is built with
``create_model``; any file goes through the project's one reader (:func:`shufflenet.weights.read_weights`)
and :func:`shufflenet.models.model_from_weights`. Nothing here defines a network or sniffs a format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from torch import nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ShuffleNetError
from ..fileio import check_output_dir
from ..models import create_model, get_spec, list_models, model_from_weights
from ..weights.io import read_weights

__all__ = ["ModelSource", "load_model", "MobileError", "RuntimeUnavailableError", "writable_dir"]


class MobileError(ShuffleNetError, RuntimeError):
    """A mobile-wing failure with a message meant for the person at the terminal (no traceback)."""


class RuntimeUnavailableError(MobileError):
    """A runtime (or what it needs: an optional extra, XNNPACK in torch, a converter tool) is not installed."""


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


def load_model(spec: str, arch: Optional[str] = None, num_classes: Optional[int] = None) -> ModelSource:
    """A registered name (randomly initialised; ``num_classes`` overrides the classifier width) or any file
    :func:`read_weights` reads (the network it holds: its stored config, else ``arch`` or its recorded name)."""
    path = Path(spec)
    looks_like_file = path.suffix in (".pt", ".pth", ".ckpt", ".bin") or os.sep in spec or path.exists()
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if not looks_like_file:
        get_spec(spec)  # UnknownModelError (a ShuffleNetError) names the valid ones
        return ModelSource(
            create_model(spec, **kwargs).eval(), spec, "registry (random init: pass a weights file for trained weights)"
        )
    wf = read_weights(path, use="auto")
    name = arch or wf.arch
    if name is None and not (wf.config and "groups" in wf.config):
        raise MobileError(
            f"{path}: the file does not say which architecture it holds ({wf.kind}, no stored config or name); "
            f"pass --arch NAME (one of: {', '.join(list_models())})"
        )
    model = model_from_weights(wf, arch, **kwargs)
    if name is None:
        cfg = wf.config or {}
        name = f"shufflenet_v1(custom: g={cfg.get('groups')}, s={cfg.get('width_mult')})"
    return ModelSource(model.eval(), name, str(path), extra={"weights_meta": dict(wf.meta)})


def writable_dir(path: os.PathLike, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be an output folder (one error line naming ``flag`` if not);
    nothing is created here: the exporters create the folder when they write."""
    return check_output_dir(path, flag, MobileError)
