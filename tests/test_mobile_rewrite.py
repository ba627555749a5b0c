"""Export-time rewrites (shufflenet.mobile.rewrite): the same function as the eager backbone, and faster forms
really present in the exported files; the camera-frame option equals the float model on the normalized frame."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from bounds import FP32, assert_recorded_within
from conftest import _randomize_bn

import shufflenet
from shufflenet.mobile.rewrite import (
    CameraInput,
    FastShuffleNet,
    RewriteOptions,
    _maxpool_slices,
    for_runtime,
    reshape_shuffle,
    with_reshape_shuffles,
)
from shufflenet.mobile.verify import frame_reference
from shufflenet.models.shufflenet import ChannelShuffle, shuffle_permutation


def _net(name="shufflenet_v1_x0_25_g3", **kw):
    torch.manual_seed(0)
    return _randomize_bn(shufflenet.create_model(name, **kw))


def test_maxpool_slices_equal_max_pool2d_bit_for_bit():
    torch.manual_seed(0)
    for h, w in [(8, 8), (7, 9), (112, 112), (33, 64)]:
        x = torch.randn(2, 5, h, w)  # negative values too: the padding is -inf like max_pool2d's
        for t in (x, x.contiguous(memory_format=torch.channels_last)):
            assert torch.equal(_maxpool_slices(t), F.max_pool2d(t, 3, 2, 1))


def test_shuffle_permutation_matches_channel_shuffle():
    z = torch.randn(1, 12, 3, 3)
    perm = shuffle_permutation(12, 3)
    assert torch.equal(F.channel_shuffle(z, 3), z[:, perm])
    assert sorted(perm.tolist()) == list(range(12)) and perm.tolist() != list(range(12))


def test_reshape_form_of_the_shuffle_is_the_same_permutation():
    """The form pnnx (ncnn) converts: bit-exact with the native op, and swapped into any model's shuffles."""
    for g in (2, 3, 8):
        z = torch.randn(2, 4 * g, 5, 7)
        assert torch.equal(reshape_shuffle(z, g), F.channel_shuffle(z, g))
    net = _net().eval()
    features = shufflenet.create_model("shufflenet_v1_x0_25_g3", features_only=True).eval()
    for model, form in ((net, "reshape"), (features, "reshape"), (net, "module")):
        swapped = with_reshape_shuffles(model, form)
        assert swapped is not model and not any(type(m) is ChannelShuffle for m in swapped.modules())
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            a, b = model(x), swapped(x)
        for ta, tb in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            assert torch.equal(ta, tb)


@pytest.mark.parametrize(
    "opts",
    [
        RewriteOptions(),
        RewriteOptions(shortcut="pool", maxpool="slices", head="keepdim", shuffle_after_dw=False, branch_relu=False),
        RewriteOptions(shortcut="dwconv", maxpool="pool", head="mean", shuffle_after_dw=True, branch_relu=True),
    ],
)
@pytest.mark.parametrize(
    "name, kw",
    [
        ("shufflenet_v1_x0_25_g3", {}),
        ("shufflenet_v1_x0_5_g8", {}),
        ("shufflenet_v1_x0_25_g3", {"shuffle": False}),
        ("shufflenet_v1_x0_25_g3", {"shuffle_inverse": True, "input_shift": [0.1, -0.2, 0.3]}),
    ],
)
def test_rewritten_network_computes_the_same_function(opts, name, kw):
    model = _net(name, **kw)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = FastShuffleNet(model, opts).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        ref = model(x)
        assert ref.abs().max() > 0.1
        torch.testing.assert_close(fast(x), ref, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), ref, atol=2e-5, rtol=1e-5)
    # The backbone the rewrite read from is untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_for_runtime_leaves_other_models_alone():
    alexnet = shufflenet.create_model("alexnet").eval()
    assert for_runtime(alexnet, "ptl") is alexnet
    assert isinstance(for_runtime(_net(), "pte"), FastShuffleNet)


def test_camera_input_equals_float_model_on_normalized_frame_including_border():
    for kw in ({}, {"input_shift": [0.5, -0.25, 0.125]}):
        model = _net(**kw)
        cam = CameraInput(for_runtime(model, "ptl")).eval()
        gen = torch.Generator().manual_seed(1)
        frames = torch.randint(0, 256, (2, 40, 56, 3), generator=gen, dtype=torch.uint8)
        frames[:, :3] = 0  # black rows at the border: the padding must mean the same pixel as in the float model
        frames[:, -2:] = 255
        with torch.no_grad():
            ref = frame_reference(model)(frames)
            torch.testing.assert_close(cam(frames), ref, atol=5e-5, rtol=1e-5)


@pytest.mark.slow
def test_exported_files_carry_the_fast_forms(tmp_path):
    """The .ptl has the shortcut pool as an XNNPACK conv and no max_pool2d_with_indices-backed op; the .pte
    is one XNNPACK delegate (pooling head included); both verified against the eager backbone."""
    from shufflenet.mobile import ExportSpec, export
    from shufflenet.mobile.source import ModelSource

    model = _net()
    src = ModelSource(model, "tiny", "test")
    _, plain = export(
        "ptl", src, tmp_path / "plain", ExportSpec([(64, 64)], images=None, rewrite=False, log=lambda s: None)
    )
    _, fast = export("ptl", src, tmp_path / "fast", ExportSpec([(64, 64)], images="auto", n_real=1, log=lambda s: None))
    assert "aten::max_pool2d" in plain["operators"] and "aten::avg_pool2d" in plain["operators"]
    assert "aten::max_pool2d" not in fast["operators"] and "aten::avg_pool2d" not in fast["operators"]
    assert fast["rewrite"]
    assert_recorded_within(fast["verification"]["checks"], FP32)  # the test's bound, not the sidecar's ok
    assert fast["verification"]["images"].endswith("images")  # the package's sample photos by default
    assert [c["input"].split(" ")[0] for c in fast["verification"]["checks"]] == ["random", "real"]
    on_disk = json.loads((tmp_path / "fast" / "tiny.json").read_text())
    assert on_disk["rewrite"] == fast["rewrite"]
