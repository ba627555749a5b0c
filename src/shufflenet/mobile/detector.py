"""Detector export: the detection integration's traced detector (public API) to verified ``.ptl`` and ONNX files."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from ..errors import ShuffleNetError
from .images import load_images
from .rewrite import with_reshape_shuffles
from .runtime import Exported, ExportSpec, Job, check, export, get
from .source import MobileError, ModelSource
from .verify import VerifyInput

__all__ = ["OUTPUT_NAMES", "detector_inputs", "export_detector"]

OUTPUT_NAMES = ("boxes", "scores", "classes")


def detector_inputs(
    sizes: Sequence[Tuple[int, int]], images: Optional[Sequence[os.PathLike]], n_real: int = 2, seed: int = 0
) -> List[VerifyInput]:
    """One random and ``n_real`` real single images per size, as detectron2 takes them: (3, H, W) BGR 0-255."""
    gen = torch.Generator().manual_seed(seed)
    files = list(images or [])[: max(0, n_real)]
    out = []
    for size in sizes:
        out.append(VerifyInput("random", size, torch.rand(3, *size, generator=gen) * 255))
        for f in files:
            rgb01 = load_images([f], size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))[0]
            out.append(VerifyInput(f"real ({Path(f).name})", size, rgb01.flip(0) * 255))
    return out


def export_detector(
    config: str,
    out_dir: os.PathLike,
    formats: Sequence[str] = ("ptl",),
    spec: Optional[ExportSpec] = None,
    weights: Optional[str] = None,
) -> Exported:
    """``build_detector(config, weights=...)`` -> ``traceable_detector`` -> ``trace_detector`` (traced ==
    eager, checked by the detection wing) -> each runtime of ``formats`` (those that take a detector), verified
    against the eager detector on random and real images at every size: same number of detections, boxes and
    scores within the bound, identical classes. Returns the first format's :class:`~.runtime.Exported`."""
    rts = [get(f) for f in formats]
    spec = spec or ExportSpec()
    check(rts, spec, "detection")
    try:
        from ..detection import build_detector
        from ..detection.export import trace_detector, traceable_detector
    except ImportError as e:
        raise MobileError(f"--detector needs the detection wing (detectron2): {e}") from None
    sizes = [tuple(s) for s in spec.sizes]
    log = spec.log
    from .images import resolve_images

    files = list(spec.images) if isinstance(spec.images, (list, tuple)) else resolve_images(spec.images)
    try:
        model, cfg = build_detector(config, opts=["MODEL.DEVICE", "cpu"], weights=weights)
        module = traceable_detector(model)
        inputs = detector_inputs(sizes, files, spec.n_real)
        log(f"[export] detector {config}: torch.jit.trace (detection wing's trace_detector) ...")
        traced = trace_detector(module, inputs[0].tensor, [i.tensor for i in inputs[1:]])
    except (ValueError, RuntimeError, KeyError, FileNotFoundError) as e:  # detectron2's own config/build errors
        if isinstance(e, ShuffleNetError):
            raise
        raise MobileError(f"detector {config}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    name = Path(config).stem
    input_spec = {
        "color": "BGR",
        "scale": "0-255 (no mean/std: the model normalizes inside)",
        "resize": f"shortest edge to INPUT.MIN_SIZE_TEST={cfg.INPUT.MIN_SIZE_TEST}, longest <= "
        f"INPUT.MAX_SIZE_TEST={cfg.INPUT.MAX_SIZE_TEST} before the call; boxes are in that image's pixels",
        "layout": "3 x H x W float32, one image per call",
    }
    src = ModelSource(
        module,
        name,
        f"detector config {config}" + (f" + weights {weights}" if weights else " (random init)"),
        task="detection",
        input_spec=input_spec,
        extra={"outputs": "boxes [N, 4] (x0, y0, x1, y1), scores [N], classes [N]"},
    )
    spec = replace(spec, images=files, name=spec.name or name)
    results = []
    for rt in rts:
        form = traced
        if rt.shuffle == "reshape":
            # traced again with the shuffle in its reshape form: the first trace holds aten::channel_shuffle,
            # which this runtime has no operator for (a plain export of the module would trace without the
            # detection integration's tracing patches)
            log(f"[export] detector: trace for {rt.name} (channel shuffle as reshape/transpose/reshape) ...")
            form = trace_detector(with_reshape_shuffles(module), inputs[0].tensor, [i.tensor for i in inputs[1:]])
        job = Job(src, spec, list(sizes), files, spec.name, module.eval(), inputs, form, {"output_names": OUTPUT_NAMES})
        results.append(export(rt, src, out_dir, spec, job))
    return results[0]
