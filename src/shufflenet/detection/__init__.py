"""COCO detection with detectron2: Faster R-CNN on the package's ShuffleNet v1 (paper Sec. 4.4).

Importing this package changes nothing in detectron2 (or Pillow, NumPy, torch): it registers the ShuffleNet
builders in detectron2's registries, detectron2's own extension point, and that is all. What detectron2 0.6's
Python copy needs on today's stack is patched into it when ``scripts/install_detectron2.py`` installs it
(see :mod:`.compat`); with an unpatched 0.6 copy the import fails with an ``ImportError`` that says so.
Registered:

* ``BACKBONE_REGISTRY``: ``build_shufflenet_c4_backbone`` (stem + stages 2-3, stride 16) and
  ``build_shufflenet_fpn_backbone`` (stages 2-4 + FPN);
* ``ROI_HEADS_REGISTRY``: ``ShuffleNetROIHeads`` (RoIAlign -> the network's own ``stage4`` -> box head).

Public API (the other integrations may use only these)::

    from shufflenet.detection import build_detector
    model, cfg = build_detector("coco_shufflenet1x_300", opts=["MODEL.DEVICE", "cpu"], weights="model.pth")

    from shufflenet.detection.export import traceable_detector, trace_detector
"""

from .compat import HAS_COMPILED_OPS, unpatched_reason

try:
    from .api import build_detector
    from .config import ConfigNotFoundError, DetectionError, get_detection_cfg, list_configs
    from .data import DatasetError, register_coco
except ImportError as e:
    reason = unpatched_reason()
    if reason:
        raise ImportError(f"{e}; {reason}") from e
    raise

__all__ = [
    "ConfigNotFoundError",
    "DatasetError",
    "DetectionError",
    "HAS_COMPILED_OPS",
    "build_detector",
    "get_detection_cfg",
    "list_configs",
    "register_coco",
]
