"""TorchScript -> ``optimize_for_mobile`` -> ``.ptl`` for the lite interpreter, verified before it is written.

    python mobile/export.py shufflenet_v1_x0_5_g3 --input-size 224 480x640 --out exported/

Flow (:func:`export_ptl`): script the eval-mode model (``--method trace`` or automatic fallback for models
that do not script), run ``torch.utils.mobile_optimizer.optimize_for_mobile`` (freezing, conv+BN folding,
XNNPACK prepacking, conv/add + ReLU fusion), save for the lite interpreter into a temporary file, optionally
backport its bytecode (``--bytecode-version``), load it back with ``_load_for_lite_interpreter`` and compare
its outputs with eager's on random and real images at every requested size. Only a file that passes is
renamed into place, with a JSON sidecar beside it (model, input sizes, normalization, sha256, the operator
list the runtime must provide, verification numbers). A failure leaves no artifact and says by how much the
outputs differed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..fileio import tmp_sibling, write_json_atomic
from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .images import default_image_dir, list_images, load_images, parse_size
from .source import MobileError, ModelSource, load_model

__all__ = [
    "VerificationError",
    "XnnpackUnavailableError",
    "xnnpack_available",
    "require_xnnpack",
    "ChannelsLastInput",
    "to_torchscript",
    "optimize",
    "make_inputs",
    "compare_outputs",
    "verify_runtime",
    "export_ptl",
    "sha256_file",
    "main",
]

DEFAULT_ATOL = 1e-4
#: Relative part of the bound, scaled by the largest |output| of eager (large logits of trained models).
DEFAULT_RTOL = 1e-5
#: int8 exports are compared with their own quantized reference (FX-converted module / PT2E-converted
#: module), not with fp32: kernels may round an int8 value differently, so the bound allows a few output
#: quantization steps (an 8-bit step is 1/255 of the output range, about 0.8% of max|output|; 0.05 is about
#: 6 steps, measured worst case 2.6% for PT2E/XNNPACK on out-of-distribution random input).
INT8_ATOL = 1e-3
INT8_RTOL = 0.05

warnings.filterwarnings("ignore", message=".*Lite Interpreter is deprecated.*")


class VerificationError(MobileError):
    """The exported model's outputs differ from eager's by more than the bound (nothing was written)."""


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


# --- TorchScript -------------------------------------------------------------------------------------


class ChannelsLastInput(nn.Module):
    """Export-side wrapper: convert a 4-D input to channels_last (NHWC) before the wrapped model runs.

    XNNPACK computes in NHWC. With an NCHW input every prepacked conv converts to NHWC and back; with a
    channels_last input the activations stay NHWC end to end (``channel_shuffle``, pooling, ``cat`` and
    the adds all keep the layout), which halves ShuffleNet's latency through the lite interpreter
    (docs/mobile.md). The network is unchanged; callers may pass NCHW or NHWC tensors.
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
                raise MobileError(f"torch.jit.script failed for {type(model).__name__}: {str(e).splitlines()[0]}") from None
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
            raise XnnpackUnavailableError(f"optimize_for_mobile: {XNNPACK_FIX} (torch said: {str(e).splitlines()[0]})") from None
        raise


# --- verification ------------------------------------------------------------------------------------


@dataclass
class VerifyInput:
    label: str  # "random" or "real (2 images from ...)"
    size: Tuple[int, int]
    tensor: Tensor


def make_inputs(
    sizes: Sequence[Tuple[int, int]],
    image_dir: Optional[os.PathLike] = None,
    n_real: int = 2,
    seed: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> List[VerifyInput]:
    """One random batch and (when a folder of real images is known) one batch of real photos per size."""
    gen = torch.Generator().manual_seed(seed)
    files = list_images(image_dir, limit=n_real) if (image_dir is not None and n_real > 0) else []
    out = []
    for size in sizes:
        out.append(VerifyInput("random", size, torch.randn(1, 3, *size, generator=gen)))
        if files:
            out.append(VerifyInput(f"real ({len(files)} images)", size, load_images(files, size, mean, std)))
    return out


def flatten_outputs(out: Any) -> List[Tensor]:
    """Tensors of a (possibly nested) tuple/list/dict output, in a stable order."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in flatten_outputs(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    return []


def compare_outputs(ref: Any, got: Any, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> Dict[str, Any]:
    """Max |ref - got| against ``atol + rtol * max|ref|`` over all output tensors."""
    r, g = flatten_outputs(ref), flatten_outputs(got)
    if len(r) != len(g) or any(a.shape != b.shape for a, b in zip(r, g)):
        return {
            "ok": False,
            "max_abs_diff": float("inf"),
            "bound": 0.0,
            "max_abs_ref": 0.0,
            "why": f"output structure differs: eager {[tuple(a.shape) for a in r]} vs exported {[tuple(b.shape) for b in g]}",
        }
    max_ref = max((a.detach().float().abs().max().item() for a in r if a.numel()), default=0.0)
    diff = max(((a.detach().float() - b.detach().float()).abs().max().item() for a, b in zip(r, g) if a.numel()), default=0.0)
    bound = atol + rtol * max_ref
    ok = diff <= bound and diff == diff  # NaN fails
    return {"ok": bool(ok), "max_abs_diff": diff, "bound": bound, "max_abs_ref": max_ref}


def verify_runtime(
    eager: Callable[[Tensor], Any],
    exported: Callable[[Tensor], Any],
    inputs: Sequence[VerifyInput],
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    runtime: str = "lite interpreter",
) -> List[Dict[str, Any]]:
    """Compare ``exported`` with ``eager`` on every input; raise :class:`VerificationError` on the first miss."""
    rows = []
    for inp in inputs:
        with torch.no_grad():
            try:
                ref = eager(inp.tensor.clone())
            except RuntimeError as e:
                raise MobileError(f"the eager model failed on the {inp.label} input at {inp.size[0]}x{inp.size[1]}: "
                                  f"{str(e).splitlines()[0]}; no file was written") from None
            try:
                got = exported(inp.tensor.clone())
            except RuntimeError as e:
                raise VerificationError(f"the {runtime} failed on the {inp.label} input at {inp.size[0]}x{inp.size[1]}: "
                                        f"{str(e).splitlines()[0]}; no file was written") from None
        res = compare_outputs(ref, got, atol, rtol)
        row = {"input": inp.label, "size": list(inp.size), "batch": int(inp.tensor.shape[0]), **res}
        rows.append(row)
        if not res["ok"]:
            why = res.get("why") or (
                f"max |eager - exported| = {res['max_abs_diff']:.3g} exceeds the bound {res['bound']:.3g} "
                f"(atol {atol:g} + rtol {rtol:g} x max|eager| {res['max_abs_ref']:.3g})"
            )
            raise VerificationError(
                f"verification failed on {inp.label} input at {inp.size[0]}x{inp.size[1]} through the {runtime}: "
                f"{why}; no file was written"
            )
    return rows


# --- files -------------------------------------------------------------------------------------------


def sha256_file(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    image_dir: Optional[os.PathLike] = "auto",
    n_real: int = 2,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    bytecode_version: Optional[int] = None,
    basename: Optional[str] = None,
    quantized_engine: Optional[str] = None,
    channels_last: bool = True,
    scripted: Optional[Tuple[torch.jit.ScriptModule, str]] = None,
    inputs: Optional[Sequence["VerifyInput"]] = None,
    log: Callable[[str], None] = print,
) -> Tuple[Path, Dict[str, Any]]:
    """Export ``source.model`` to ``out_dir/<basename>.ptl`` + ``.json``; verified first, atomic.

    ``scripted`` (module, method) skips the TorchScript step (a traced detector); ``inputs`` replaces the
    default random + real verification inputs. Returns the ``.ptl`` path and the sidecar dict. Raises :class:`VerificationError` (nothing written)
    when the lite-interpreter outputs differ from eager's beyond ``atol + rtol * max|eager|``.
    """
    from torch.jit.mobile import _export_operator_list, _load_for_lite_interpreter

    require_xnnpack()
    sizes = [tuple(s) for s in sizes]
    if not sizes:
        raise MobileError("at least one --input-size is needed")
    basename = basename or source.name.replace("/", "_")
    out_dir = Path(out_dir)
    final = out_dir / f"{basename}.ptl"
    side = out_dir / f"{basename}.json"
    if image_dir == "auto":
        image_dir = default_image_dir()
    model = source.model.eval()
    example = torch.randn(1, 3, *sizes[0])

    prev_engine = torch.backends.quantized.engine
    if quantized_engine:
        torch.backends.quantized.engine = quantized_engine
    tmp = tmp_sibling(final)
    try:
        if scripted is None:
            log(f"[export] {source.name}: TorchScript ({method}) ...")
            scripted, used = to_torchscript(ChannelsLastInput(model) if channels_last else model, example, method)
        else:
            scripted, used = scripted
        log("[export] optimize_for_mobile (freeze, fold BN, XNNPACK prepack, fuse ReLU) ...")
        optimized = optimize(scripted)
        optimized._save_for_lite_interpreter(str(tmp))
        written_version = lite_bytecode_version(tmp)
        if bytecode_version is not None:
            log(f"[export] backport bytecode {written_version} -> {bytecode_version}")
            tmp2 = tmp_sibling(final)
            try:
                backport(tmp, tmp2, bytecode_version)
                os.replace(tmp2, tmp)
            finally:
                if tmp2.exists():
                    tmp2.unlink()
        lite = _load_for_lite_interpreter(str(tmp))
        if inputs is None:
            inputs = make_inputs(sizes, image_dir, n_real, mean=source.mean, std=source.std)
        log(f"[export] verify against eager on {len(inputs)} inputs at {', '.join(f'{h}x{w}' for h, w in sizes)}")
        rows = verify_runtime(model, lite, inputs, atol, rtol)
        for r in rows:
            log(
                f"[verify] {r['size'][0]}x{r['size'][1]} {r['input']:<18} max|diff| {r['max_abs_diff']:.2e} "
                f"<= bound {r['bound']:.2e}  ok"
            )
        ops = sorted(set(_export_operator_list(lite)))
        sidecar = {
            "format": "shufflenet-mobile/1",
            "file": final.name,
            "runtime": "pytorch lite interpreter (torch.jit.mobile._load_for_lite_interpreter / LiteModuleLoader)",
            "model": source.name,
            "task": source.task,
            "source": source.origin,
            "input": {
                "sizes_hw_verified": [list(s) for s in sizes],
                "shape": "3 x H x W (one image)" if source.task == "detection" else "N x 3 x H x W",
                "dtype": "float32",
                "normalization": source.normalization,
            },
            "outputs": [list(t.shape) for t in flatten_outputs(_run(model, inputs[0].tensor))],
            "sha256": sha256_file(tmp),
            "size_bytes": tmp.stat().st_size,
            "bytecode_version": lite_bytecode_version(tmp),
            "bytecode_version_written": written_version,
            "operators": ops,
            "torchscript_method": used,
            "optimize_for_mobile": True,
            "memory_format": "channels_last" if channels_last and source.task != "detection" else "contiguous",
            "quantized_engine": quantized_engine,
            "verification": {"atol": atol, "rtol": rtol, "image_dir": str(image_dir) if image_dir else None, "checks": rows},
            "exported_with": {"torch": torch.__version__, "python": platform.python_version(), "arch": platform.machine()},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **({"extra": source.extra} if source.extra else {}),
        }
        if image_dir is None:
            sidecar["verification"]["note"] = "no real image folder found (pass --images DIR): random inputs only"
        os.replace(tmp, final)
        write_json_atomic(sidecar, side)
    finally:
        torch.backends.quantized.engine = prev_engine
        if tmp.exists():
            tmp.unlink()
    log(f"[export] wrote {final} ({sidecar['size_bytes'] / 1e6:.2f} MB, bytecode v{sidecar['bytecode_version']}, {len(ops)} ops) + {side.name}")
    return final, sidecar


def _run(model: Callable, x: Tensor) -> Any:
    with torch.no_grad():
        return model(x)


# --- detector ----------------------------------------------------------------------------------------


def detector_inputs(sizes: Sequence[Tuple[int, int]], image_dir: Optional[os.PathLike], n_real: int = 2,
                    seed: int = 0) -> List[VerifyInput]:
    """One random and ``n_real`` real single images per size, as detectron2 takes them: (3, H, W) BGR 0-255."""
    gen = torch.Generator().manual_seed(seed)
    files = list_images(image_dir, limit=n_real) if (image_dir is not None and n_real > 0) else []
    out = []
    for size in sizes:
        out.append(VerifyInput("random", size, torch.rand(3, *size, generator=gen) * 255))
        for i, f in enumerate(files):
            rgb01 = load_images([f], size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))[0]
            out.append(VerifyInput(f"real ({Path(f).name})", size, rgb01.flip(0) * 255))
    return out


def export_detector(
    config: str,
    out_dir: os.PathLike,
    sizes: Sequence[Tuple[int, int]],
    weights: Optional[str] = None,
    image_dir: Optional[os.PathLike] = None,
    n_real: int = 2,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    bytecode_version: Optional[int] = None,
    basename: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> Tuple[Path, Dict[str, Any]]:
    """Export the detection wing's traceable detector (its public API only) to a verified ``.ptl``.

    ``build_detector(config, weights=...)`` -> ``traceable_detector`` -> ``trace_detector`` (traced ==
    eager, checked by the detection wing) -> ``optimize_for_mobile`` -> lite interpreter, verified here
    against the eager detector on random and real images at every size: same number of detections, boxes
    and scores within the bound, identical classes.
    """
    require_xnnpack()
    try:
        from ..detection import build_detector
        from ..detection.export import trace_detector, traceable_detector
    except ImportError as e:
        raise MobileError(f"--detector needs the detection wing (detectron2): {e}") from None
    sizes = [tuple(s) for s in sizes]
    try:
        model, cfg = build_detector(config, opts=["MODEL.DEVICE", "cpu"], weights=weights)
        module = traceable_detector(model)
        inputs = detector_inputs(sizes, image_dir, n_real)
        log(f"[export] detector {config}: torch.jit.trace (detection wing's trace_detector) ...")
        traced = trace_detector(module, inputs[0].tensor, [i.tensor for i in inputs[1:]])
    except (ValueError, RuntimeError, KeyError, FileNotFoundError) as e:
        raise MobileError(f"detector {config}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    name = Path(config).stem
    spec = {"color": "BGR", "scale": "0-255 (no mean/std: the model normalizes inside)",
            "resize": f"shortest edge to INPUT.MIN_SIZE_TEST={cfg.INPUT.MIN_SIZE_TEST}, longest <= "
                      f"INPUT.MAX_SIZE_TEST={cfg.INPUT.MAX_SIZE_TEST} before the call; boxes are in that image's pixels",
            "layout": "3 x H x W float32, one image per call"}
    src = ModelSource(module, name, f"detector config {config}" + (f" + weights {weights}" if weights else " (random init)"),
                      task="detection", input_spec=spec,
                      extra={"outputs": "boxes [N, 4] (x0, y0, x1, y1), scores [N], classes [N]"})
    return export_ptl(src, out_dir, sizes, image_dir=image_dir, n_real=n_real, atol=atol, rtol=rtol,
                      bytecode_version=bytecode_version, basename=basename or name, channels_last=False,
                      scripted=(traced, "trace"), inputs=inputs, log=log)


# --- command line ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mobile/export.py",
        description="Export a model to a verified .ptl (PyTorch lite interpreter) or .pte (ExecuTorch) with a JSON sidecar.",
    )
    p.add_argument("model", nargs="?", help="registered name (e.g. shufflenet_v1_x0_5_g3), package weights file, or Lightning .ckpt")
    p.add_argument("--detector", default=None, metavar="CONFIG",
                   help="export a detector instead: a config name in configs/detection/ or a path (see --weights)")
    p.add_argument("--weights", default=None, help="detector weights (with --detector; default: random init)")
    p.add_argument("--input-size", nargs="+", default=["224"], metavar="S|HxW",
                   help="sizes to verify at (height x width), e.g. 224 480x640 720x1280 (default 224)")
    p.add_argument("--out", default="exported", help="output folder (default: exported/)")
    p.add_argument("--name", default=None, help="file stem (default: the model name, + _int8 when quantized)")
    p.add_argument("--format", choices=("ptl", "pte"), default="ptl", help="ptl: lite interpreter; pte: ExecuTorch + XNNPACK")
    p.add_argument("--arch", default=None, help="architecture name for a checkpoint that does not store one")
    p.add_argument("--num-classes", type=int, default=None, help="classifier width for a registered name (default: its own)")
    p.add_argument("--memory-format", choices=("channels_last", "contiguous"), default="channels_last",
                   help="layout the exported model computes in (default channels_last: XNNPACK's NHWC, about 2x faster)")
    p.add_argument("--method", choices=("auto", "script", "trace"), default="auto", help="TorchScript conversion (default: script, trace if scripting fails)")
    p.add_argument("--images", default="auto", help="folder of real images for verification ('auto': ../shared/data; 'none': random only)")
    p.add_argument("--n-real", type=int, default=2, help="real images per size (default 2)")
    p.add_argument("--atol", type=float, default=None, help=f"absolute bound (default {DEFAULT_ATOL:g}; int8: {INT8_ATOL:g})")
    p.add_argument("--rtol", type=float, default=None,
                   help=f"times max|eager output| added to --atol (default {DEFAULT_RTOL:g}; int8: {INT8_RTOL:g})")
    p.add_argument("--bytecode-version", type=int, default=None, help="backport the .ptl to this bytecode version (e.g. 7 for older Android runtimes)")
    p.add_argument("--quantize", choices=("none", "int8"), default="none",
                   help="int8 post-training static quantization calibrated on --calib-images (ptl: FX/QNNPACK; pte: PT2E/XNNPACKQuantizer)")
    p.add_argument("--calib-images", default="auto", help="folder of real calibration images (default: the CIFAR-10 slice train split)")
    p.add_argument("--calib-count", type=int, default=64, help="calibration images (default 64)")
    p.add_argument("--calib-size", default=None, metavar="S|HxW", help="calibration resolution (default: the first --input-size)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.input_size]
        if (args.model is None) == (args.detector is None):
            raise MobileError("give either a MODEL (name, weights file or checkpoint) or --detector CONFIG")
        if args.detector is not None:
            if args.format != "ptl" or args.quantize != "none":
                raise MobileError("--detector exports fp32 .ptl only (no --format pte / --quantize int8)")
            image_dir = default_image_dir() if args.images == "auto" else (
                None if args.images.lower() == "none" else Path(args.images))
            export_detector(args.detector, args.out, sizes, weights=args.weights, image_dir=image_dir,
                            n_real=args.n_real, atol=args.atol or DEFAULT_ATOL, rtol=args.rtol or DEFAULT_RTOL,
                            bytecode_version=args.bytecode_version, basename=args.name)
            return 0
        source = load_model(args.model, arch=args.arch, num_classes=args.num_classes)
        image_dir: Any
        if args.images == "auto":
            image_dir = default_image_dir()
        elif args.images.lower() == "none":
            image_dir = None
        else:
            image_dir = Path(args.images)
            if not image_dir.is_dir():
                raise MobileError(f"--images {image_dir}: no such folder")
        int8 = args.quantize == "int8"
        if args.atol is None:
            args.atol = INT8_ATOL if int8 else DEFAULT_ATOL
        if args.rtol is None:
            args.rtol = INT8_RTOL if int8 else DEFAULT_RTOL
        stem = args.name or (source.name + ("_int8" if args.quantize == "int8" else ""))
        if args.format == "pte":
            from .pte import export_pte

            if args.bytecode_version is not None:
                raise MobileError("--bytecode-version applies to .ptl files only (ExecuTorch has no bytecode backport)")
            quantize_fn = None
            if args.quantize == "int8":
                from .quantize import pt2e_int8_for_pte

                quantize_fn = pt2e_int8_for_pte(source, args.calib_images, args.calib_count,
                                                parse_size(args.calib_size) if args.calib_size else sizes[0])
            export_pte(source, args.out, sizes, image_dir=image_dir, n_real=args.n_real, atol=args.atol,
                       rtol=args.rtol, basename=stem, quantize_fn=quantize_fn)
            return 0
        engine = None
        if args.quantize == "int8":
            from .quantize import quantize_fx_int8, resolve_calib_dir

            calib = resolve_calib_dir(args.calib_images)
            csize = parse_size(args.calib_size) if args.calib_size else sizes[0]
            source = quantize_fx_int8(source, calib, args.calib_count, csize)
            engine = "qnnpack"
        export_ptl(source, args.out, sizes, method=args.method, image_dir=image_dir, n_real=args.n_real,
                   channels_last=args.memory_format == "channels_last",
                   atol=args.atol, rtol=args.rtol, bytecode_version=args.bytecode_version, basename=stem,
                   quantized_engine=engine)
        return 0
    except (MobileError, ValueError, FileNotFoundError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
