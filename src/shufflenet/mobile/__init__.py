"""Mobile wing: verified TorchScript-lite (``.ptl``) and ExecuTorch (``.pte``) export, int8, Table-8 benchmark.

    python mobile/export.py shufflenet_v1_x0_5_g3 --input-size 224 480x640 --out exported/
    python mobile/benchmark.py --quick

Imports the ground floor only (``shufflenet.models`` / ``shufflenet.weights``); the detector export uses
the detection wing's public builder ``shufflenet.detection.build_detector``. ExecuTorch is optional.
"""

from .export import (
    VerificationError,
    XnnpackUnavailableError,
    compare_outputs,
    export_ptl,
    make_inputs,
    optimize,
    require_xnnpack,
    to_torchscript,
    verify_runtime,
    xnnpack_available,
)
from .images import default_image_dir, load_images, parse_size
from .source import MobileError, ModelSource, load_model

__all__ = [
    "MobileError",
    "ModelSource",
    "VerificationError",
    "XnnpackUnavailableError",
    "compare_outputs",
    "default_image_dir",
    "export_ptl",
    "load_images",
    "load_model",
    "make_inputs",
    "optimize",
    "parse_size",
    "require_xnnpack",
    "to_torchscript",
    "verify_runtime",
    "xnnpack_available",
]
