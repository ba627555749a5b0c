"""Mobile export: verified ``.ptl`` (lite interpreter), ``.pte`` (ExecuTorch), ONNX, ncnn and LiteRT files, int8,
Table 8.

    python mobile/export.py shufflenet_v1_x0_5_g3 --input-size 224 480x640 --out exported/
    python mobile/benchmark.py --quick

Floors inside the wing (each imports only the ones above it in this list): ``source`` (``MobileError``,
``load_model``) < ``images`` < ``verify`` (inputs, comparison) < ``rewrite`` (export-time equivalent
forms) < ``artifact`` (the one verify-and-write path) < ``ptl`` / ``pte`` / ``onnx_export`` / ``ncnn_export`` /
``quantize`` < ``tflite_export`` < ``detector`` < ``cli`` / ``benchmark``. The detector export uses the detection
integration's public builder; ExecuTorch, ONNX Runtime, ncnn and LiteRT are optional extras. The int8 report and
the emulated aarch64 check are developer tools in the repository's ``tools/``.
"""

from .images import load_images, parse_size, resolve_images
from .ptl import XnnpackUnavailableError, export_ptl, optimize, require_xnnpack, to_torchscript, xnnpack_available
from .rewrite import CameraInput, for_runtime
from .source import MobileError, ModelSource, load_model
from .verify import VerificationError, compare_outputs, make_inputs, verify_runtime

__all__ = [
    "CameraInput",
    "MobileError",
    "ModelSource",
    "VerificationError",
    "XnnpackUnavailableError",
    "compare_outputs",
    "export_ptl",
    "for_runtime",
    "load_images",
    "load_model",
    "make_inputs",
    "optimize",
    "parse_size",
    "require_xnnpack",
    "resolve_images",
    "to_torchscript",
    "verify_runtime",
    "xnnpack_available",
]
