"""The ShuffleNet v1 backbone: channel shuffle, the unit, the network, its options and its errors."""

import pytest
import timm
import torch
import torch.nn.functional as F

import shufflenet
from shufflenet import InvalidConfigError, ShuffleNetV1, ShuffleUnit, channel_shuffle, create_model, shufflenet_v1


def test_channel_shuffle_is_the_papers_permutation():
    g, n = 3, 4
    x = torch.arange(g * n, dtype=torch.float32).view(1, g * n, 1, 1)
    y = channel_shuffle(x, g).flatten().tolist()
    # reshape to (g, n), transpose to (n, g), flatten: output k = j*g + i holds input i*n + j
    expected = [i * n + j for j in range(n) for i in range(g)]
    assert y == expected
    # every output group of n consecutive channels holds channels from every input group
    for k in range(g):
        assert {int(c) // n for c in y[k * n : (k + 1) * n]} == set(range(g))


def test_channel_shuffle_inverse_and_gradients():
    x = torch.randn(2, 24, 5, 7, requires_grad=True)
    y = channel_shuffle(x, 3)
    assert torch.equal(channel_shuffle(y, 24 // 3), x)
    y.square().sum().backward()
    assert torch.allclose(x.grad, 2 * x)
    xl = x.detach().to(memory_format=torch.channels_last)
    assert torch.equal(channel_shuffle(xl, 3), channel_shuffle(x.detach(), 3))


def _branch_dependence(unit, groups, channels):
    """dep[i][j]: does output group j of GConv2 change when input group i of GConv1 changes?"""
    unit.eval()
    n = channels // groups
    x = torch.randn(1, channels, 6, 6)

    def branch(t):
        out = F.relu(unit.gconv1(t))
        return unit.gconv2(unit.dwconv(unit.shuffle(out)))

    base = branch(x)
    dep = torch.zeros(groups, groups, dtype=torch.bool)
    for i in range(groups):
        xp = x.clone()
        xp[:, i * n : (i + 1) * n] += 1.0 + torch.rand(1, n, 6, 6)
        diff = (branch(xp) - base).abs().view(1, groups, n, 6, 6).amax(dim=(0, 2, 3, 4))
        dep[i] = diff > 1e-6
    return dep


@pytest.mark.parametrize("groups", [2, 3, 4, 8])
def test_shuffle_connects_every_group(groups):
    torch.manual_seed(0)
    # Full mixing needs at least g channels per GConv1 group (mid / g >= g), true of every paper model.
    c, mid = 16 * groups, groups * max(groups, 4)
    with_shuffle = ShuffleUnit(c, c, mid, stride=1, groups=groups, shuffle=True)
    without = ShuffleUnit(c, c, mid, stride=1, groups=groups, shuffle=False)
    without.load_state_dict(with_shuffle.state_dict())
    assert _branch_dependence(with_shuffle, groups, c).all()
    assert torch.equal(_branch_dependence(without, groups, c), torch.eye(groups, dtype=torch.bool))


def test_table1_structure_and_any_input_size():
    m = shufflenet_v1(groups=3, width_mult=1.0).eval()
    assert m.stem_channels == 24
    assert m.stage_out_channels == (240, 480, 960)
    assert m.mid_channels == (60, 120, 240)
    assert [len(s) for s in m.stages()] == [4, 8, 4]
    first = m.stage2[0]
    assert first.gconv1[0].groups == 1 and first.shuffle.groups == 1  # stage-2 GConv1 not grouped
    assert m.stage2[1].gconv1[0].groups == 3 and m.stage3[0].gconv1[0].groups == 3
    assert first.gconv2[0].out_channels == 240 - 24  # stride 2: concat with the pooled input
    with torch.no_grad():
        for hw in [(224, 224), (480, 640), (97, 131)]:
            assert m(torch.randn(1, 3, *hw)).shape == (1, 1000)
        feats = m.forward_features(torch.randn(1, 3, 720, 1280))
    assert feats.shape == (1, 960, 23, 40)


@pytest.mark.parametrize(
    "groups,width,stem,out",
    [
        (3, 0.5, 12, (120, 240, 480)),  # megvii's published 0.5x g3 widths
        (3, 2.0, 48, (480, 960, 1920)),
        (8, 1.0, 24, (384, 768, 1536)),
        (8, 0.25, 8, (96, 192, 384)),
        (4, 0.5, 12, (136, 272, 544)),
        (1, 1.0, 24, (144, 288, 576)),
    ],
)
def test_width_rule(groups, width, stem, out):
    m = ShuffleNetV1(groups=groups, width_mult=width, num_classes=10)
    assert (m.stem_channels, m.stage_out_channels) == (stem, out)
    assert all(c % groups == 0 for c in (*m.mid_channels, *m.stage_out_channels))
    m(torch.randn(1, 3, 64, 64))


def test_options_shallow_noshuffle_se():
    m = ShuffleNetV1(groups=3, stage_repeats=(2, 4, 2), shuffle=False, se=True, num_classes=5)
    assert [len(s) for s in m.stages()] == [2, 4, 2]
    assert all(u.shuffle.groups == 1 for s in m.stages() for u in s)
    assert all(isinstance(u.se, shufflenet.SqueezeExcite) for s in m.stages() for u in s)
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    rebuilt = ShuffleNetV1(**m.config())
    rebuilt.load_state_dict(m.state_dict())


def test_bad_configs_say_why():
    with pytest.raises(InvalidConfigError, match=r"groups=5 has no Table-1 widths.*\[1, 2, 3, 4, 8\]"):
        ShuffleNetV1(groups=5)
    with pytest.raises(InvalidConfigError, match=r"stage_out_channels\[0\]=250 .* nearest valid values: \[249, 252\]"):
        ShuffleNetV1(groups=3, stage_out_channels=[250, 500, 1000])
    with pytest.raises(InvalidConfigError, match="stem_channels=12 is not divisible by groups=8"):
        ShuffleNetV1(groups=8, stem_channels=12)
    with pytest.raises(InvalidConfigError, match="width_mult must be > 0"):
        ShuffleNetV1(groups=3, width_mult=0)
    with pytest.raises(
        InvalidConfigError,
        match=r"groups=8, width_mult=0.02 is impossible: .*smallest valid width_mult for groups=8 is 0.04",
    ):
        ShuffleNetV1(groups=8, width_mult=0.02)
    ShuffleNetV1(groups=8, width_mult=0.04, num_classes=2).eval()(torch.randn(1, 3, 32, 32))  # the suggestion builds


def test_registry_names_and_errors():
    names = shufflenet.list_models("shufflenet_v1_*")
    assert "shufflenet_v1_x1_0_g3" in names and "shufflenet_v1_x2_0_g3_se" in names
    with pytest.raises(
        KeyError, match="unknown model name 'shufflenet_v1_x1_g3'.*Valid names: .*shufflenet_v1_x1_0_g3"
    ):
        create_model("shufflenet_v1_x1_g3")
    m = create_model("shufflenet_v1_x0_5_g8", num_classes=7)
    assert m.stage_out_channels == (192, 384, 768) and m.fc.out_features == 7


def test_timm_create_model_and_features_only():
    x = torch.randn(1, 3, 128, 160)
    m = timm.create_model("shufflenet_v1_x1_0_g3", num_classes=10)
    assert isinstance(m, ShuffleNetV1) and m(x).shape == (1, 10)
    f = timm.create_model("shufflenet_v1_x1_0_g3", features_only=True)
    assert f.feature_info.channels() == [240, 480, 960]
    assert f.feature_info.reduction() == [8, 16, 32]
    assert [o.shape[-2:] for o in f(x)] == [(16, 20), (8, 10), (4, 5)]
    f4 = shufflenet.create_model("shufflenet_v1_x0_5_g3", features_only=True, out_indices=(0, 1, 2, 3))
    assert f4.feature_info.channels() == [12, 120, 240, 480]


def test_script_and_trace_match_eager():
    m = create_model("shufflenet_v1_x0_5_g3").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = m(x)
        assert torch.allclose(torch.jit.script(m)(x), ref, atol=1e-5)
        assert torch.allclose(torch.jit.trace(m, x)(x), ref, atol=1e-5)


def test_weights_roundtrip_and_mismatch(tmp_path):
    m = create_model("shufflenet_v1_x0_5_g3", num_classes=10)
    path = shufflenet.save_weights(m, tmp_path / "w.pth", arch="shufflenet_v1_x0_5_g3")
    m2 = shufflenet_v1(groups=3, width_mult=0.5, num_classes=10, weights=str(path))
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    # torchvision's rule: the weights decide num_classes; asking for another count says how to get it
    assert shufflenet_v1(groups=3, width_mult=0.5, weights=str(path)).fc.out_features == 10
    with pytest.raises(shufflenet.ShuffleNetError, match=r"num_classes=1000: .* have 10 classes.*reset_classifier"):
        shufflenet_v1(groups=3, width_mult=0.5, num_classes=1000, weights=str(path))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(shufflenet.WeightsError, match="bad.pth: cannot be read"):
        shufflenet_v1(groups=3, width_mult=0.5, weights=str(tmp_path / "bad.pth"))
