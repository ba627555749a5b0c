"""TorchScript export of a ShuffleNet detector (detectron2's tracing support).

``traceable_detector(model)`` wraps a detectron2 ``GeneralizedRCNN`` (e.g. from :func:`build_detector`)
in a module with a flat, trace-friendly interface::

    boxes [N, 4] (x0, y0, x1, y1), scores [N], classes [N] = module(image)

``image`` is ONE float tensor (3, H, W), BGR, 0-255, already resized as detectron2's test-time
``ResizeShortestEdge`` would (``cfg.INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``); boxes are in that image's
coordinates. A model configured for RGB input (``INPUT.FORMAT: RGB``, this project's configs) gets the
channel flip inside the module, so every exported detector takes detectron2's BGR convention.

The module runs a copy of the detector with every eval-mode BatchNorm folded into the convolution before
it (:func:`.modeling.fuse_for_inference`; the model passed in is left as it is). That is the export-time
form: the traced graph holds plain biased convolutions and no BatchNorm, so a runtime's own conv+BN folding
has nothing to fold. (torch's ``optimize_for_mobile`` folds a traced bias-free convolution + BatchNorm by
scaling the weights but drops the BatchNorm's shift, so an unfolded detector with trained BatchNorm came
out of it with other scores and other detections; with the identity BatchNorm of a randomly initialised
detector the shift is 0 and nothing showed.) :func:`check_fusion` compares the folded copy with the model
on what folding guarantees, the stage outputs before any top-k, NMS or score threshold.

``trace_detector`` traces it with ``torch.jit.trace`` under detectron2's ``patch_builtin_len`` (the
patch detectron2's own ``TracingAdapter`` uses so that ``len(Instances)`` stays symbolic) and then runs
the traced and the eager module on every check image, raising :class:`ExportError` unless the detections
match (:func:`compare_detections`). detectron2's model code takes tensor paths while tracing (image
padding, anchor grids, top-k sizes), so a module traced on one image size runs on others; the check images
should include other sizes. The tracer's warnings about detectron2's shape asserts and empty-input branches
(``TracerWarning`` from ``detectron2.*``) are known to be harmless for these detectors and are not printed;
the checks on other images are what shows the trace generalizes.
"""

from __future__ import annotations

import copy
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple

import torch
from detectron2.export.torchscript_patch import patch_builtin_len
from torch import Tensor, nn

from ..fileio import atomic_write
from .checkpoint import unwrap_parallel
from .config import DetectionError
from .modeling import fuse_for_inference

__all__ = [
    "ExportError",
    "TraceableDetector",
    "traceable_detector",
    "trace_detector",
    "compare_detections",
    "stage_outputs",
    "check_fusion",
    "quiet_tracer",
    "save_traced",
]


class ExportError(DetectionError, RuntimeError):
    """Tracing failed or the traced module disagrees with the eager one."""


class TraceableDetector(nn.Module):
    """``(3, H, W)`` BGR 0-255 image -> ``(boxes, scores, classes)`` of a detectron2 R-CNN (no resizing).

    ``fuse=True`` (default) runs a BatchNorm-folded copy of ``model``; ``model`` itself stays unchanged and is
    kept (not as a submodule: it is not exported) as :attr:`unfused` for :func:`check_fusion`.
    """

    def __init__(self, model: nn.Module, fuse: bool = True) -> None:
        super().__init__()
        model = unwrap_parallel(model)
        if not hasattr(model, "inference") or not hasattr(model, "input_format"):
            raise ExportError(
                "traceable_detector needs a detectron2 GeneralizedRCNN (from build_detector), got "
                f"{type(model).__name__}"
            )
        if model.input_format not in ("BGR", "RGB"):
            raise ExportError(f"INPUT.FORMAT={model.input_format!r}: only BGR and RGB detectors can be exported")
        model.eval()
        self.__dict__["unfused"] = model  # a plain attribute: neither traced nor saved
        self.model = fuse_for_inference(copy.deepcopy(model)).eval() if fuse else model
        self.fused = bool(fuse)
        self.flip_to_rgb = model.input_format == "RGB"

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        if self.flip_to_rgb:
            image = image.flip(0)  # BGR -> RGB
        instances = self.model.inference([{"image": image}], do_postprocess=False)[0]
        return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def traceable_detector(model: nn.Module, fuse: bool = True) -> TraceableDetector:
    """The detector as a module ``image (3, H, W) BGR 0-255 -> (boxes [N,4], scores [N], classes [N])``,
    BatchNorm folded into a copy of ``model`` unless ``fuse=False``."""
    return TraceableDetector(model, fuse=fuse).eval()


def _check_image(image: Tensor, what: str) -> None:
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ExportError(f"{what}: expected one float image tensor of shape (3, H, W), BGR 0-255; got {shape}")


def compare_detections(
    expected: Sequence[Tensor], actual: Sequence[Tensor], atol: float = 1e-3, rtol: float = 1e-4
) -> Optional[str]:
    """``None`` if two ``(boxes, scores, classes)`` results hold the same detections, else what differs.

    Compared as sets: the same count, and each expected detection matched to its own actual detection of the
    same class whose score and box agree within ``atol + rtol * |value|``. Detections with tied scores may
    come in any order (top-k and NMS order ties by index, which numerically different but equivalent
    computations need not keep).
    """
    boxes_e, scores_e, classes_e = expected[:3]
    boxes_a, scores_a, classes_a = actual[:3]
    if boxes_e.shape != boxes_a.shape or scores_e.shape != scores_a.shape or classes_e.shape != classes_a.shape:
        return (
            f"{boxes_a.shape[0]} detections vs {boxes_e.shape[0]} expected "
            f"(shapes {tuple(boxes_a.shape)} vs {tuple(boxes_e.shape)})"
        )
    if not (torch.isfinite(boxes_a).all() and torch.isfinite(scores_a).all()):
        return "non-finite boxes or scores"
    if torch.equal(boxes_e, boxes_a) and torch.equal(scores_e, scores_a) and torch.equal(classes_e, classes_a):
        return None
    boxes_e, boxes_a = boxes_e.double(), boxes_a.double()
    scores_e, scores_a = scores_e.double(), scores_a.double()
    box_tol = atol + rtol * boxes_e.abs()
    score_tol = atol + rtol * scores_e.abs()
    free = torch.ones(len(scores_a), dtype=torch.bool)
    for i in torch.argsort(scores_e, descending=True, stable=True).tolist():
        box_err = (boxes_a - boxes_e[i]).abs()
        ok = (
            free
            & (classes_a == classes_e[i])
            & ((scores_a - scores_e[i]).abs() <= score_tol[i])
            & (box_err <= box_tol[i]).all(dim=1)
        )
        if not ok.any():
            return (
                f"expected detection {i} (class {int(classes_e[i])}, score {float(scores_e[i]):.6g}, box "
                f"{[round(float(v), 3) for v in boxes_e[i]]}) has no match within atol {atol}, rtol {rtol}"
            )
        candidates = ok.nonzero().flatten()
        j = int(candidates[box_err[candidates].amax(dim=1).argmin()])
        free[j] = False
    return None


@contextmanager
def quiet_tracer() -> Iterator[None]:
    """Hide the tracer's warnings that are known to be harmless for detectron2's R-CNNs: those raised in
    ``detectron2.*`` (shape asserts, the empty-input and all-finite branches, ``len(boxes) < 40000`` in NMS, the
    class-agnostic-box test: each constant for a given config) and in ``torch._assert``; and the
    ``torch.meshgrid`` indexing notice detectron2's anchor generator triggers (it uses ``ij``, the default)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"detectron2\.")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch$")
        warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)
        yield


def trace_detector(
    model: nn.Module, example: Tensor, check_images: Iterable[Tensor] = (), atol: float = 1e-3
) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` the detector on ``example``; check traced == eager on ``example`` and ``check_images``.

    ``model`` is a detectron2 R-CNN (wrapped by :func:`traceable_detector`, BatchNorm folded, and checked
    against ``model`` with :func:`check_fusion` on the images) or a :func:`traceable_detector` module. Raises
    :class:`ExportError` naming the image and the output that differs.
    """
    module = model if isinstance(model, TraceableDetector) else traceable_detector(model)
    module.eval()
    _check_image(example, "example image")
    images = [example] + list(check_images)
    for i, image in enumerate(images):
        _check_image(image, f"check image {i}")
    if module.fused:
        for i, image in enumerate(images):
            problem = check_fusion(module.unfused, module.model, image.flip(0) if module.flip_to_rgb else image)
            if problem:
                raise ExportError(f"BatchNorm folding changed the detector on image {i}: {problem}")
    with torch.no_grad(), patch_builtin_len(), quiet_tracer():
        try:
            traced = torch.jit.trace(module, (example,), check_trace=False)
        except Exception as e:  # tracer errors are long; keep the first line
            raise ExportError(f"torch.jit.trace failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    with torch.no_grad(), quiet_tracer():
        for i, image in enumerate(images):
            eager_out = module(image)
            traced_out = traced(image)
            problem = compare_detections(eager_out, traced_out, atol=atol)
            if problem:
                raise ExportError(
                    f"traced detector disagrees with eager on image {i} of shape {tuple(image.shape)}: {problem}"
                )
    return traced


def stage_outputs(model: nn.Module, image: Tensor, proposals=None) -> Dict[str, Tensor]:
    """The detector's outputs before any top-k, NMS or score threshold, for one (3, H, W) image in the
    model's own ``INPUT.FORMAT``: the backbone features (``"feature:<name>"``), the RPN head's objectness
    logits and anchor deltas (``"rpn_objectness"``, ``"rpn_deltas"``, concatenated over levels) and the box
    head's class logits and box deltas (``"box_scores"``, ``"box_deltas"``) on ``proposals`` (detectron2
    ``Instances`` with ``proposal_boxes``; default: the model's own proposals, returned as ``"proposals"``)."""
    model = unwrap_parallel(model).eval()
    with torch.no_grad(), quiet_tracer():
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        out: Dict[str, Tensor] = {f"feature:{k}": v for k, v in features.items()}
        rpn = model.proposal_generator
        rpn_features = [features[f] for f in rpn.in_features]
        objectness, deltas = rpn.rpn_head(rpn_features)
        out["rpn_objectness"] = torch.cat([o.flatten(1) for o in objectness], dim=1)
        out["rpn_deltas"] = torch.cat([d.flatten(1) for d in deltas], dim=1)
        if proposals is None:
            proposals, _ = rpn(images, features, None)
        heads = model.roi_heads
        boxes = [p.proposal_boxes for p in proposals]
        if hasattr(heads, "_stage4_pooled"):  # ShuffleNetROIHeads (C4)
            x = heads._stage4_pooled(heads.pooler([features[f] for f in heads.in_features], boxes))
        else:  # detectron2's StandardROIHeads (FPN)
            x = heads.box_head(heads.box_pooler([features[f] for f in heads.box_in_features], boxes))
        scores, box_deltas = heads.box_predictor(x)
        out["box_scores"], out["box_deltas"] = scores, box_deltas
        out["proposals"] = proposals
    return out


#: float32 rounding: a folded convolution computes ``sum(w*s*x) + b`` where the model computes
#: ``s*sum(w*x) + b``; each is exact to ~1e-7 relative per operation, so a stage output differs by some
#: 1e-7 of the magnitudes that were summed, growing with depth (~50 layers here). 1e-4 of the output's range
#: leaves a wide margin over that and is still far below any real change (a dropped BatchNorm shift is
#: ~10% of the range).
FUSION_RTOL = 1e-4


def check_fusion(unfused: nn.Module, fused: nn.Module, image: Tensor, rtol: float = FUSION_RTOL) -> Optional[str]:
    """``None`` if the BatchNorm-folded detector computes what the model does on ``image`` ((3, H, W) in the
    model's INPUT.FORMAT), else what differs.

    Compares :func:`stage_outputs`, the box head on the *same* proposals, each output within ``rtol`` of its
    largest magnitude (see :data:`FUSION_RTOL`)."""
    a = stage_outputs(unfused, image)
    b = stage_outputs(fused, image, proposals=a["proposals"])
    for key, ref in a.items():
        if key == "proposals":
            continue
        got = b[key]
        if ref.shape != got.shape:
            return f"{key}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
        bound = rtol * max(float(ref.abs().max()), 1e-6)
        err = float((got - ref).abs().max()) if ref.numel() else 0.0
        if not err <= bound:
            return f"{key}: max difference {err:.3g} > {bound:.3g} ({rtol:g} of its largest magnitude)"
    return None


def save_traced(traced: torch.jit.ScriptModule, path: os.PathLike) -> Path:
    """``torch.jit.save`` through :func:`shufflenet.fileio.atomic_write` (never a half-written file)."""
    with atomic_write(path, "wb") as f:
        torch.jit.save(traced, f)
    return Path(path)
