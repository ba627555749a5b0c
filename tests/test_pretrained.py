"""Published weights in one call, with no network: a local HTTP server stands in for the download host.

The served file is an mmpretrain checkpoint in its published layout (the reference network of
tests/test_convert.py, random weights and BN statistics), named with its own sha256 prefix as torch.hub's
convention wants; ``SHUFFLENET_WEIGHTS_MIRROR`` points downloads at the server and ``TORCH_HOME`` at a
temporary folder. Every path (torchvision-style builder, create_model, torch.hub, timm) must give exactly the
model that converting the same file by hand gives.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from proc import run as watched_run
from test_convert import (
    MEGVII_WIDTHS,
    MegviiShuffleNetV1,
    MMShuffleNetV1,
    cifar_images,
    randomize,
    save_megvii,
    save_mm,
    to_megvii,
    to_mm,
    to_ours,
)
from weights_server import WeightsServer, hashed_copy, point_weights_at

import shufflenet
from shufflenet import ShuffleNet_V1_X1_0_G3_Weights, create_model, get_weight, shufflenet_v1
from shufflenet.convert import convert_megvii, convert_mmpretrain
from shufflenet.models import IMAGENET_CATEGORIES, UnknownWeightsError
from shufflenet.models.timm_models import NoPretrainedWeightsError
from shufflenet.paths import sample_images
from shufflenet.weights import DownloadError, checkpoints_dir, read_weights
from shufflenet.weights import io as weights_io

REPO = Path(__file__).resolve().parents[1]
ENTRY = ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN
NAME = "shufflenet_v1_x1_0_g3"


@pytest.fixture(scope="module")
def mm_file(tmp_path_factory):
    """(reference network, its checkpoint in mmpretrain's published layout)."""
    ref = MMShuffleNetV1(3)
    randomize(ref, to_mm(cifar_images(64, n=4, offset=1)), seed=21)
    return ref, save_mm(ref, tmp_path_factory.mktemp("mm") / "shufflenet_v1_original.pth")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("SHUFFLENET_WEIGHTS_MIRROR", raising=False)
    return home


@pytest.fixture
def served(tmp_path, torch_home, mm_file, monkeypatch):
    """The server with the mmpretrain file under a hash-prefixed name; the DEFAULT weights point at it."""
    _, src = mm_file
    served_file = hashed_copy(src, tmp_path / "www", "shufflenet_v1_test_imagenet")
    with WeightsServer(served_file.parent) as server:
        point_weights_at(monkeypatch, server, ENTRY, served_file.name)
        yield server, served_file


def _cache_files():
    folder = checkpoints_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _same_model(a, b, img):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        assert torch.equal(a.eval()(img), b.eval()(img))


def test_default_weights_download_convert_and_equal_the_conversion_by_hand(served, mm_file):
    server, served_file = served
    ref, src = mm_file
    model = shufflenet_v1(groups=3, weights="DEFAULT")
    assert server.requests == [served_file.name]
    by_hand, meta = convert_mmpretrain(served_file)
    img = to_ours(cifar_images(224, n=2, offset=4))
    _same_model(model, by_hand, img)
    with torch.no_grad():  # and the converted model is the original network
        want = ref(to_mm(cifar_images(224, n=2, offset=4)))
        assert (model(img) - want).abs().max() < 1e-5 * want.abs().max()
    # torch.hub's cache: the download under the URL's file name, the conversion next to it
    files = _cache_files()
    assert served_file.name in files and any(f.endswith(".shufflenet.pth") for f in files), files
    assert read_weights(checkpoints_dir() / served_file.name).meta["layout"] == "mmpretrain"


def test_second_load_makes_no_request_through_every_entry_point(served):
    server, served_file = served
    first = shufflenet_v1(groups=3, weights=ENTRY)
    img = to_ours(cifar_images(64, n=1, offset=2))
    for again in (
        create_model(NAME, weights="IMAGENET1K_MMPRETRAIN"),
        create_model(NAME, weights="ShuffleNet_V1_X1_0_G3_Weights.DEFAULT"),
        shufflenet.shufflenet_v1(weights=get_weight("ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN")),
        torch.hub.load(str(REPO), NAME, source="local", weights="DEFAULT"),
        torch.hub.load(str(REPO), NAME, source="local", pretrained=True),
        timm.create_model(NAME, pretrained=True),
    ):
        _same_model(first, again, img)
    sd = ENTRY.get_state_dict(progress=False)
    assert all(torch.equal(sd[k], v) for k, v in first.state_dict().items())
    assert server.requests == [served_file.name]  # one download for all of them


def test_timm_pretrained_goes_through_the_same_server(served):
    server, served_file = served
    model = timm.create_model(NAME, pretrained=True)
    assert server.requests == [served_file.name]
    img = to_ours(cifar_images(64, n=1, offset=6))
    _same_model(convert_mmpretrain(served_file)[0], model, img)
    assert model.pretrained_cfg["tag"] == "mmpretrain_in1k"
    # timm adapts the classifier and the input conv of converted weights like any other
    adapted = timm.create_model(NAME, pretrained=True, num_classes=5, in_chans=1)
    assert adapted.fc.out_features == 5 and adapted.conv1[0].in_channels == 1
    assert torch.equal(adapted.stage4[0].gconv1[0].weight, model.stage4[0].gconv1[0].weight)
    feats = timm.create_model(NAME, pretrained=True, features_only=True)
    assert [f.shape[1] for f in feats(img)] == [240, 480, 960]
    assert server.requests == [served_file.name]


def test_wrong_hash_is_refused_and_nothing_stays(tmp_path, torch_home, mm_file, monkeypatch):
    _, src = mm_file
    www = tmp_path / "www"
    www.mkdir()
    bad = www / "shufflenet_v1_test_imagenet-deadbeef.pth"  # the name's hash is not the content's
    bad.write_bytes(src.read_bytes())
    with WeightsServer(www) as server:
        point_weights_at(monkeypatch, server, ENTRY, bad.name)
        with pytest.raises(DownloadError, match=r"sha256 starts with [0-9a-f]{8}, not deadbeef .*nothing was kept"):
            shufflenet_v1(groups=3, weights="DEFAULT")
        assert server.requests == [bad.name]
    assert _cache_files() == []  # no file, no temporary file


@pytest.mark.parametrize("hashed", [True, False], ids=["hash-named", "no-hash-in-name"])
def test_a_server_that_closes_mid_transfer_leaves_nothing_that_loads(
    tmp_path, torch_home, mm_file, monkeypatch, hashed
):
    _, src = mm_file
    www = tmp_path / "www"
    if hashed:
        name = hashed_copy(src, www, "shufflenet_v1_test_imagenet").name
    else:  # only the size check can catch this one
        www.mkdir()
        name = "shufflenet_v1_test_imagenet.pth"
        (www / name).write_bytes(src.read_bytes())
    with WeightsServer(www) as server:
        server.truncate = {name}
        point_weights_at(monkeypatch, server, ENTRY, name)
        with pytest.raises(DownloadError, match="stopped after .* of .* bytes"):
            shufflenet_v1(groups=3, weights="DEFAULT")
        assert _cache_files() == []
        server.truncate = set()  # the next try downloads it whole
        shufflenet_v1(groups=3, weights="DEFAULT")
        assert name in _cache_files()


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_is_one_error_line_naming_url_and_path_and_a_manual_download_is_picked_up(
    tmp_path, torch_home, mm_file, monkeypatch
):
    mirror = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("SHUFFLENET_WEIGHTS_MIRROR", mirror)
    target = checkpoints_dir() / os.path.basename(ENTRY.url)
    with pytest.raises(DownloadError) as err:
        shufflenet_v1(groups=3, weights="DEFAULT")
    msg = str(err.value)
    assert f"{mirror}/{target.name}" in msg and ENTRY.url in msg and str(target) in msg and "\n" not in msg
    # the CLI: one error line, exit 2
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    proc = watched_run(
        [sys.executable, str(REPO / "classification" / "predict.py"), str(sample_images()[0])]
        + ["--model", NAME, "--weights", "DEFAULT", "--no-progress"],
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot download") and str(target) in lines[0]
    # put a file there by hand (no network): it is picked up
    _, src = mm_file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(src.read_bytes())
    _same_model(shufflenet_v1(groups=3, weights="DEFAULT"), convert_mmpretrain(src)[0], to_ours(cifar_images(32)))


def test_original_public_files_convert_on_load_and_are_cached(tmp_path, torch_home, mm_file, monkeypatch):
    _, src = mm_file
    img = to_ours(cifar_images(64, n=1, offset=7))
    by_hand = convert_mmpretrain(src)[0]
    for load in (
        lambda: create_model(NAME, weights=src),
        lambda: create_model(None, weights=src),
        lambda: shufflenet.load_weights(create_model(NAME), src),
        lambda: shufflenet_v1(groups=3, weights=str(src)),
    ):
        _same_model(load(), by_hand, img)
    cached = [f for f in _cache_files() if f.endswith(".shufflenet.pth")]
    assert len(cached) == 1 and cached[0].startswith("shufflenet_v1_original.")

    def no_converter(source):
        raise AssertionError("converted again although a cached conversion exists")

    monkeypatch.setattr(weights_io, "convert_public", no_converter)
    _same_model(create_model(NAME, weights=src), by_hand, img)
    # a changed file is not served from the old cache (the cache name carries the content hash)
    ref2 = MMShuffleNetV1(3)
    randomize(ref2, to_mm(cifar_images(64, n=4, offset=2)), seed=22)
    save_mm(ref2, src)
    with pytest.raises(AssertionError, match="converted again"):
        create_model(NAME, weights=src)


def test_original_megvii_file_through_the_builder(tmp_path, torch_home):
    ref = MegviiShuffleNetV1(3, MEGVII_WIDTHS[(3, 0.5)])
    randomize(ref, to_megvii(cifar_images(64, n=4, offset=1)), seed=31)
    src = save_megvii(ref, tmp_path / "snetv1_group3_0.5x.pth.tar")
    model = shufflenet_v1(groups=3, width_mult=0.5, weights=src)
    assert model.input_shift is not None  # the file's own network (megvii's input space folded in)
    _same_model(model, convert_megvii(src)[0], to_ours(cifar_images(64, n=1, offset=3)))
    assert any(f.startswith("snetv1_group3_0.5x.") for f in _cache_files())
    with pytest.raises(shufflenet.InvalidConfigError, match="groups=3 in the file, 8 asked for"):
        shufflenet_v1(groups=8, width_mult=0.5, weights=src)


def test_weights_entry_metadata():
    assert ShuffleNet_V1_X1_0_G3_Weights.DEFAULT is ENTRY
    assert get_weight("ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN") is ENTRY
    assert shufflenet.models.get_weight("ShuffleNet_V1_X1_0_G3_Weights.DEFAULT") is ENTRY
    assert ENTRY.url.endswith("shufflenet_v1_batch1024_imagenet_20200804-5d6cec73.pth")
    meta = ENTRY.meta
    assert (
        len(meta["categories"]) == 1000
        and meta["categories"][0] == "tench"
        and meta["categories"] == IMAGENET_CATEGORIES
    )
    assert meta["_metrics"] == {"ImageNet-1K": {"acc@1": 68.13, "acc@5": 87.81}}
    assert "not measured" in meta["_metrics_source"] and meta["recipe"].startswith("https://")
    from shufflenet.complexity import count_macs, count_params

    model = create_model(NAME)
    assert meta["num_params"] == count_params(model)
    assert meta["_ops"] == round(count_macs(model) / 1e9, 3)


def test_transforms_are_the_sources_eval_preprocessing():
    """mmpretrain's test pipeline written out with PIL: short edge to 256 (bilinear), centre crop 224."""
    path = sample_images()[0]
    im = Image.open(path).convert("RGB")
    w, h = im.size
    size = (256, int(256 * h / w)) if w < h else (int(256 * w / h), 256)
    resized = im.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
    crop = resized.crop((left, top, left + 224, top + 224))
    x = torch.frombuffer(bytearray(crop.tobytes()), dtype=torch.uint8).view(224, 224, 3).permute(2, 0, 1).float()
    want = (x - torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)) / torch.tensor([58.395, 57.12, 57.375]).view(
        3, 1, 1
    )
    got = ENTRY.transforms()(im)
    assert got.shape == (3, 224, 224)
    assert (got - want).abs().max() < 1e-5  # float32 rounding of two ways to normalize


def test_bad_weights_names_say_what_exists(torch_home):
    with pytest.raises(
        UnknownWeightsError, match=r"shufflenet_v1_x0_5_g8 has no published weights.*shufflenet_v1_x1_0_g3"
    ):
        shufflenet_v1(groups=8, width_mult=0.5, weights="DEFAULT")
    with pytest.raises(UnknownWeightsError, match="not a weights name of shufflenet_v1_x1_0_g3.*IMAGENET1K_MMPRETRAIN"):
        create_model(NAME, weights="IMAGENET1K_V2")
    with pytest.raises(UnknownWeightsError, match="no such weights file"):
        create_model(NAME, weights="missing/model.pth")
    with pytest.raises(shufflenet.InvalidConfigError, match=r"num_classes=10: .*reset_classifier\(10\)"):
        target = checkpoints_dir()
        target.mkdir(parents=True)
        shufflenet.save_weights(create_model(NAME), target / os.path.basename(ENTRY.url))
        shufflenet_v1(groups=3, weights="DEFAULT", num_classes=10)
    with pytest.raises(NoPretrainedWeightsError, match="no published weights"):
        timm.create_model("shufflenet_v1_x0_5_g3", pretrained=True)


def test_timm_cfgs_and_local_file_overlay(torch_home, mm_file):
    names = shufflenet.list_models("shufflenet_v1_*")
    for name in names:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg is not None and cfg.mean == (0.485, 0.456, 0.406) and cfg.first_conv == "conv1.0", name
    assert timm.list_pretrained("shufflenet_v1*") == [f"{NAME}.mmpretrain_in1k"]
    assert timm.models.get_pretrained_cfg(NAME).url == ENTRY.url  # one URL, the enum's
    _, src = mm_file
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(src)))
    _same_model(model, convert_mmpretrain(src)[0], to_ours(cifar_images(32)))
    # a file of another network than the name's is refused, naming what differs
    with pytest.raises(shufflenet.WeightsError, match="converts to another network.*stage_out_channels"):
        timm.create_model("shufflenet_v1_x0_5_g3", pretrained=True, pretrained_cfg_overlay=dict(file=str(src)))
