"""``build_detector``: the integration's public builder (config name or path -> detectron2 model + cfg)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from . import modeling  # noqa: F401  registers the ShuffleNet backbones and RoI head
from .checkpoint import load_detector_weights
from .config import get_detection_cfg

__all__ = ["build_detector"]


def build_detector(
    config: str, opts: Optional[Sequence[str]] = None, weights: Optional[str] = None
) -> Tuple[nn.Module, CfgNode]:
    """Build the detector of ``config`` (bare name in ``configs/detection/`` or a path) in eval mode.

    ``opts`` are detectron2 ``KEY VALUE`` overrides. Weights: ``weights`` if given, else
    ``cfg.MODEL.WEIGHTS`` if set; any format :class:`~.checkpoint.ShuffleNetCheckpointer` reads (a
    detectron2 checkpoint, the package weights file, a classification Lightning ``.ckpt``, a converted
    public checkpoint). Returns ``(model, cfg)``; ``cfg`` is frozen and has ``MODEL.WEIGHTS`` set to
    what was loaded.
    """
    opts = list(opts or [])
    if weights is not None:
        opts += ["MODEL.WEIGHTS", str(weights)]
    cfg = get_detection_cfg(config, opts)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_detector_weights(model, cfg.MODEL.WEIGHTS)
    model.eval()
    return model, cfg
