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

import datetime as _dt
import os
import platform
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..fileio import sha256_file, tmp_sibling, write_json_atomic
from .images import resolve_images
from .rewrite import CameraInput, for_runtime
from .source import MobileError, ModelSource
from .verify import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    VerifyInput,
    flatten_outputs,
    frame_reference,
    images_note,
    make_frame_inputs,
    make_inputs,
    verify_runtime,
)

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
    from torch.jit.mobile import _export_operator_list, _load_for_lite_interpreter

    require_xnnpack()
    sizes = [tuple(s) for s in sizes]
    if not sizes:
        raise MobileError("at least one --input-size is needed")
    files = images if isinstance(images, (list, tuple)) else resolve_images(images)
    basename = basename or source.name.replace("/", "_")
    out_dir = Path(out_dir)
    final = out_dir / f"{basename}.ptl"
    side = out_dir / f"{basename}.json"
    model = source.model.eval()
    if inputs is None:
        inputs = (
            make_frame_inputs(sizes, files, n_real)
            if camera
            else make_inputs(sizes, files, n_real, mean=source.mean, std=source.std)
        )
    reference = frame_reference(model, source.mean, source.std) if camera else model

    prev_engine = torch.backends.quantized.engine
    if quantized_engine:
        torch.backends.quantized.engine = quantized_engine
    tmp = tmp_sibling(final)
    tmp2: Optional[Path] = None
    rewritten = False
    try:
        if scripted is None:
            net = for_runtime(model, "ptl") if rewrite and quantized_engine is None else model
            rewritten = net is not model
            if camera:
                form: nn.Module = CameraInput(net, source.mean, source.std)
            else:
                form = ChannelsLastInput(net) if channels_last else net
            log(f"[export] {source.name}: TorchScript ({method}) of {type(form).__name__} ...")
            scripted, used = to_torchscript(form, inputs[0].tensor, method)
        else:
            scripted, used = scripted
        log("[export] optimize_for_mobile (freeze, fold BN, XNNPACK prepack, fuse ReLU) ...")
        optimized = optimize(scripted)
        optimized._save_for_lite_interpreter(str(tmp))
        written_version = lite_bytecode_version(tmp)
        if bytecode_version is not None:
            log(f"[export] backport bytecode {written_version} -> {bytecode_version}")
            tmp2 = tmp_sibling(final)
            backport(tmp, tmp2, bytecode_version)
            os.replace(tmp2, tmp)
        lite = _load_for_lite_interpreter(str(tmp))
        log(f"[export] verify against eager on {len(inputs)} inputs at {', '.join(f'{h}x{w}' for h, w in sizes)}")
        rows = verify_runtime(reference, lite, inputs, atol, rtol)
        for r in rows:
            log(
                f"[verify] {r['size'][0]}x{r['size'][1]} {r['input']:<18} max|diff| {r['max_abs_diff']:.2e} "
                f"<= bound {r['bound']:.2e}  ok"
            )
        ops = sorted(set(_export_operator_list(lite)))
        with torch.no_grad():
            outputs = [list(t.shape) for t in flatten_outputs(reference(inputs[0].tensor))]
        input_desc = {
            "sizes_hw_verified": [list(s) for s in sizes],
            "shape": "3 x H x W (one image)" if source.task == "detection" else "N x 3 x H x W",
            "dtype": "float32",
            "normalization": source.normalization,
        }
        if camera:
            input_desc.update(
                shape="N x H x W x 3 (camera frame, RGB)",
                dtype="uint8",
                normalization={
                    "color": "RGB",
                    "scale": "0-255 uint8 pixels; mean/std folded into the stem",
                    "mean": list(source.mean),
                    "std": list(source.std),
                },
            )
        sidecar = {
            "format": "shufflenet-mobile/1",
            "file": final.name,
            "runtime": "pytorch lite interpreter (torch.jit.mobile._load_for_lite_interpreter / LiteModuleLoader)",
            "model": source.name,
            "task": source.task,
            "source": source.origin,
            "input": input_desc,
            "outputs": outputs,
            "sha256": sha256_file(tmp),
            "size_bytes": tmp.stat().st_size,
            "bytecode_version": lite_bytecode_version(tmp),
            "bytecode_version_written": written_version,
            "operators": ops,
            "torchscript_method": used,
            "optimize_for_mobile": True,
            "rewrite": "runtime-specific equivalent form (shufflenet.mobile.rewrite)" if rewritten else None,
            "memory_format": "channels_last"
            if (channels_last or camera) and source.task != "detection"
            else "contiguous",
            "quantized_engine": quantized_engine,
            "verification": {"atol": atol, "rtol": rtol, **images_note(files), "checks": rows},
            "exported_with": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "arch": platform.machine(),
            },
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **({"extra": source.extra} if source.extra else {}),
        }
        os.replace(tmp, final)
        write_json_atomic(sidecar, side)
    finally:
        torch.backends.quantized.engine = prev_engine
        for t in (tmp, tmp2):
            if t is not None and t.exists():
                t.unlink()
    log(
        f"[export] wrote {final} ({sidecar['size_bytes'] / 1e6:.2f} MB, bytecode v{sidecar['bytecode_version']}, "
        f"{len(ops)} ops) + {side.name}"
    )
    return final, sidecar
