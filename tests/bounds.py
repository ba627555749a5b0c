"""The tests' own bounds for exported models, each argued here, and the one comparison they use.

The package verifies every export against bounds of its own (``shufflenet.mobile.verify``); a test that used
those bounds, or the ``ok`` verdict the export wrote into its sidecar, would pass whenever the package agreed
with itself. The tests instead recompute the difference from the outputs and hold it to these numbers.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

#: fp32 export vs eager (XNNPACK, ONNX Runtime, ncnn, ExecuTorch run the same arithmetic in other kernels and
#: summation orders): float32 rounding (~6e-8 relative per operation) accumulated through ~50 layers moves logits
#: by ~1e-6 of their range (the exports' sidecars record 1e-7 to 1e-5). 1e-4 absolute + 1e-4 of max|logit| keeps
#: a margin of 10x or more; a real fault (a dropped BatchNorm shift, a wrong channel shuffle, a lost bias) moves
#: logits by 1e-2 or more of their range.
FP32 = (1e-4, 1e-4)

#: int8 file vs its own int8 reference module (same quantized arithmetic; kernels may round a requantized value
#: one step differently and the steps add up through the network): an 8-bit output step is 1/255 of the output
#: range, about 0.8 % of max|output|; 0.1 of max|output| is about 12 steps, above the worst case the package's
#: docs report (2.6 % for PT2E/XNNPACK on random input), far below a wrong scale or zero point (tens of percent).
INT8_SELF = (1e-3, 0.1)

#: int8 file vs the fp32 network on real photos: quantization error itself. docs/mobile.md measured sound
#: calibrations at 3-40 % of max|fp32| and calibrations on blank frames at 108-122 %: 0.6 lies between.
INT8_VS_FP32 = (1e-3, 0.6)


def _flat(x: Any) -> Sequence[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    return [t for item in x for t in _flat(item)]


def max_diff(ref: Any, got: Any) -> float:
    """max |ref - got| over all output tensors (same structure and shapes, all finite, else an AssertionError)."""
    r, g = _flat(ref), _flat(got)
    assert [tuple(t.shape) for t in r] == [tuple(t.shape) for t in g], (
        [tuple(t.shape) for t in r],
        [tuple(t.shape) for t in g],
    )
    for t in (*r, *g):
        assert bool(torch.isfinite(torch.as_tensor(t)).all()), "non-finite output"
    return max(float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max()) for a, b in zip(r, g))


def assert_within(ref: Any, got: Any, bound) -> float:
    """``max|ref - got| <= atol + rtol * max|ref|`` for ``bound = (atol, rtol)``; returns the difference."""
    atol, rtol = bound
    scale = max(float(torch.as_tensor(t).abs().max()) for t in _flat(ref))
    diff = max_diff(ref, got)
    assert diff <= atol + rtol * scale, f"max |ref - got| = {diff:.3g} > {atol} + {rtol} x {scale:.3g}"
    return diff


def assert_recorded_within(checks, bound) -> None:
    """The differences an export recorded per check (its ``max_abs_diff`` and ``max_abs_ref``), held to the test's
    bound rather than the export's ``ok``; every check must carry both numbers."""
    atol, rtol = bound
    assert checks
    for c in checks:
        assert c["max_abs_diff"] <= atol + rtol * c["max_abs_ref"], c
