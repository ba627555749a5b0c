"""TorchScript -> ``optimize_for_mobile`` -> ``.ptl`` for the lite interpreter (deprecated upstream; ExecuTorch's
``.pte`` is its successor). Script the eval-mode model in its :mod:`.rewrite` form (trace as a fallback),
``optimize_for_mobile``, save for the lite interpreter, optionally backport the bytecode, load it back and
verify it against the *eager original*; a temporary file left by a killed earlier export is removed.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from ..fileio import tmp_sibling
from .artifact import Staged, filtered_stderr
from .rewrite import CameraInput, for_runtime
from .runtime import ExportSpec, Job, Runtime, register
from .source import MobileError, ModelSource, RuntimeUnavailableError

__all__ = ["PtlRuntime", "DEPRECATION", "xnnpack_available", "require_xnnpack", "ChannelsLastInput", "to_torchscript"]
__all__ += ["optimize", "lite_bytecode_version", "backport"]

#: What a ``.ptl`` export says once: the truth about the format, from upstream.
DEPRECATION = (
    "[export] note: PyTorch Mobile's lite interpreter (.ptl) is deprecated upstream; ExecuTorch (--format pte) "
    "is its successor and the format to choose for new apps"
)

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
        raise RuntimeUnavailableError(f"torch {torch.__version__}: {XNNPACK_FIX}")


@contextlib.contextmanager
def _lite_notice_off() -> Iterator[None]:
    """torch's own "Lite Interpreter is deprecated" warning, inside the save/load calls only (said once by
    :data:`DEPRECATION` instead)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Lite Interpreter is deprecated.*")
        yield


#: torch's notice, on every call of an int8 model, that the shortcut and branch of a stride-2 unit enter
#: ``quantized::cat`` with different scales (it requantizes them): the verification measures what that costs.
CAT_NOTICE = "All inputs of this cat operator must share the same quantization parameters"


@contextlib.contextmanager
def _quantized_cat_notice_off() -> Iterator[None]:
    with warnings.catch_warnings(), filtered_stderr([rf"TensorShape\.cpp:\d+\] Warning: {CAT_NOTICE}"]):
        warnings.filterwarnings("ignore", message=f".*{CAT_NOTICE}.*")
        yield


class ChannelsLastInput(nn.Module):
    """A 4-D input converted to channels_last before the model: XNNPACK computes in NHWC, so the
    activations stay NHWC end to end (a channels_last input passes without a copy)."""

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
            raise RuntimeUnavailableError(
                f"optimize_for_mobile: {XNNPACK_FIX} (torch said: {str(e).splitlines()[0]})"
            ) from None
        raise


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


class PtlRuntime(Runtime):
    name = "ptl"
    title = "pytorch lite interpreter (torch.jit.mobile._load_for_lite_interpreter / LiteModuleLoader)"
    label = "lite interpreter"
    int8 = "FX graph mode, qnnpack"
    int8_reference = "FX int8 reference"
    detector = True
    options = ("bytecode_version",)

    summary = "lite interpreter, deprecated upstream"

    def missing(self, spec: Optional[ExportSpec] = None) -> Optional[str]:
        return None if xnnpack_available() else f"torch {torch.__version__}: {XNNPACK_FIX}"

    def prepare_source(self, source: ModelSource, spec: ExportSpec) -> ModelSource:
        """int8: the FX-converted module (QNNPACK) is what the file must reproduce."""
        if not spec.int8:
            return source
        from .quantize import quantize_fx_int8, resolve_calib_dir

        c = spec.int8
        return quantize_fx_int8(source, resolve_calib_dir(c.images), c.count, c.size or tuple(spec.sizes[0]))

    def write(self, job: Job, staged: Staged, work: Path) -> Tuple[Path, Dict[str, Any]]:
        with _quantized_cat_notice_off():  # int8: what it costs is measured by the verification, to the bound
            return self._write(job, staged)

    def _write(self, job: Job, staged: Staged) -> Tuple[Path, Dict[str, Any]]:
        spec, source, log = job.spec, job.source, job.log
        log(DEPRECATION)
        engine = "qnnpack" if spec.int8 else None
        detection = source.task == "detection"
        channels_last = spec.memory_format != "contiguous" and not detection
        prev_engine = torch.backends.quantized.engine
        if engine:
            torch.backends.quantized.engine = engine
        try:
            rewritten = False
            if job.form is not None:  # already TorchScript (the detector's trace)
                module, used = job.form, "trace"
            else:
                form, rewritten = _ptl_form(source, spec.rewrite and engine is None, spec.camera, channels_last)
                log(f"[export] {source.name}: TorchScript ({spec.method}) of {type(form).__name__} ...")
                module, used = to_torchscript(form, job.inputs[0].tensor, spec.method)
            name = f"{job.stem}.ptl"
            tmp = staged.tmp(name)
            written_version = _write_lite(module, tmp, spec.bytecode_version, log)
            lite = _load_lite(tmp)
            tags = ", ".join(f"{h}x{w}" for h, w in job.sizes)
            log(f"[export] verify against eager on {len(job.inputs)} inputs at {tags}")
            rows = job.verify(lite, self.label)
            ops = _operators(lite)
            memory_format = "channels_last" if (channels_last or spec.camera) and not detection else "contiguous"
            shape = "3 x H x W (one image)" if detection else "N x 3 x H x W"
            shape = "N x H x W x 3 (camera frame, RGB)" if spec.camera else shape
            side = job.sidecar(
                self,
                job.input(shape),
                job.outputs(),
                rows,
                rewritten,
                **staged.entry(name),
                bytecode_version=lite_bytecode_version(tmp),
                bytecode_version_written=written_version,
                operators=ops,
                torchscript_method=used,
                optimize_for_mobile=True,
                memory_format=memory_format,
                quantized_engine=engine,
            )
        finally:
            torch.backends.quantized.engine = prev_engine
        log(f"[export] {name}: bytecode v{side['bytecode_version']}, {len(ops)} operators")
        return staged.out_dir / name, side

    def load(self, files: Any, sidecar: Dict[str, Any], threads: Optional[int] = 1) -> Callable[[Tensor], Any]:
        m = _load_lite(Path(files))

        def run(x: Tensor) -> Any:
            with torch.no_grad():
                return m(x)

        return run

    def kernels(self) -> Dict[str, Any]:
        import torch.backends.xnnpack

        return {
            "kernels": "XNNPACK (prepacked conv/linear) + ATen for the other ops",
            "xnnpack_enabled": bool(torch.backends.xnnpack.enabled),
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "xnnpack_isa": "not reported",
        }


register(PtlRuntime())


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
    with _lite_notice_off():
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

    with _lite_notice_off():
        return _load_for_lite_interpreter(str(path))


def _operators(lite) -> list:
    from torch.jit.mobile import _export_operator_list

    return sorted(set(_export_operator_list(lite)))
