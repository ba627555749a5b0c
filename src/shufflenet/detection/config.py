"""detectron2 config for ShuffleNet detectors: ``cfg.MODEL.SHUFFLENET`` keys and config-name lookup.

Configs are data: ``configs/detection/*.yaml`` are detectron2 ``_BASE_`` chains. A bare name
(``coco_shufflenet2x`` or ``coco_shufflenet2x.yaml``) is looked up in that folder; any path also works.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import List, Optional, Sequence

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from ..errors import ShuffleNetError
from ..paths import configs_dir

__all__ = [
    "DetectionError",
    "ConfigNotFoundError",
    "add_shufflenet_config",
    "config_dir",
    "list_configs",
    "resolve_config",
    "get_detection_cfg",
]


class DetectionError(ShuffleNetError, ValueError):
    """Bad input to the detection integration (config, dataset, weights): one message, no traceback needed."""


class ConfigNotFoundError(DetectionError):
    pass


def add_shufflenet_config(cfg: CN) -> CN:
    """Add the ``MODEL.SHUFFLENET`` keys (in place; returns ``cfg``).

    MODEL.SHUFFLENET.NAME            registered model name (``shufflenet.list_models()``), e.g.
                                     ``shufflenet_v1_x1_0_g3``; "" builds from GROUPS / WIDTH_MULT.
    MODEL.SHUFFLENET.GROUPS          g, used when NAME is "".
    MODEL.SHUFFLENET.WIDTH_MULT      s, used when NAME is "".
    MODEL.SHUFFLENET.SHUFFLE_INVERSE megvii's shuffle permutation (converted megvii weights that need it).
    MODEL.SHUFFLENET.NORM            "FrozenBN" (transfer from ImageNet), "BN" (train BN, e.g. from
                                     scratch), or "SyncBN".
    MODEL.SHUFFLENET.CHANNELS_LAST   eval mode (inference, export) runs the backbone and the RoI head's
                                     stage 4 on channels-last tensors: the same function, ~1.7x faster
                                     on one CPU thread (oneDNN's grouped / depthwise convolutions).
                                     Training is unchanged. Default True.
    MODEL.SHUFFLENET.ROI_CHUNK_TEST  eval mode runs the C4 RoI head's stage 4 on this many RoIs at a time
                                     (activations stay in the CPU caches: ~1.6x faster at 300 RoIs on one
                                     thread; the same result). 0: all at once. Not while tracing. Default 50.
    MODEL.SHUFFLENET.OUT_FEATURES    backbone outputs among "stem" (stride 4), "stage2" (8),
                                     "stage3" (16), "stage4" (32). C4: ["stage3"]; FPN: stages 2-4.
    """
    cfg.MODEL.SHUFFLENET = CN()
    cfg.MODEL.SHUFFLENET.NAME = "shufflenet_v1_x1_0_g3"
    cfg.MODEL.SHUFFLENET.GROUPS = 3
    cfg.MODEL.SHUFFLENET.WIDTH_MULT = 1.0
    cfg.MODEL.SHUFFLENET.SHUFFLE_INVERSE = False
    cfg.MODEL.SHUFFLENET.NORM = "FrozenBN"
    cfg.MODEL.SHUFFLENET.OUT_FEATURES = ["stage3"]
    cfg.MODEL.SHUFFLENET.CHANNELS_LAST = True
    cfg.MODEL.SHUFFLENET.ROI_CHUNK_TEST = 50
    return cfg


def config_dir() -> Path:
    """``configs/detection`` of this project (``$SHUFFLENET_DETECTION_CONFIGS`` overrides)."""
    env = os.environ.get("SHUFFLENET_DETECTION_CONFIGS")
    if env:
        return Path(env)
    return configs_dir("detection")


def list_configs() -> List[str]:
    folder = config_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("Base-"))


def resolve_config(name_or_path: str) -> Path:
    """A config path from a path or a bare name in ``configs/detection`` (error lists the names)."""
    if not name_or_path:
        raise ConfigNotFoundError(f"no config given; available configs: {', '.join(list_configs())}")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent == Path("."):
        candidate = config_dir() / f"{stem}.yaml"
        if candidate.is_file():
            return candidate
    names = list_configs()
    close = difflib.get_close_matches(stem, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigNotFoundError(
        f"unknown detection config {name_or_path!r} (not a file, not a name in {config_dir()}).{hint} "
        f"Available configs: {', '.join(names) or '(none found)'}"
    )


def get_detection_cfg(config: Optional[str] = None, opts: Optional[Sequence[str]] = None, freeze: bool = True) -> CN:
    """detectron2 ``get_cfg()`` + ShuffleNet keys, merged with a config (name or path) and ``opts``.

    ``MODEL.DEVICE`` falls back to "cpu" when CUDA is not available.
    """
    import torch

    cfg = add_shufflenet_config(get_cfg())
    if config:
        path = resolve_config(config)
        try:
            cfg.merge_from_file(str(path))
        except KeyError as e:
            raise DetectionError(f"{path}: unknown config key ({e.args[0] if e.args else e})") from None
    if opts:
        opts = list(opts)
        if len(opts) % 2:
            raise DetectionError(f"config overrides must be KEY VALUE pairs, got an odd list: {opts}")
        try:
            cfg.merge_from_list(opts)
        except (KeyError, ValueError, AssertionError) as e:
            raise DetectionError(f"bad config override in {opts}: {e}") from None
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg
