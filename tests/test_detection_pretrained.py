"""detectron2's ``MODEL.WEIGHTS`` takes the published ImageNet weights by name (``shufflenet://...``) or URL."""

from __future__ import annotations

import pytest
import torch
from test_convert import MMShuffleNetV1, cifar_images, randomize, save_mm, to_mm  # noqa: E402
from weights_server import WeightsServer, hashed_copy, point_weights_at  # noqa: E402

import shufflenet.detection as det  # noqa: E402
from shufflenet import ShuffleNet_V1_X1_0_G3_Weights  # noqa: E402
from shufflenet.convert import convert_mmpretrain  # noqa: E402
from shufflenet.detection.checkpoint import weights_path  # noqa: E402

ENTRY = ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN
OPTS = ["MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.DEVICE", "cpu"]


@pytest.mark.parametrize(
    "spelling",
    ["shufflenet://shufflenet_v1_x1_0_g3/IMAGENET1K_MMPRETRAIN", "shufflenet://shufflenet_v1_x1_0_g3", "url"],
)
def test_model_weights_names_the_public_imagenet_weights(tmp_path, monkeypatch, spelling):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ref = MMShuffleNetV1(3)
    randomize(ref, to_mm(cifar_images(64, n=4, offset=1)), seed=51)
    served = hashed_copy(save_mm(ref, tmp_path / "mm.pth"), tmp_path / "www", "shufflenet_v1_test_imagenet")
    with WeightsServer(served.parent) as server:
        url = point_weights_at(monkeypatch, server, ENTRY, served.name)
        value = url if spelling == "url" else spelling
        model, cfg = det.build_detector("coco_shufflenet1x_300", opts=OPTS, weights=value)
        again = weights_path(value)  # what the trainer's early check reads: the local converted file
        assert server.requests == [served.name]  # downloaded once
    assert again.endswith(".shufflenet.pth")
    ours = convert_mmpretrain(served)[0].state_dict()
    sd = model.state_dict()
    assert torch.equal(sd["backbone.conv1.0.weight"], ours["conv1.0.weight"])
    assert torch.equal(sd["backbone.stage3.7.gconv2.0.weight"], ours["stage3.7.gconv2.0.weight"])
    assert torch.equal(sd["roi_heads.stage4.3.dwconv.0.weight"], ours["stage4.3.dwconv.0.weight"])


def test_unknown_weights_name_lists_the_spelling(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(Exception, match=r"shufflenet://shufflenet_v1_x1_0_g3/IMAGENET1K_MMPRETRAIN"):
        det.build_detector("coco_shufflenet1x_300", opts=OPTS, weights="shufflenet://shufflenet_v1_x0_5_g3")
