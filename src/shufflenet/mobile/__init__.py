"""Mobile export: verified ``.ptl`` (lite interpreter), ``.pte`` (ExecuTorch), ONNX, ncnn and LiteRT files, int8,
Table 8.

    python mobile/export.py shufflenet_v1_x0_5_g3 --input-size 224 480x640 --out exported/
    python mobile/benchmark.py --quick

Floors inside the wing (each imports only the ones above it in this list): ``source`` (the errors,
``load_model``) < ``images`` < ``verify`` (inputs, comparison) < ``rewrite`` (export-time equivalent forms) <
``artifact`` (staged write, sidecar) < ``runtime`` (the :class:`~.runtime.Runtime` interface, :class:`ExportSpec`,
the registry and the one :func:`export` path) < ``quantize`` < one module per runtime (``ptl``, ``pte``,
``onnx_export``, ``ncnn_export``, ``tflite_export``) < ``host`` < ``detector`` < ``cli`` / ``benchmark`` /
``report``. PyTorch Mobile's lite interpreter (``.ptl``) is deprecated upstream; ExecuTorch
(``.pte``) is its successor and the format to choose for new apps. ExecuTorch, ONNX Runtime, ncnn and LiteRT are
optional extras; the detector export uses the detection integration's public builder.
"""

from .images import load_images, parse_size, resolve_images
from .rewrite import CameraInput, for_runtime
from .runtime import Calibration, Exported, ExportSpec, Runtime, export, get, register, runtimes
from .source import MobileError, ModelSource, RuntimeUnavailableError, load_model
from .verify import VerificationError, compare_outputs, make_inputs, verify_runtime

__all__ = [
    "Calibration",
    "CameraInput",
    "ExportSpec",
    "Exported",
    "MobileError",
    "ModelSource",
    "Runtime",
    "RuntimeUnavailableError",
    "VerificationError",
    "compare_outputs",
    "export",
    "for_runtime",
    "get",
    "load_images",
    "load_model",
    "make_inputs",
    "parse_size",
    "register",
    "resolve_images",
    "runtimes",
    "verify_runtime",
]
