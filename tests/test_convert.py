"""Converters for the public ShuffleNet v1 checkpoints give the original network's logits.

The original networks are re-built here from their published layouts (docs/weights.md; small reference
modules with the original key names, shuffle placement/permutation and input convention), given random
weights and random BN statistics, saved in the original file format, converted, and compared on a real
CIFAR-10 image (resized) that each network receives in its own input convention.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from shufflenet import WeightsError, create_model, load_weights
from shufflenet.convert import convert_megvii, convert_mmpretrain, load_converted
from shufflenet.convert.checkpoints import cli, count_matrix, main
from shufflenet.models import shuffle_permutation

DATA = Path(__file__).resolve().parent / "data" / "cifar10"  # real CIFAR-10 JPEGs the repository carries
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
MM_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
MM_STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
TOL = 1e-4  # max |logit difference| of a converted model, computed in float64 (the conversion's exactness)
F32_RTOL = 1e-5  # float32 forward passes: rounding differs between the two layouts, relative to max |logit|

# megvii's published sizes: (g, width) -> [stem, stage2, stage3, stage4]
MEGVII_WIDTHS = {
    (3, 0.5): [12, 120, 240, 480],
    (3, 1.0): [24, 240, 480, 960],
    (3, 1.5): [24, 360, 720, 1440],
    (3, 2.0): [48, 480, 960, 1920],
    (8, 0.5): [16, 192, 384, 768],
    (8, 1.0): [24, 384, 768, 1536],
    (8, 1.5): [24, 576, 1152, 2304],
    (8, 2.0): [48, 768, 1536, 3072],
}


# ------------------------------------------------------------------------------------------------
# Reference networks, written from the layout description
# ------------------------------------------------------------------------------------------------
def conv(cin, cout, k, stride=1, groups=1):
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)


class MegviiBlock(nn.Module):
    def __init__(self, inp, oup, group, first_group, mid, stride):
        super().__init__()
        self.stride, self.group = stride, group
        outputs = oup - inp if stride == 2 else oup
        self.branch_main_1 = nn.Sequential(
            conv(inp, mid, 1, groups=1 if first_group else group),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            conv(mid, mid, 3, stride, groups=mid),
            nn.BatchNorm2d(mid),
        )
        self.branch_main_2 = nn.Sequential(conv(mid, outputs, 1, groups=group), nn.BatchNorm2d(outputs))
        self.branch_proj = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x):
        y = self.branch_main_1(x)
        if self.group > 1:  # AFTER depthwise + BN, megvii's permutation: (c/g, g) -> (g, c/g)
            b, c, h, w = y.shape
            y = y.reshape(b, c // self.group, self.group, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
        y = self.branch_main_2(y)
        if self.stride == 1:
            return F.relu(x + y)
        return torch.cat((self.branch_proj(x), F.relu(y)), 1)


class MegviiShuffleNetV1(nn.Module):
    """Input: BGR, 0-255, no normalization."""

    def __init__(self, group, widths, n_class=1000):
        super().__init__()
        stem, outs = widths[0], widths[1:]
        self.first_conv = nn.Sequential(conv(3, stem, 3, 2), nn.BatchNorm2d(stem), nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, inp = [], stem
        for s, (oup, reps) in enumerate(zip(outs, [4, 8, 4])):
            for i in range(reps):
                blocks.append(
                    MegviiBlock(
                        inp, oup, group, first_group=(s == 0 and i == 0), mid=oup // 4, stride=2 if i == 0 else 1
                    )
                )
                inp = oup
        self.features = nn.Sequential(*blocks)
        self.globalpool = nn.AvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(inp, n_class, bias=False))

    def forward(self, x):
        x = self.features(self.maxpool(self.first_conv(x)))
        # 7x7 average pool at 224 input; the same global mean at the smaller test sizes.
        x = self.globalpool(x) if x.shape[-1] == 7 else x.mean((2, 3), keepdim=True)
        return self.classifier(x.flatten(1))


class MMConvModule(nn.Module):
    def __init__(self, cin, cout, k, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = conv(cin, cout, k, stride, groups)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.act else x


class MMShuffleUnit(nn.Module):
    def __init__(self, cin, cout, groups, first_block, stride):
        super().__init__()
        self.groups, self.stride = groups, stride
        mid = cout // 4  # before subtracting the input width
        branch = cout - cin if stride == 2 else cout
        self.g_conv_1x1_compress = MMConvModule(cin, mid, 1, groups=1 if first_block else groups)
        self.depthwise_conv3x3_bn = MMConvModule(mid, mid, 3, stride, groups=mid, act=False)
        self.g_conv_1x1_expand = MMConvModule(mid, branch, 1, groups=groups, act=False)
        self.avgpool = nn.AvgPool2d(3, 2, 1)

    def forward(self, x):
        out = self.depthwise_conv3x3_bn(self.g_conv_1x1_compress(x))
        if self.groups > 1:  # AFTER depthwise + BN (also in the first unit), the paper's permutation
            b, c, h, w = out.shape
            out = out.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)
        out = self.g_conv_1x1_expand(out)
        if self.stride == 2:
            return torch.cat((self.avgpool(x), F.relu(out)), 1)
        return F.relu(x + out)


class MMBackbone(nn.Module):
    def __init__(self, groups=3, widen=1.0):
        super().__init__()
        outs = [int(round(c * widen / 8) * 8) for c in (240, 480, 960)]
        stem = int(24 * widen)
        self.conv1 = MMConvModule(3, stem, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layers = nn.ModuleList()
        cin = stem
        for s, (cout, reps) in enumerate(zip(outs, [4, 8, 4])):
            units = []
            for i in range(reps):
                units.append(
                    MMShuffleUnit(cin, cout, groups, first_block=(s == 0 and i == 0), stride=2 if i == 0 else 1)
                )
                cin = cout
            self.layers.append(nn.Sequential(*units))
        self.out_channels = cin

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        for layer in self.layers:
            x = layer(x)
        return x


class MMHead(nn.Module):
    def __init__(self, cin, n_class):
        super().__init__()
        self.fc = nn.Linear(cin, n_class)


class MMShuffleNetV1(nn.Module):
    """Input: RGB, (0-255 - mean) / std."""

    def __init__(self, groups=3, n_class=1000):
        super().__init__()
        self.backbone = MMBackbone(groups)
        self.head = MMHead(self.backbone.out_channels, n_class)

    def forward(self, x):
        return self.head.fc(self.backbone(x).mean((2, 3)))


# ------------------------------------------------------------------------------------------------
# Data, random weights, the three input conventions
# ------------------------------------------------------------------------------------------------
def cifar_images(size, n=1, offset=0):
    files = sorted(DATA.glob("test/*/*.jpg"))
    per_class = len(files) // 10
    assert per_class, f"no CIFAR test images under {DATA}"
    files = files[offset * per_class :: per_class][:n]  # one image per class, from class `offset` on
    imgs = []
    for f in files:
        im = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
        imgs.append(torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, 3))
    return torch.stack(imgs).permute(0, 3, 1, 2).float() / 255.0  # RGB, 0-1


def to_ours(img):
    return (img - MEAN) / STD


def to_megvii(img):
    return (img * 255.0)[:, [2, 1, 0]]


def to_mm(img):
    return (img * 255.0 - MM_MEAN) / MM_STD


@torch.no_grad()
def randomize(net, calib, seed):
    """Random weights; BN statistics measured on real images, then perturbed (all non-trivial)."""
    gen = torch.Generator().manual_seed(seed)
    bns = []
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
            m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))
            m.momentum = 1.0
            bns.append(m)
    net.train()
    net(calib)
    for m in bns:
        std = m.running_var.sqrt()
        m.running_mean.add_(0.2 * std * torch.randn(m.running_mean.shape, generator=gen))
        m.running_var.mul_(0.7 + 0.6 * torch.rand(m.running_var.shape, generator=gen))
        m.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=gen)))
        m.momentum = 0.1
    # Random weights give logits in the hundreds; trained ImageNet ShuffleNets give logits within about
    # +-30. Rescale the classifier to that range, so the absolute bound TOL means what it means on real
    # weights (float32 rounding grows with the logits' magnitude; the conversion itself is exact).
    net.eval()
    fc = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    scale = 20.0 / net(calib).abs().max()
    fc.weight.mul_(scale)
    if fc.bias is not None:
        fc.bias.mul_(scale)
    return net


def save_megvii(net, path):
    sd = {f"module.{k}": v.clone() for k, v in net.state_dict().items()}
    torch.save({"state_dict": sd}, path)
    return path


def save_mm(net, path):
    meta = {"mmpretrain_version": "1.0.0", "epoch": 300, "CLASSES": [f"c{i}" for i in range(3)]}
    torch.save({"meta": meta, "state_dict": {k: v.clone() for k, v in net.state_dict().items()}}, path)
    return path


def megvii_case(tmp_path, g, width, seed):
    ref = MegviiShuffleNetV1(g, MEGVII_WIDTHS[(g, width)])
    randomize(ref, to_megvii(cifar_images(64, n=4, offset=1)), seed)
    return ref, save_megvii(ref, tmp_path / f"snetv1_group{g}_{width}x.pth.tar")


# ------------------------------------------------------------------------------------------------
# Exactness
# ------------------------------------------------------------------------------------------------
def _compare(ref, to_ref, model, img):
    """Max |logit difference| in float64 and in float32 (modules are restored to float32)."""
    with torch.no_grad():
        want = ref(to_ref(img))
        diff32 = (want - model(to_ours(img))).abs().max().item()
        ref.double(), model.double()
        diff = (ref(to_ref(img.double())) - model(to_ours(img).double())).abs().max().item()
        ref.float(), model.float()
    return diff, diff32, want


# (g, width, input size): 224 where the 7x7 pool / published eval size matters; odd sizes also check the
# bottom/right border, where megvii's zero padding meets the image.
MEGVII_CASES = [
    (3, 0.5, 224),
    (3, 1.0, 224),
    (3, 1.5, 97),
    (3, 2.0, 65),
    (8, 0.5, 224),
    (8, 1.0, 224),
    (8, 1.5, 97),
    (8, 2.0, 65),
]


@pytest.mark.parametrize("g,width,size", MEGVII_CASES, ids=[f"g{g}-{w}x-{s}" for g, w, s in MEGVII_CASES])
def test_megvii_converted_logits_match(tmp_path, g, width, size):
    ref, path = megvii_case(tmp_path, g, width, seed=100 * g + int(10 * width))
    model, meta = convert_megvii(path)
    img = cifar_images(size, n=1, offset=3)
    diff, diff32, want = _compare(ref, to_megvii, model, img)
    print(
        f"\nCONVERT megvii g={g} {width}x input {size}: max|logit diff| = {diff:.2e} float64, {diff32:.2e} "
        f"float32 (logits up to {want.abs().max().item():.1f}, shuffle_inverse={meta['shuffle_inverse']})"
    )
    assert diff < TOL and diff32 < F32_RTOL * want.abs().max()
    assert want.abs().max() > 1.0  # not a degenerate network
    # The permutation decision: megvii's shuffle fits the paper's for g=3 and for g=8 only at 2.0x.
    assert meta["shuffle_inverse"] == (g == 8 and width != 2.0)
    assert model.shuffle_inverse == meta["shuffle_inverse"]
    assert meta["stem_channels"] == MEGVII_WIDTHS[(g, width)][0]
    assert meta["stage_out_channels"] == MEGVII_WIDTHS[(g, width)][1:]
    assert meta["published"]["top1_err"] > 0 and meta["sha256"] and meta["layout"] == "megvii"


def test_mmpretrain_converted_logits_match(tmp_path):
    ref = MMShuffleNetV1(3)
    randomize(ref, to_mm(cifar_images(64, n=4, offset=1)), seed=7)
    path = save_mm(ref, tmp_path / "shufflenet_v1_batch1024_imagenet.pth")
    model, meta = convert_mmpretrain(path)
    img = cifar_images(224, n=1, offset=5)
    diff, diff32, want = _compare(ref, to_mm, model, img)
    print(f"\nCONVERT mmpretrain g=3 1.0x input 224: max|logit diff| = {diff:.2e} float64, {diff32:.2e} float32")
    assert diff < TOL and diff32 < F32_RTOL * want.abs().max() and want.abs().max() > 1.0
    # Same input space as ours, paper permutation: the plain registry model, loadable by its name.
    assert meta["arch"] == "shufflenet_v1_x1_0_g3" and not model.shuffle_inverse and model.input_shift is None
    assert meta["published"]["top1_err"] == pytest.approx(31.87)


def test_cli_writes_a_weights_file_that_reloads(tmp_path, capsys):
    ref = MMShuffleNetV1(3)
    randomize(ref, to_mm(cifar_images(48, n=4, offset=1)), seed=11)
    src = save_mm(ref, tmp_path / "mm.pth")
    out = tmp_path / "out" / "mm_g3_1x.pth"
    assert main([str(src), "--format", "auto", "--out", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out.rsplit("wrote", 1)[0])
    assert meta["layout"] == "mmpretrain" and meta["sha256"] and meta["source"] == str(src)
    stored = torch.load(out, weights_only=True)
    assert stored["meta"]["sha256"] == meta["sha256"] and stored["arch"] == "shufflenet_v1_x1_0_g3"
    img = to_ours(cifar_images(80, n=1, offset=6))
    by_name = create_model("shufflenet_v1_x1_0_g3", weights=str(out)).eval()
    with torch.no_grad():
        want = ref(to_mm(cifar_images(80, n=1, offset=6)))
        assert (by_name(img) - want).abs().max() < F32_RTOL * want.abs().max()
        assert (load_converted(out)(img) - want).abs().max() < F32_RTOL * want.abs().max()


def test_cli_megvii_file_rebuilds_from_config(tmp_path, capsys):
    ref, src = megvii_case(tmp_path, 8, 0.5, seed=3)
    out = tmp_path / "g8.pth"
    assert main([str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "shuffle_inverse=True" in text and "megvii" in text
    model = load_converted(out)
    assert model.stem_channels == 16 and model.shuffle_inverse
    img = cifar_images(64, n=1, offset=7)
    with torch.no_grad():
        want = ref(to_megvii(img))
        assert (model(to_ours(img)) - want).abs().max() < F32_RTOL * want.abs().max()
    # The registry's g8 0.5x has another stem and shuffle: a strict load says which key does not fit.
    with pytest.raises(WeightsError, match="input_shift|conv1.0.weight"):
        load_weights(create_model("shufflenet_v1_x0_5_g8"), out)
    # ... while the one reader builds the file's own network, by no name or by a name it is compatible with
    for built in (create_model(None, weights=out), create_model("shufflenet_v1_x0_5_g8", weights=out)):
        with torch.no_grad():
            assert (built.eval()(to_ours(img)) - want).abs().max() < F32_RTOL * want.abs().max()
    with pytest.raises(WeightsError, match="groups=8 in the file, 3 for shufflenet_v1_x0_5_g3"):
        create_model("shufflenet_v1_x0_5_g3", weights=out)


def test_exact_megvii_file_loads_by_name_with_its_input_shift(tmp_path):
    """A converted megvii checkpoint (exact border: input_shift) loads through create_model(name, weights=)."""
    ref, src = megvii_case(tmp_path, 3, 1.0, seed=9)
    out = tmp_path / "g3.pth"
    assert main([str(src), "--out", str(out)]) == 0
    model = create_model("shufflenet_v1_x1_0_g3", weights=out).eval()
    assert model.input_shift is not None
    img = cifar_images(64, n=2, offset=2)
    with torch.no_grad():
        want = ref(to_megvii(img))
        assert (model(to_ours(img)) - want).abs().max() < F32_RTOL * want.abs().max()


def test_original_public_checkpoint_is_converted_on_read(tmp_path, monkeypatch):
    """Every loader takes the file as published: the one reader converts it (and caches the conversion)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ref, path = megvii_case(tmp_path, 3, 1.0, seed=13)
    img = cifar_images(64, n=1, offset=4)
    with torch.no_grad():
        want = ref(to_megvii(img))
    for call in (
        lambda: create_model("shufflenet_v1_x1_0_g3", weights=path),
        lambda: create_model(None, weights=path),
    ):
        with torch.no_grad():
            assert (call().eval()(to_ours(img)) - want).abs().max() < F32_RTOL * want.abs().max()
    # a plain registry model has no input_shift: megvii's input space needs the file's own network
    with pytest.raises(WeightsError, match="unexpected key 'input_shift.shift'"):
        load_weights(create_model("shufflenet_v1_x1_0_g3"), path)


def test_approx_border_is_exact_inside_and_loads_by_name(tmp_path):
    """Without input_shift the mean offset goes into the stem BN: exact away from the top/left border."""
    ref, path = megvii_case(tmp_path, 3, 1.0, seed=5)
    model, meta = convert_megvii(path, exact_border=False)
    assert meta["arch"] == "shufflenet_v1_x1_0_g3" and model.input_shift is None and not meta["exact"]
    load_weights(create_model("shufflenet_v1_x1_0_g3"), _save(model, tmp_path / "a.pth"))
    img = cifar_images(64, n=1, offset=8)
    with torch.no_grad():
        want = ref.first_conv(to_megvii(img))
        got = model.conv1(to_ours(img))
        inner = (want - got)[..., 1:, 1:].abs().max().item()
        border = (want - got).abs().max().item()
        logit = (ref(to_megvii(img)) - model(to_ours(img))).abs().max().item()
    print(
        f"\nCONVERT megvii g=3 1.0x approx border, input 64: stem interior {inner:.1e}, "
        f"stem border {border:.1e}, logits {logit:.1e}"
    )
    assert inner < 1e-4 * want.abs().max()
    assert border > 1e-2  # the residual is real: this is why input_shift exists


def _save(model, path):
    from shufflenet import save_weights

    return save_weights(model, path)


def test_count_matrix_decides_rewriting():
    # The paper's permutation sends channel counts N[A, B] = megvii's N[B, A] (the inverse permutation).
    for m, g in ((96, 8), (60, 3), (48, 8)):
        paper = count_matrix(torch.argsort(shuffle_permutation(m, g)), g, g)
        megvii = count_matrix(torch.argsort(shuffle_permutation(m, m // g)), g, g)
        assert torch.equal(paper, megvii.t())
        assert paper.sum() == m and (paper.sum(1) == m // g).all()
    # g=8, mid 96 (1.0x stage 2): 12 channels per group are not symmetric -> not rewritable.
    m = 96
    megvii = count_matrix(torch.argsort(shuffle_permutation(m, m // 8)), 8, 8)
    assert not torch.equal(megvii, megvii.t())


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def megvii_sd():
    ref = MegviiShuffleNetV1(3, MEGVII_WIDTHS[(3, 0.5)])
    return {f"module.{k}": v for k, v in ref.state_dict().items()}


def test_wrong_shape_names_key_and_both_shapes(megvii_sd):
    sd = dict(megvii_sd)
    key = "module.features.6.branch_main_2.0.weight"
    sd[key] = torch.zeros(240, 19, 1, 1)
    with pytest.raises(WeightsError) as e:
        convert_megvii({"state_dict": sd})
    msg = str(e.value)
    assert "features.6.branch_main_2.0.weight" in msg and "(240, 19, 1, 1)" in msg and "(240, 20, 1, 1)" in msg


def test_missing_and_unexpected_keys(megvii_sd):
    sd = {k: v for k, v in megvii_sd.items() if k != "module.features.3.branch_main_1.4.running_var"}
    with pytest.raises(WeightsError, match=r"missing key 'features\.3\.branch_main_1\.4\.running_var'"):
        convert_megvii({"state_dict": sd})
    sd = dict(megvii_sd, **{"module.classifier.0.bias": torch.zeros(1000)})
    with pytest.raises(WeightsError, match=r"unexpected key 'classifier\.0\.bias'"):
        convert_megvii({"state_dict": sd})


def test_unknown_layout_lists_expected_patterns(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}, path)
    with pytest.raises(WeightsError) as e:
        convert_megvii(path)
    msg = str(e.value)
    assert "unknown checkpoint layout" in msg and "first_conv" in msg and "backbone.layers.{s}.{i}" in msg


def test_wrong_format_and_unreadable_file(tmp_path, megvii_sd, capsys):
    with pytest.raises(WeightsError, match="asked for the mmpretrain layout but the keys are megvii's"):
        convert_mmpretrain({"state_dict": megvii_sd})
    bad = tmp_path / "truncated.pth.tar"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "never.pth"
    assert cli([str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "truncated.pth.tar" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".never.pth*"))
    assert cli([str(tmp_path / "absent.pth"), "--out", str(out)]) == 2
    assert "no such weights file" in capsys.readouterr().err
