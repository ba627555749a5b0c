"""TorchScript export of the detector: traced outputs match eager on real COCO images (tiny_coco val2017)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

import shufflenet.detection as det  # noqa: E402
from shufflenet.detection.export import ExportError, save_traced, trace_detector, traceable_detector  # noqa: E402

TINY_COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny_coco"
VAL = TINY_COCO / "val2017"

pytestmark = pytest.mark.skipif(not VAL.is_dir(), reason=f"real COCO slice not found at {TINY_COCO}")


def _real_images(cfg, count=3):
    """Real val2017 images, BGR 0-255, resized as detectron2's test-time ResizeShortestEdge does."""
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image

    aug = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    images = []
    for path in sorted(VAL.glob("*.jpg"))[:count]:
        img = read_image(str(path), format="BGR")
        img = aug.get_transform(img).apply_image(img)
        images.append(torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1))).float())
    return images


@pytest.mark.slow
@pytest.mark.parametrize("config", ["coco_shufflenet1x_300", "coco_shufflenet1x_fpn"])
def test_traced_detector_matches_eager_on_real_images(config, tmp_path):
    torch.manual_seed(0)
    model, cfg = det.build_detector(
        config,
        opts=["MODEL.SHUFFLENET.NAME", "shufflenet_v1_x0_25_g3", "INPUT.MIN_SIZE_TEST", "160",
              "INPUT.MAX_SIZE_TEST", "256", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
              "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],  # random heads: keep low scores, so N > 0
    )
    images = _real_images(cfg)
    assert len({tuple(i.shape) for i in images}) >= 2  # checks run on sizes other than the traced one
    traced = trace_detector(model, images[0], images[1:])
    module = traceable_detector(model)
    with torch.no_grad():
        boxes, scores, classes = module(images[1])
    assert boxes.shape[1] == 4 and boxes.shape[0] == scores.shape[0] == classes.shape[0] > 0
    assert classes.dtype == torch.int64 and scores.dtype == torch.float32
    # The module takes BGR and gives the eager model's own predictions (in the resized image's frame).
    with torch.no_grad():
        rgb = images[1].flip(0) if model.input_format == "RGB" else images[1]
        ref = model.inference([{"image": rgb}], do_postprocess=False)[0]
    assert torch.equal(ref.pred_boxes.tensor, boxes) and torch.equal(ref.pred_classes, classes)
    # Saved and loaded again, it still agrees with eager.
    path = save_traced(traced, tmp_path / "detector.ts")
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        out = loaded(images[2])
        eager = module(images[2])
    assert all(torch.allclose(a.float(), b.float(), atol=1e-3) for a, b in zip(out, eager))


def test_trace_detector_rejects_bad_input():
    model, _ = det.build_detector("coco_shufflenet1x_300", opts=["MODEL.SHUFFLENET.NAME", "shufflenet_v1_x0_25_g3"])
    with pytest.raises(ExportError, match=r"shape \(3, H, W\).*\(1, 3, 64, 64\)"):
        trace_detector(model, torch.zeros(1, 3, 64, 64))
    with pytest.raises(ExportError, match="GeneralizedRCNN"):
        traceable_detector(torch.nn.Linear(2, 2))
