"""TorchScript -> ``optimize_for_mobile`` -> ``.ptl`` for the lite interpreter, verified before it is written.

Flow (:func:`export_ptl`): rewrite a ShuffleNet into the lite interpreter's fastest equivalent form
(:mod:`.rewrite`; the original model is the reference), script the eval-mode model (trace as a fallback for
models that do not script), run ``torch.utils.mobile_optimizer.optimize_for_mobile`` (freezing, conv+BN
folding, XNNPACK prepacking, conv/add + ReLU fusion), save for the lite interpreter into a temporary file,
optionally backport its bytecode, load it back with ``_load_for_lite_interpreter`` and compare its outputs
with the *eager original's* on random and real images at every requested size. Only a file that passes is
renamed into place, with a JSON sidecar beside it. A failure (or an interrupt) leaves no artifact and no
temporary file; a temporary file left by a killed earlier export is removed by the next one.
"""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..fileio import tmp_sibling
from .artifact import Staged, check_sizes, input_spec, output_shapes, reference_and_inputs, sidecar, verify
from .images import resolve_images
from .rewrite import CameraInput, for_runtime
from .source import MobileError, ModelSource
from .verify import DEFAULT_ATOL, DEFAULT_RTOL, VerifyInput

__all__ = [
    "XnnpackUnavailableError",
    "xnnpack_available",
    "require_xnnpack",
    "ChannelsLastInput",
    "to_torchscript",
    "optimize",
    "host_info",
    "lite_bytecode_version",
    "backport",
    "export_ptl",
]

warnings.filterwarnings("ignore", message=".*Lite Interpreter is deprecated.*")


class XnnpackUnavailableError(MobileError):
    """This torch build has no XNNPACK, which ``optimize_for_mobile`` needs."""


XNNPACK_FIX = (
    "this torch build has no XNNPACK, which torch.utils.mobile_optimizer.optimize_for_mobile needs "
    "(the x86-64 wheels dropped it from torch 2.13 on). Fix: install the pinned stack "
    "(pip install torch==2.12.0 torchvision==0.27.0, as in pyproject.toml), or export on an aarch64 "
    "machine whose torch wheel has XNNPACK, or use --format pte (ExecuTorch brings its own XNNPACK)."
)


def xnnpack_available() -> bool:
    """True when this torch was built with XNNPACK (checked without touching optimize_for_mobile)."""
    fn = getattr(torch._C, "_is_xnnpack_enabled", None)
    if fn is not None:
        try:
            return bool(fn())
        except Exception:  # pragma: no cover - defensive
            return False
    return "USE_XNNPACK" in torch.__config__.show()


def require_xnnpack() -> None:
    if not xnnpack_available():
        raise XnnpackUnavailableError(f"torch {torch.__version__}: {XNNPACK_FIX}")


class ChannelsLastInput(nn.Module):
    """Export-side wrapper: convert a 4-D input to channels_last (NHWC) before the wrapped model runs.

    XNNPACK computes in NHWC. With an NCHW input every prepacked conv converts to NHWC and back; with a
    channels_last input the activations stay NHWC end to end. A channels_last input passes through without
    a copy. The network is unchanged; callers may pass NCHW or NHWC tensors.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor):
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def to_torchscript(model: nn.Module, example: Tensor, method: str = "auto") -> Tuple[torch.jit.ScriptModule, str]:
    """Script ``model`` (``method='script'``), trace it (``'trace'``), or script with a trace fallback."""
    if method not in ("auto", "script", "trace"):
        raise MobileError(f"--method must be auto, script or trace, got {method!r}")
    model = model.eval()
    errors = []
    if method in ("auto", "script"):
        try:
            return torch.jit.script(model), "script"
        except Exception as e:  # TorchScript frontend errors come in several classes
            if method == "script":
                raise MobileError(
                    f"torch.jit.script failed for {type(model).__name__}: {str(e).splitlines()[0]}"
                ) from None
            errors.append(f"script: {str(e).splitlines()[0]}")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return torch.jit.trace(model, example, check_trace=False, strict=False), "trace"
    except Exception as e:
        errors.append(f"trace: {str(e).splitlines()[0]}")
        raise MobileError(f"{type(model).__name__} cannot be converted to TorchScript ({'; '.join(errors)})") from None


def optimize(scripted: torch.jit.ScriptModule, backend: str = "CPU") -> torch.jit.ScriptModule:
    """``optimize_for_mobile`` with a clear message instead of a C++ error when XNNPACK is missing."""
    from torch.utils.mobile_optimizer import optimize_for_mobile

    require_xnnpack()
    try:
        return optimize_for_mobile(scripted, backend=backend)
    except RuntimeError as e:
        if "XNNPACK" in str(e) or "xnnpack" in str(e):
            raise XnnpackUnavailableError(
                f"optimize_for_mobile: {XNNPACK_FIX} (torch said: {str(e).splitlines()[0]})"
            ) from None
        raise


def host_info(threads: Optional[int] = None) -> Dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "logical_cpus": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "xnnpack": xnnpack_available(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def lite_bytecode_version(path: os.PathLike) -> int:
    from torch.jit.mobile import _get_model_bytecode_version

    return int(_get_model_bytecode_version(str(path)))


def backport(src: os.PathLike, dst: os.PathLike, version: int) -> None:
    """Rewrite a ``.ptl`` at an older bytecode version (for older on-device runtimes)."""
    from torch.jit.mobile import _backport_for_mobile

    current = lite_bytecode_version(src)
    if version > current:
        raise MobileError(f"--bytecode-version {version} is newer than this torch writes ({current})")
    if version == current:
        Path(dst).write_bytes(Path(src).read_bytes())
        return
    if not _backport_for_mobile(str(src), str(dst), int(version)):
        raise MobileError(f"torch could not backport the file from bytecode version {current} to {version}")


def export_ptl(
    source: ModelSource,
    out_dir: os.PathLike,
    sizes: Sequence[Tuple[int, int]] = ((224, 224),),
    method: str = "auto",
    images: Any = "auto",
    n_real: int = 2,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    bytecode_version: Optional[int] = None,
    basename: Optional[str] = None,
    quantized_engine: Optional[str] = None,
    channels_last: bool = True,
    rewrite: bool = True,
    camera: bool = False,
    scripted: Optional[Tuple[torch.jit.ScriptModule, str]] = None,
    inputs: Optional[Sequence[VerifyInput]] = None,
    log: Callable[[str], None] = print,
) -> Tuple[Path, Dict[str, Any]]:
    """Export ``source.model`` to ``out_dir/<basename>.ptl`` + ``.json``; verified first, atomic.

    ``images``: ``"auto"`` (the package's sample photos), ``None``/``"none"`` (random inputs only), a folder,
    or a list of files. ``rewrite``: convert the runtime's fastest equivalent form of a ShuffleNet
    (:mod:`.rewrite`), still verified against ``source.model``. ``camera``: the file takes ``uint8``
    ``N x H x W x 3`` RGB frames (normalization folded into the stem). ``scripted`` (module, method) skips
    the TorchScript step (a traced detector); ``inputs`` replaces the default verification inputs.
    Raises :class:`~.verify.VerificationError` (nothing written) when the lite-interpreter outputs differ
    from eager's beyond ``atol + rtol * max|eager|``.
    """
    require_xnnpack()
    sizes = check_sizes(sizes)
    files = images if isinstance(images, (list, tuple)) else resolve_images(images)
    basename = basename or source.name.replace("/", "_")
    reference, default_inputs = reference_and_inputs(source, sizes, files, n_real, camera)
    inputs = list(inputs) if inputs is not None else default_inputs
    prev_engine = torch.backends.quantized.engine
    if quantized_engine:
        torch.backends.quantized.engine = quantized_engine
    try:
        with Staged(out_dir) as staged:
            rewritten = False
            if scripted is None:
                form, rewritten = _ptl_form(source, rewrite and quantized_engine is None, camera, channels_last)
                log(f"[export] {source.name}: TorchScript ({method}) of {type(form).__name__} ...")
                scripted = to_torchscript(form, inputs[0].tensor, method)
            module, used = scripted
            tmp = staged.tmp(f"{basename}.ptl")
            written_version = _write_lite(module, tmp, bytecode_version, log)
            lite = _load_lite(tmp)
            log(f"[export] verify against eager on {len(inputs)} inputs at {', '.join(f'{h}x{w}' for h, w in sizes)}")
            rows = verify(reference, lite, inputs, atol, rtol, "lite interpreter", log)
            ops = _operators(lite)
            extra = (
                {}
                if source.task == "detection"
                else {"memory_format": "channels_last" if channels_last or camera else "contiguous"}
            )
            shape = "3 x H x W (one image)" if source.task == "detection" else "N x 3 x H x W"
            side = sidecar(
                source,
                "pytorch lite interpreter (torch.jit.mobile._load_for_lite_interpreter / LiteModuleLoader)",
                input_spec(source, sizes, "N x H x W x 3 (camera frame, RGB)" if camera else shape, camera),
                output_shapes(reference, inputs[0].tensor),
                rows,
                atol,
                rtol,
                files,
                rewritten,
                file=f"{basename}.ptl",
                **{k: v for k, v in staged.entry(f"{basename}.ptl").items() if k != "file"},
                bytecode_version=lite_bytecode_version(tmp),
                bytecode_version_written=written_version,
                operators=ops,
                torchscript_method=used,
                optimize_for_mobile=True,
                memory_format=extra.get("memory_format", "contiguous"),
                quantized_engine=quantized_engine,
            )
            final = staged.commit(side, f"{basename}.json", log)[0]
    finally:
        torch.backends.quantized.engine = prev_engine
    log(f"[export] {final.name}: bytecode v{side['bytecode_version']}, {len(ops)} operators")
    return final, side


def _ptl_form(source: ModelSource, rewrite: bool, camera: bool, channels_last: bool) -> Tuple[nn.Module, bool]:
    """What gets scripted: the runtime's equivalent form (``rewrite``), behind a camera or NHWC input."""
    model = source.model.eval()
    net = for_runtime(model, "ptl") if rewrite else model
    if camera:
        return CameraInput(net, source.mean, source.std), net is not model
    return (ChannelsLastInput(net) if channels_last else net), net is not model


def _write_lite(module: torch.jit.ScriptModule, tmp: Path, bytecode_version: Optional[int], log) -> int:
    """``optimize_for_mobile`` and save for the lite interpreter into ``tmp`` (backported if asked); the
    bytecode version torch wrote."""
    log("[export] optimize_for_mobile (freeze, fold BN, XNNPACK prepack, fuse ReLU) ...")
    optimize(module)._save_for_lite_interpreter(str(tmp))
    written = lite_bytecode_version(tmp)
    if bytecode_version is not None:
        log(f"[export] backport bytecode {written} -> {bytecode_version}")
        tmp2 = tmp_sibling(tmp.with_name(tmp.name + ".backport"))
        try:
            backport(tmp, tmp2, bytecode_version)
            os.replace(tmp2, tmp)
        finally:
            if tmp2.exists():
                tmp2.unlink()
    return written


def _load_lite(path: Path):
    from torch.jit.mobile import _load_for_lite_interpreter

    return _load_for_lite_interpreter(str(path))


def _operators(lite) -> list:
    from torch.jit.mobile import _export_operator_list

    return sorted(set(_export_operator_list(lite)))
