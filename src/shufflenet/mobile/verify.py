"""Verification of exported files against the eager model: inputs, comparison, bounds (bottom of the wing).

Every exporter (``ptl.py``, ``pte.py``, ``detector.py``) builds its inputs with :func:`make_inputs` (one
random batch and one batch of real photos per size: the package's sample photos unless told otherwise) and
refuses to write a file that :func:`verify_runtime` does not pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .images import load_frames, load_images
from .source import MobileError

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "INT8_ATOL", "INT8_RTOL", "INT8_FIDELITY_RTOL", "VerificationError"]
__all__ += ["VerifyInput", "make_inputs", "make_frame_inputs", "frame_reference", "flatten_outputs", "compare_outputs"]
__all__ += ["verify_runtime"]

DEFAULT_ATOL = 1e-4
#: Relative part of the bound, scaled by the largest |output| of eager (large logits of trained models).
DEFAULT_RTOL = 1e-5
#: int8 exports are compared with their own quantized reference (FX-converted module / PT2E-converted
#: module), not with fp32: kernels may round an int8 value differently, so the bound allows a few output
#: quantization steps (an 8-bit step is 1/255 of the output range, about 0.8% of max|output|; 0.05 is about
#: 6 steps, measured worst case 2.6% for PT2E/XNNPACK on out-of-distribution random input).
INT8_ATOL = 1e-3
INT8_RTOL = 0.05
#: Fidelity of an int8 file against the *fp32* model on real photos (ONNX Runtime QDQ, ncnn int8), the check that
#: refuses a degenerate calibration: ``max|int8 - fp32| <= INT8_ATOL + INT8_FIDELITY_RTOL x max|fp32|``. Measured
#: (docs/mobile.md): sound calibrations stayed at 3-40 % of max|fp32| (a trained CIFAR model calibrated on 32
#: train images or the sample photos; random networks with real-image BatchNorm statistics), calibrations on
#: blank frames at 108-122 %. Half the largest logit lies between: a guard against a broken calibration.
INT8_FIDELITY_RTOL = 0.5


class VerificationError(MobileError):
    """The exported model's outputs differ from eager's by more than the bound (nothing was written)."""


@dataclass
class VerifyInput:
    label: str  #: "random" or "real (2 images)"
    size: Tuple[int, int]
    tensor: Tensor


def make_inputs(
    sizes: Sequence[Tuple[int, int]],
    images: Optional[Sequence[os.PathLike]] = None,
    n_real: int = 2,
    seed: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> List[VerifyInput]:
    """One random batch and (when ``images`` are given) one batch of ``n_real`` real photos per size."""
    return _inputs(
        sizes,
        images,
        n_real,
        seed,
        lambda s, g: torch.randn(1, 3, *s, generator=g),
        lambda f, s: load_images(f, s, mean, std),
    )


def _inputs(sizes, images, n_real: int, seed: int, random, real) -> List[VerifyInput]:
    gen = torch.Generator().manual_seed(seed)
    files = list(images or [])[: max(0, n_real)]
    out = []
    for size in sizes:
        out.append(VerifyInput("random", size, random(size, gen)))
        if files:
            out.append(VerifyInput(f"real ({len(files)} images)", size, real(files, size)))
    return out


def make_frame_inputs(
    sizes: Sequence[Tuple[int, int]], images: Optional[Sequence[os.PathLike]] = None, n_real: int = 2, seed: int = 0
) -> List[VerifyInput]:
    """Camera frames (``N x H x W x 3`` uint8): one of random pixels and one of real photos per size."""
    frame = lambda s, g: torch.randint(0, 256, (1, *s, 3), generator=g, dtype=torch.uint8)  # noqa: E731
    return _inputs(sizes, images, n_real, seed, frame, load_frames)


def frame_reference(
    model: Callable[[Tensor], Any], mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Callable[[Tensor], Any]:
    """The eager model on a camera frame: ``(frame / 255 - mean) / std`` in NCHW, then ``model``."""
    m = torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1)
    s = torch.tensor([float(v) for v in std]).view(1, 3, 1, 1)

    def run(frame: Tensor) -> Any:
        x = frame.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return model((x - m) / s)

    return run


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
    """Max |ref - got| against ``atol + rtol * max|ref|`` over all output tensors; NaN or inf in any output of
    either side fails (``why`` names the output)."""
    r, g = flatten_outputs(ref), flatten_outputs(got)

    def fail(why: str, bound: float = 0.0, max_ref: float = 0.0) -> Dict[str, Any]:
        return {"ok": False, "max_abs_diff": float("inf"), "bound": bound, "max_abs_ref": max_ref, "why": why}

    if len(r) != len(g) or any(a.shape != b.shape for a, b in zip(r, g)):
        shapes = [[tuple(t.shape) for t in ts] for ts in (r, g)]
        return fail(f"output structure differs: eager {shapes[0]} vs exported {shapes[1]}")
    r = [a.detach().float() for a in r]
    g = [b.detach().float() for b in g]
    nonfinite = [
        f"{side} output {i} {tuple(t.shape)}"
        for side, ts in (("eager", r), ("exported", g))
        for i, t in enumerate(ts)
        if not bool(torch.isfinite(t).all())
    ]
    # A torch reduction, not Python's max(): max() keeps its first argument when compared with NaN, so a NaN in
    # any output but the first would vanish. NaN/inf anywhere fails (and is reported as an infinite difference).
    max_ref = max((float(a.abs().max()) for a in r if a.numel()), default=0.0)
    diffs = [(a - b).abs().max() for a, b in zip(r, g) if a.numel()]
    diff = float(torch.stack(diffs).max()) if diffs else 0.0
    bound = atol + rtol * max_ref
    if nonfinite:
        return fail("non-finite values (NaN or inf) in " + ", ".join(nonfinite), bound, max_ref)
    return {"ok": bool(diff <= bound), "max_abs_diff": diff, "bound": bound, "max_abs_ref": max_ref}


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
        where = f"{inp.label} input at {inp.size[0]}x{inp.size[1]}"
        with torch.no_grad():
            try:
                ref = eager(inp.tensor.clone())
            except RuntimeError as e:
                raise MobileError(
                    f"the eager model failed on the {where}: {str(e).splitlines()[0]}; no file was written"
                ) from None
            try:
                got = exported(inp.tensor.clone())
            except RuntimeError as e:
                raise VerificationError(
                    f"the {runtime} failed on the {where}: {str(e).splitlines()[0]}; no file was written"
                ) from None
        res = compare_outputs(ref, got, atol, rtol)
        batch = int(inp.tensor.shape[0]) if inp.tensor.dim() == 4 else 1  # a detector takes one 3 x H x W image
        row = {"input": inp.label, "size": list(inp.size), "batch": batch, **res}
        rows.append(row)
        if not res["ok"]:
            why = res.get("why") or (
                f"max |eager - exported| = {res['max_abs_diff']:.3g} exceeds the bound {res['bound']:.3g} "
                f"(atol {atol:g} + rtol {rtol:g} x max|eager| {res['max_abs_ref']:.3g})"
            )
            raise VerificationError(f"verification failed on {where} through the {runtime}: {why}; no file was written")
    return rows


def images_note(images: Optional[Sequence[Path]]) -> Dict[str, Any]:
    """What the sidecar says about the real images used (or that there were none)."""
    if not images:
        return {"images": None, "note": "random inputs only (--images none)"}
    folders = sorted({str(Path(p).parent) for p in images})
    return {"images": folders[0] if len(folders) == 1 else folders}
