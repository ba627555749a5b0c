"""Transfer: load a classification checkpoint of this project into a ShuffleNet detector.

:class:`ShuffleNetCheckpointer` is detectron2's ``DetectionCheckpointer`` with one more file format,
through its public extension point ``_load_file`` (fvcore's documented hook for new formats).
``MODEL.WEIGHTS`` may then be

* a detectron2 checkpoint (``{"model": ...}``, e.g. ``model_final.pth``): loaded as detectron2 does;
* the package weights file ``{"format", "arch", "config", "state_dict", "meta"}`` written by
  ``shufflenet.save_weights`` (also what the public-checkpoint converters produce);
* a Lightning ``.ckpt`` of the classification wing (backbone under ``model.``);
* a plain ``ShuffleNetV1`` state dict (``conv1.*``, ``stage2.*`` ...).

Classification keys are mapped by module: ``conv1``/``stage2``/``stage3`` into the backbone
(``backbone.*`` for C4, ``backbone.bottom_up.*`` for FPN) and ``stage4`` into the C4 RoI head
(``roi_heads.stage4.*``) or the FPN bottom-up. The classifier (``fc.*``) and BatchNorm's
``num_batches_tracked`` (frozen BN has no such buffer) are ignored; anything else that does not map is
reported as unexpected, detector keys of those modules not in the file as missing. A shape mismatch is an
error naming the key, both shapes and the checkpoint's architecture (a silently random backbone is
worse than a stop).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer

from ..weights import FORMAT, WeightsError, read_checkpoint
from .config import DetectionError
from .modeling import ShuffleNetBackbone, ShuffleNetROIHeads

__all__ = ["ShuffleNetCheckpointer", "TransferError", "classification_key_map", "classify_checkpoint"]

logger = logging.getLogger(__name__)

_CLASSIFIER_MODULES = ("conv1", "maxpool", "stage2", "stage3", "stage4")


class TransferError(DetectionError):
    pass


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def classification_key_map(model: nn.Module) -> Dict[str, str]:
    """Classifier module name -> detector module path, e.g. ``{"stage4": "roi_heads.stage4", ...}``."""
    mapping: Dict[str, str] = {}
    for name, module in _unwrap(model).named_modules():
        if isinstance(module, ShuffleNetBackbone):
            for child in ("conv1",) + tuple(module.stage_names):
                mapping[child] = f"{name}.{child}"
        elif isinstance(module, ShuffleNetROIHeads):
            mapping["stage4"] = f"{name}.stage4"
    return mapping


def classify_checkpoint(obj: Any) -> str:
    """'detectron2', 'package', 'lightning', 'state_dict' or 'unknown'."""
    if not isinstance(obj, Mapping):
        return "unknown"
    if obj.get("format") == FORMAT and isinstance(obj.get("state_dict"), Mapping):
        return "package"
    if isinstance(obj.get("state_dict"), Mapping) and (
        "pytorch-lightning_version" in obj or any(str(k).startswith("model.") for k in obj["state_dict"])
    ):
        return "lightning"
    if isinstance(obj.get("model"), Mapping):
        return "detectron2"
    keys = [str(k) for k in obj]
    if keys and all(isinstance(v, torch.Tensor) for v in obj.values()) and any(
        k.startswith(("conv1.", "stage2.")) for k in keys
    ):
        return "state_dict"
    return "unknown"


def _foreign_hint(keys: List[str]) -> str:
    if any("first_conv" in k or "branch_main" in k for k in keys):
        return " It looks like megvii's ShuffleNet-Series checkpoint: convert it to the package weights file first."
    if any(k.startswith("backbone.layers") for k in keys):
        return " It looks like an mmpretrain checkpoint: convert it to the package weights file first."
    return ""


class ShuffleNetCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that also reads this project's classification checkpoints.

    After a transfer load, :attr:`transfer_report` holds what happened (also logged, and returned by
    ``load()`` under ``"transfer_report"``).
    """

    transfer_report: Optional[Dict[str, Any]] = None

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith((".pkl", ".pyth")):
            return super()._load_file(filename)
        try:
            obj = read_checkpoint(filename)
        except WeightsError as e:
            raise TransferError(f"MODEL.WEIGHTS: {e}") from None
        kind = classify_checkpoint(obj)
        if kind == "detectron2":
            return dict(obj)
        if kind == "unknown":
            keys = [str(k) for k in (obj.get("state_dict", obj) if isinstance(obj, Mapping) else {})]
            raise TransferError(
                f"MODEL.WEIGHTS={filename}: not a detectron2 checkpoint (no 'model' entry), not a package weights "
                f"file ('format': {FORMAT!r}), not a Lightning checkpoint of the classifier (keys 'model.*') and "
                f"not a ShuffleNetV1 state dict (keys 'conv1.*', 'stage2.*'); first keys: {keys[:5]}."
                + _foreign_hint(keys)
            )
        state_dict = dict(obj["state_dict"]) if kind in ("package", "lightning") else dict(obj)
        if kind == "lightning":
            others = sorted({k.split(".")[0] for k in state_dict if not k.startswith("model.")})
            state_dict = {k[len("model.") :]: v for k, v in state_dict.items() if k.startswith("model.")}
        else:
            others = []
        mapped, report = self._map_classification(state_dict, filename, kind, obj)
        if others:
            report["ignored_top_level"] = others
        self.transfer_report = report
        self._log_report(report)
        return {"model": mapped, "__author__": f"shufflenet ({kind})", "transfer_report": report}

    def _map_classification(
        self, state_dict: Dict[str, torch.Tensor], filename: str, kind: str, obj: Mapping
    ) -> "tuple[Dict[str, torch.Tensor], Dict[str, Any]]":
        model = _unwrap(self.model)
        key_map = classification_key_map(model)
        if not key_map:
            raise TransferError(
                f"MODEL.WEIGHTS={filename} is a ShuffleNet classification checkpoint, but the detector "
                f"({type(model).__name__}) has no ShuffleNet backbone to load it into"
            )
        own = model.state_dict()
        arch = obj.get("arch") if kind == "package" else None
        src_config = obj.get("config") if kind == "package" else None
        mapped: Dict[str, torch.Tensor] = {}
        ignored: List[str] = []
        unexpected: List[str] = []
        for key, value in state_dict.items():
            module = key.split(".", 1)[0]
            if module == "fc" or (module in _CLASSIFIER_MODULES and module not in key_map):
                ignored.append(key)  # the classifier, or a stage this detector does not use
                continue
            if module not in key_map:
                unexpected.append(key)
                continue
            target = key_map[module] + key[len(module) :]
            if target not in own:
                if key.endswith("num_batches_tracked"):
                    ignored.append(key)  # frozen BN keeps no step counter
                else:
                    unexpected.append(key)
                continue
            if tuple(own[target].shape) != tuple(value.shape):
                what = f"arch {arch!r}, config {src_config}" if (arch or src_config) else "its widths"
                raise TransferError(
                    f"MODEL.WEIGHTS={filename}: key '{key}' has shape {tuple(value.shape)} in the checkpoint "
                    f"but '{target}' has {tuple(own[target].shape)} in the detector. The checkpoint's network "
                    f"({what}) differs from MODEL.SHUFFLENET (NAME / GROUPS / WIDTH_MULT); set it to match."
                )
            mapped[target] = value
        prefixes = tuple(p + "." for p in key_map.values())
        missing = [k for k in own if k.startswith(prefixes) and k not in mapped]
        report = {
            "source": str(filename),
            "format": kind,
            "arch": arch,
            "loaded": len(mapped),
            "loaded_into": sorted(set(key_map.values())),
            "ignored": ignored,
            "missing": missing,
            "unexpected": unexpected,
        }
        if not mapped:
            raise TransferError(
                f"MODEL.WEIGHTS={filename}: no ShuffleNet weights could be mapped into the detector "
                f"(unexpected keys: {unexpected[:5]})"
            )
        return mapped, report

    def _log_report(self, report: Dict[str, Any]) -> None:
        logger.info(
            "Transfer from %s (%s): %d tensors loaded into %s; %d ignored (classifier / BN counters); "
            "%d missing; %d unexpected",
            report["source"],
            report["format"],
            report["loaded"],
            ", ".join(report["loaded_into"]),
            len(report["ignored"]),
            len(report["missing"]),
            len(report["unexpected"]),
        )
        if report["missing"]:
            logger.warning("Backbone keys not in the checkpoint (left as initialised): %s", report["missing"])
        if report["unexpected"]:
            logger.warning("Checkpoint keys that fit nothing in the detector: %s", report["unexpected"])


def load_detector_weights(model: nn.Module, weights: str, save_dir: str = "") -> Dict[str, Any]:
    """Load ``weights`` (any format above) into ``model``; returns ``load()``'s leftovers."""
    if not Path(weights).is_file():
        raise TransferError(f"MODEL.WEIGHTS={weights}: no such file")
    return ShuffleNetCheckpointer(model, save_dir=save_dir).load(weights, checkpointables=[])
