"""TorchScript export of a ShuffleNet detector (detectron2's tracing support).

``traceable_detector(model)`` wraps a detectron2 ``GeneralizedRCNN`` (e.g. from :func:`build_detector`)
in a module with a flat, trace-friendly interface::

    boxes [N, 4] (x0, y0, x1, y1), scores [N], classes [N] = module(image)

``image`` is ONE float tensor (3, H, W), BGR, 0-255, already resized as detectron2's test-time
``ResizeShortestEdge`` would (``cfg.INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``); boxes are in that image's
coordinates. A model configured for RGB input (``INPUT.FORMAT: RGB``, this project's configs) gets the
channel flip inside the module, so every exported detector takes detectron2's BGR convention.

``trace_detector`` traces it with ``torch.jit.trace`` under detectron2's ``patch_builtin_len`` (the
patch detectron2's own ``TracingAdapter`` uses so that ``len(Instances)`` stays symbolic) and then runs
the traced and the eager module on every check image, raising :class:`ExportError` unless the outputs
match. detectron2's model code takes tensor paths while tracing (image padding, anchor grids, top-k
sizes), so a module traced on one image size runs on others; the check images should include other sizes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

import torch
from detectron2.export.torchscript_patch import patch_builtin_len
from torch import Tensor, nn

from ..fileio import atomic_write
from .config import DetectionError

__all__ = ["ExportError", "TraceableDetector", "traceable_detector", "trace_detector", "compare_outputs", "save_traced"]


class ExportError(DetectionError, RuntimeError):
    """Tracing failed or the traced module disagrees with the eager one."""


class TraceableDetector(nn.Module):
    """``(3, H, W)`` BGR 0-255 image -> ``(boxes, scores, classes)`` of a detectron2 R-CNN (no resizing)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        if not hasattr(model, "inference") or not hasattr(model, "input_format"):
            raise ExportError(
                f"traceable_detector needs a detectron2 GeneralizedRCNN (from build_detector), got {type(model).__name__}"
            )
        if model.input_format not in ("BGR", "RGB"):
            raise ExportError(f"INPUT.FORMAT={model.input_format!r}: only BGR and RGB detectors can be exported")
        self.model = model.eval()
        self.flip_to_rgb = model.input_format == "RGB"

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        if self.flip_to_rgb:
            image = image.flip(0)  # BGR -> RGB
        instances = self.model.inference([{"image": image}], do_postprocess=False)[0]
        return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def traceable_detector(model: nn.Module) -> nn.Module:
    """The detector as a module ``image (3, H, W) BGR 0-255 -> (boxes [N,4], scores [N], classes [N])``."""
    return TraceableDetector(model).eval()


def _check_image(image: Tensor, what: str) -> None:
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ExportError(f"{what}: expected one float image tensor of shape (3, H, W), BGR 0-255; got {shape}")


def compare_outputs(
    eager: Sequence[Tensor], traced: Sequence[Tensor], atol: float = 1e-3, rtol: float = 1e-4
) -> Optional[str]:
    """``None`` if the (boxes, scores, classes) tuples match, else what differs."""
    names = ("boxes", "scores", "classes")
    for name, a, b in zip(names, eager, traced):
        if a.shape != b.shape:
            return f"{name}: shape {tuple(b.shape)} traced vs {tuple(a.shape)} eager"
        if a.is_floating_point():
            if not torch.allclose(a, b, atol=atol, rtol=rtol):
                return f"{name}: max abs difference {(a - b).abs().max().item():.3g} > atol {atol}"
        elif not torch.equal(a, b):
            return f"{name}: {int((a != b).sum())} of {a.numel()} differ"
    return None


def trace_detector(
    model: nn.Module, example: Tensor, check_images: Iterable[Tensor] = (), atol: float = 1e-3
) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` the detector on ``example``; check traced == eager on ``example`` and ``check_images``.

    ``model`` is a detectron2 R-CNN or a :func:`traceable_detector` module. Raises :class:`ExportError`
    naming the image and the output that differs.
    """
    module = model if isinstance(model, TraceableDetector) else traceable_detector(model)
    module.eval()
    _check_image(example, "example image")
    images = [example] + list(check_images)
    for i, image in enumerate(images):
        _check_image(image, f"check image {i}")
    with torch.no_grad(), patch_builtin_len():
        try:
            traced = torch.jit.trace(module, (example,), check_trace=False)
        except Exception as e:  # tracer errors are long; keep the first line
            raise ExportError(f"torch.jit.trace failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    with torch.no_grad():
        for i, image in enumerate(images):
            eager_out = module(image)
            traced_out = traced(image)
            problem = compare_outputs(eager_out, traced_out, atol=atol)
            if problem:
                raise ExportError(
                    f"traced detector disagrees with eager on image {i} of shape {tuple(image.shape)}: {problem}"
                )
    return traced


def save_traced(traced: torch.jit.ScriptModule, path: os.PathLike) -> Path:
    """``torch.jit.save`` through :func:`shufflenet.fileio.atomic_write` (never a half-written file)."""
    with atomic_write(path, "wb") as f:
        torch.jit.save(traced, f)
    return Path(path)
