"""COCO detection with detectron2: Faster R-CNN on the package's ShuffleNet v1 (paper Sec. 4.4).

Importing this package first applies :mod:`.compat` (detectron2 0.6's Python code without its C++
extension, Pillow >= 10, NumPy 2, CPU ``launch``), then registers in detectron2's registries:

* ``BACKBONE_REGISTRY``: ``build_shufflenet_c4_backbone`` (stem + stages 2-3, stride 16) and
  ``build_shufflenet_fpn_backbone`` (stages 2-4 + FPN);
* ``ROI_HEADS_REGISTRY``: ``ShuffleNetROIHeads`` (RoIAlign -> the network's own ``stage4`` -> box head).

Public API (the other wings may use only these)::

    from shufflenet.detection import build_detector
    model, cfg = build_detector("coco_shufflenet1x_300", opts=["MODEL.DEVICE", "cpu"], weights="model.pth")

    from shufflenet.detection.export import traceable_detector, trace_detector
"""

from . import compat as _compat

_compat.apply()

from .api import build_detector  # noqa: E402
from .compat import HAS_COMPILED_OPS, MissingCompiledOpError  # noqa: E402
from .config import ConfigNotFoundError, DetectionError, get_detection_cfg, list_configs  # noqa: E402
from .data import DatasetError, register_coco  # noqa: E402

__all__ = [
    "ConfigNotFoundError",
    "DatasetError",
    "DetectionError",
    "HAS_COMPILED_OPS",
    "MissingCompiledOpError",
    "build_detector",
    "get_detection_cfg",
    "list_configs",
    "register_coco",
]
