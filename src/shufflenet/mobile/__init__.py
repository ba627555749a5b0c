"""Mobile export: verified ``.ptl`` (lite interpreter), ``.pte`` (ExecuTorch), ONNX, ncnn and LiteRT files, int8,
Table 8 (``mobile/export.py``, ``mobile/benchmark.py``).

Floors (each imports only those above it): ``source`` < ``images`` < ``verify`` < ``rewrite`` < ``artifact`` <
``runtime`` (the :class:`~.runtime.Runtime` interface, :class:`ExportSpec`, the registry, :func:`export`) <
``quantize`` < one module per runtime < ``host`` < ``detector`` < ``cli`` / ``benchmark`` / ``report``.
PyTorch Mobile's lite interpreter (``.ptl``) is deprecated upstream; ExecuTorch (``.pte``) is its successor and
the format to choose for new apps.
"""

from .images import load_images, parse_size, resolve_images
from .rewrite import CameraInput, for_runtime
from .runtime import Calibration, Exported, ExportSpec, Runtime, export, get, register, runtimes
from .source import MobileError, ModelSource, RuntimeUnavailableError, load_model
from .verify import VerificationError, compare_outputs, make_inputs, verify_runtime

__all__ = ["Calibration", "CameraInput", "ExportSpec", "Exported", "MobileError", "ModelSource", "Runtime"]
__all__ += ["RuntimeUnavailableError", "VerificationError", "compare_outputs", "export", "for_runtime", "get"]
__all__ += ["load_images", "load_model", "make_inputs", "parse_size", "register", "resolve_images", "runtimes"]
__all__ += ["verify_runtime"]
