"""Transfer: load a classification checkpoint of this project into a ShuffleNet detector.

:class:`ShuffleNetCheckpointer` is detectron2's ``DetectionCheckpointer`` with one more file format,
through its public extension point ``_load_file`` (fvcore's documented hook for new formats).
``MODEL.WEIGHTS`` may then be

* a detectron2 checkpoint (``{"model": ...}``, e.g. ``model_final.pth``): loaded as detectron2 does;
* the package weights file ``{"format", "arch", "config", "state_dict", "meta"}`` written by
  ``shufflenet.save_weights`` (also what the public-checkpoint converters produce);
* a Lightning ``.ckpt`` of the classification integration (backbone under ``model.``);
* a plain ``ShuffleNetV1`` state dict (``conv1.*``, ``stage2.*`` ...);
* an original public checkpoint (mmpretrain ``.pth``, megvii ``.pth.tar``): converted on read;
* published ImageNet weights by name, ``shufflenet://<model>[/<weights>]`` (e.g.
  ``shufflenet://shufflenet_v1_x1_0_g3/IMAGENET1K_MMPRETRAIN``, as detectron2's ``detectron2://ImageNetPretrained/...``),
  or their public URL: downloaded once into torch.hub's cache, converted, and loaded from the converted file
  (:func:`weights_path` resolves them; any other URL is fetched by detectron2's PathManager as usual).

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
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from ..models.pretrained import resolve_weights_uri
from ..weights import WeightsError, WeightsFile, not_weights_message, read_checkpoint, read_weights
from .config import DetectionError
from .modeling import ShuffleNetBackbone, ShuffleNetROIHeads

__all__ = [
    "ShuffleNetCheckpointer",
    "classification_key_map",
    "load_detector_weights",
    "unwrap_parallel",
    "weights_path",
]

logger = logging.getLogger(__name__)

_CLASSIFIER_MODULES = ("conv1", "maxpool", "stage2", "stage3", "stage4")


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def classification_key_map(model: nn.Module) -> Dict[str, str]:
    """Classifier module name -> detector module path, e.g. ``{"stage4": "roi_heads.stage4", ...}``."""
    mapping: Dict[str, str] = {}
    for name, module in unwrap_parallel(model).named_modules():
        if isinstance(module, ShuffleNetBackbone):
            for child in ("conv1",) + tuple(module.stage_names):
                mapping[child] = f"{name}.{child}"
        elif isinstance(module, ShuffleNetROIHeads):
            mapping["stage4"] = f"{name}.stage4"
    return mapping


#: What a detectron2 / Caffe2 model-zoo ``.pkl`` may hold besides plain values: numpy arrays and ordered dicts.
_PICKLE_ARRAYS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 2 pickles store the bytes of an array
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ARRAYS:
            raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not a numpy array")
        return super().find_class(module, name)


def check_pickle_arrays(filename: str) -> None:
    """A ``.pkl`` weights file (detectron2 / Caffe2 model zoo) must hold only numpy arrays and plain values;
    detectron2 unpickles it with :func:`pickle.load`, which would run any code a hostile file carries, so it is
    read first with an unpickler that builds nothing else (one error line otherwise, the reader's message)."""
    try:
        with open(filename, "rb") as f:
            _ArraysOnly(f, encoding="latin1").load()
    except OSError as e:
        raise DetectionError(f"MODEL.WEIGHTS: {filename}: cannot be read ({e.strerror or e})") from None
    except Exception as e:
        raise DetectionError(
            "MODEL.WEIGHTS: "
            + not_weights_message(
                filename,
                e,
                what="a detectron2 .pkl weights file",
                expected="a .pkl weights file holds only numpy arrays and plain values (any other object is never "
                "loaded)",
            )
        ) from None


def weights_path(weights: str) -> str:
    """The file ``MODEL.WEIGHTS`` names, without a URL query (upstream detectron2 accepts
    ``model.pth?matching_heuristics=True``); published weights (``shufflenet://...`` or their URL) resolve to the
    local converted file, downloaded first if needed."""
    weights = resolve_weights_uri(weights)
    return urlparse(weights)._replace(query="").geturl() if "?" in weights else weights


def _is_detector_state_dict(keys: List[str]) -> bool:
    """A bare detectron2 model state dict (no ``{"model": ...}`` wrapper): detectron2 wraps it itself."""
    return (
        bool(keys)
        and not any(k.split(".", 1)[0] in _CLASSIFIER_MODULES + ("fc",) for k in keys)
        and any(k.startswith(("backbone.", "proposal_generator.", "roi_heads.")) for k in keys)
    )


class ShuffleNetCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that also reads this project's classification checkpoints.

    After a transfer load, :attr:`transfer_report` holds what happened (also logged, and returned by
    ``load()`` under ``"transfer_report"``).
    """

    transfer_report: Optional[Dict[str, Any]] = None

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """detectron2's ``load``, with published weights (``shufflenet://...``) resolved to their local file."""
        return super().load(resolve_weights_uri(path) if path else path, *args, **kwargs)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        """detectron2's formats go to ``DetectionCheckpointer._load_file`` (so upstream's URL query
        ``?matching_heuristics=True``, which its ``load`` parses before calling this, keeps working) once they are
        known to hold nothing that would run code (:func:`check_pickle_arrays` for a ``.pkl``, the project's
        reader for the rest); the project's classification files, read by :func:`shufflenet.weights.read_weights`,
        are mapped into the detector here."""
        if filename.endswith(".pkl"):
            check_pickle_arrays(filename)
            return super()._load_file(filename)
        if filename.endswith(".pyth"):
            try:
                read_checkpoint(filename)
            except WeightsError as e:
                raise DetectionError(f"MODEL.WEIGHTS: {e}") from None
            return super()._load_file(filename)
        try:
            wf = read_weights(filename, use="auto")
        except WeightsError as e:
            raise DetectionError(f"MODEL.WEIGHTS: {e}") from None
        if wf.kind == "detectron2" or (wf.kind == "state_dict" and _is_detector_state_dict(list(wf.state_dict))):
            del wf
            return super()._load_file(filename)
        mapped, report = self._map_classification(wf)
        self.transfer_report = report
        self._log_report(report)
        return {"model": mapped, "__author__": f"shufflenet ({wf.kind})", "transfer_report": report}

    def _map_classification(self, wf: WeightsFile) -> tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        state_dict, filename, kind = wf.state_dict, str(wf.path), wf.kind
        model = unwrap_parallel(self.model)
        key_map = classification_key_map(model)
        if not key_map:
            raise DetectionError(
                f"MODEL.WEIGHTS={filename} is a ShuffleNet classification checkpoint, but the detector "
                f"({type(model).__name__}) has no ShuffleNet backbone to load it into"
            )
        own = model.state_dict()
        arch = wf.arch
        src_config = wf.config
        backbones = [m for m in model.modules() if isinstance(m, ShuffleNetBackbone)]
        if src_config and backbones and bool(src_config.get("shuffle_inverse", False)) != backbones[0].shuffle_inverse:
            want = bool(src_config.get("shuffle_inverse", False))
            raise DetectionError(
                f"MODEL.WEIGHTS={filename}: the checkpoint's network uses shuffle_inverse={want} (megvii's channel "
                f"permutation) but the detector was built with MODEL.SHUFFLENET.SHUFFLE_INVERSE={not want}; "
                f"set MODEL.SHUFFLENET.SHUFFLE_INVERSE {want}"
            )
        mapped: Dict[str, torch.Tensor] = {}
        ignored: List[str] = []
        unexpected: List[str] = []
        for key, value in state_dict.items():
            module = key.split(".", 1)[0]
            if key == "input_shift.shift" and "conv1" in key_map:
                # A converted megvii checkpoint's input shift: the backbone adds it ahead of the stem, as
                # the classifier's InputShift does (exact, border included).
                target = key_map["conv1"].rsplit(".", 1)[0] + ".input_shift"
                if target in own and own[target].numel() == value.numel():
                    mapped[target] = value.reshape(own[target].shape)
                    continue
            if module == "fc" or (module in _CLASSIFIER_MODULES and module not in key_map):
                ignored.append(key)  # the classifier, or a stage this detector does not use
                continue
            if key.endswith("num_batches_tracked"):
                # BN's step counter: never transferred, on either install (detectron2 0.6's FrozenBatchNorm2d
                # has no such buffer, upstream's has one), so the report's counts do not depend on the install.
                ignored.append(key)
                continue
            if module not in key_map:
                unexpected.append(key)
                continue
            target = key_map[module] + key[len(module) :]
            if target not in own:
                unexpected.append(key)
                continue
            if tuple(own[target].shape) != tuple(value.shape):
                what = f"arch {arch!r}, config {src_config}" if (arch or src_config) else "its widths"
                raise DetectionError(
                    f"MODEL.WEIGHTS={filename}: key '{key}' has shape {tuple(value.shape)} in the checkpoint "
                    f"but '{target}' has {tuple(own[target].shape)} in the detector. The checkpoint's network "
                    f"({what}) differs from MODEL.SHUFFLENET (NAME / GROUPS / WIDTH_MULT); set it to match."
                )
            mapped[target] = value
        prefixes = tuple(p + "." for p in key_map.values())
        missing = [
            k for k in own if k.startswith(prefixes) and k not in mapped and not k.endswith("num_batches_tracked")
        ]
        shift = next((v for k, v in mapped.items() if k.endswith(".input_shift")), None)
        report = {
            "source": str(filename),
            "format": kind,
            "weights": wf.weights,
            "arch": arch,
            "input_shift": [round(float(v), 6) for v in shift.flatten()] if shift is not None else None,
            "loaded": len(mapped),
            "loaded_into": sorted(set(key_map.values())),
            "ignored": ignored,
            "missing": missing,
            "unexpected": unexpected,
        }
        if not mapped:
            raise DetectionError(
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
    weights = resolve_weights_uri(weights)
    if not Path(weights_path(weights)).is_file():
        raise DetectionError(f"MODEL.WEIGHTS={weights}: no such file")
    return ShuffleNetCheckpointer(model, save_dir=save_dir).load(weights, checkpointables=[])
