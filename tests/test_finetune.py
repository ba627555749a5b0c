"""Fine-tuning from published weights in one flag: ``--model.weights DEFAULT | NAME | FILE``.

The published weights are an mmpretrain checkpoint in its published layout (the reference network of
tests/test_convert.py, random weights and BN statistics) served by the local weights server; the data are the
repository's real CIFAR-10 images (10 classes, so the 1000-class head is re-initialised). Checked: every tensor
but the classifier equals the file's conversion, the classifier has the run's shape and is not the file's, the
one line that says so, the weights' preprocessing as the default image size, and that a resume does not load the
weights again.
"""

from __future__ import annotations

import re

import pytest
import torch
from proc import run as watched_run
from test_classification_train import console, env
from test_convert import MMShuffleNetV1, cifar_images, randomize, save_mm, to_mm
from weights_server import WeightsServer, hashed_copy, point_weights_at

from shufflenet import ShuffleNet_V1_X1_0_G3_Weights, read_weights
from shufflenet.classification.cli import make_cli, settings_plan
from shufflenet.convert import convert_mmpretrain
from shufflenet.fileio import sha256_file

ENTRY = ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN
LINE = re.compile(
    r"^model\.weights (\S+): loaded (\d+)/(\d+) tensors of (\S+) from (\S+) \(sha256 ([0-9a-f]{12})\); (.*)$", re.M
)


@pytest.fixture(scope="module")
def mm_file(tmp_path_factory):
    ref = MMShuffleNetV1(3)
    randomize(ref, to_mm(cifar_images(64, n=4, offset=1)), seed=5)
    return save_mm(ref, tmp_path_factory.mktemp("mm") / "shufflenet_v1_original.pth")


@pytest.fixture
def served(tmp_path, mm_file, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served_file = hashed_copy(mm_file, tmp_path / "www", "shufflenet_v1_test_imagenet")
    with WeightsServer(served_file.parent) as server:
        point_weights_at(monkeypatch, server, ENTRY, served_file.name)
        yield server, served_file


def test_default_weights_through_the_cli_load_the_backbone_and_a_new_head(tmp_path, served, cifar_root, capsys):
    server, served_file = served
    data = cifar_root  # train/<class>/*.jpg, test/<class>/*.jpg
    plan = settings_plan(["--data.root", str(data), "--model.weights", "DEFAULT", "--data.num_workers", "0"])
    cli = make_cli(plan.args[1:], run=False, default_config_files=plan.default_config_files)
    assert server.requests == [served_file.name]  # downloaded once, through the server
    model = cli.model.model
    by_hand, _ = convert_mmpretrain(served_file)
    want = by_hand.state_dict()
    got = model.state_dict()
    head = {"fc.weight", "fc.bias"}
    assert got.keys() == want.keys()
    for key in got.keys() - head:
        assert torch.equal(got[key], want[key]), key
    assert got["fc.weight"].shape == (10, want["fc.weight"].shape[1]) and want["fc.weight"].shape[0] == 1000
    assert not torch.equal(got["fc.weight"], want["fc.weight"][:10])
    report = cli.model.weights_report
    assert report["head"] == "re-initialised" and report["file_classes"] == 1000
    assert report["tensors_loaded"] == len(got) - 2 and report["sha256"] == sha256_file(served_file)
    assert server.requests == [served_file.name]


def test_the_published_weights_preprocessing_is_the_default(served):
    """On the demo data (demo.yaml: 32 px crops of 36) the weights' own 224 of 256 wins over the default configs;
    a flag wins over the weights."""
    args = ["--model.weights", "DEFAULT", "--model.arch", "shufflenet_v1_x1_0_g3", "--data.num_workers", "0"]
    for extra, want in (([], (224, 256)), (["--data.image_size", "64", "--data.resize_size", "72"], (64, 72))):
        plan = settings_plan(args + extra)
        assert plan.demo is not None  # no data root: the demo's configs are the defaults
        cli = make_cli(plan.args[1:], run=False, default_config_files=plan.default_config_files)
        assert (cli.datamodule.hparams.image_size, cli.datamodule.hparams.resize_size) == want
        assert cli.model.weights_report["head"] == "re-initialised"  # 1000 -> the demo's 10 classes


def _train(tmp, *args):
    e = env(tmp)
    e["TORCH_HOME"] = str(tmp / "torch")
    return watched_run([*console("shufflenet-train"), *args], cwd=tmp, env=e)


@pytest.mark.slow
def test_fine_tune_a_file_through_the_console_script_and_resume_without_reloading(tmp_path, mm_file, cifar_root):
    """``shufflenet-train --model.weights FILE`` (an original mmpretrain checkpoint, converted on read) on CIFAR:
    one line says what was loaded; the run's config records the setting, its checkpoint what was loaded (and no
    weights to load again); the trained backbone stays near the file's weights; a resume does not reload them."""
    data = cifar_root  # train/<class>/*.jpg, test/<class>/*.jpg
    common = [
        "--data.root", str(data), "--model.weights", str(mm_file), "--data.num_workers", "0",
        "--data.batch_size", "4", "--data.image_size", "64", "--data.resize_size", "72",
        "--model.lr", "0.001", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--run_dir", str(tmp_path / "run"), "--num_threads", "1",
    ]  # fmt: skip
    proc = _train(tmp_path, *common, "--trainer.max_steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = LINE.findall(proc.stdout)
    assert len(found) == 1, proc.stdout[-3000:]
    weights, loaded, total, arch, source, sha, rest = found[0]
    assert weights == str(mm_file) and source == str(mm_file) and arch == "shufflenet_v1_x1_0_g3"
    assert sha == sha256_file(mm_file)[:12] and rest == "classifier re-initialised (1000 -> 10 classes)"
    assert int(loaded) == int(total) - 2
    run = tmp_path / "run"
    assert f"weights: {mm_file}" in (run / "config.yaml").read_text()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["weights"] is None
    assert (
        ckpt["pretrained_weights"]["source"] == str(mm_file) and ckpt["pretrained_weights"]["head"] == "re-initialised"
    )
    trained = read_weights(run / "model.pth").state_dict
    file_sd = convert_mmpretrain(mm_file)[0].state_dict()
    assert trained["fc.weight"].shape == (10, file_sd["fc.weight"].shape[1])
    convs = [k for k, v in file_sd.items() if v.ndim == 4]
    for k in convs:  # two small steps from the file's weights: still those weights, not a random start
        assert (trained[k] - file_sd[k]).abs().max() < 0.05 * file_sd[k].abs().max(), k
    # resume: the checkpoint's weights are restored, the file is not read again (it may even be gone)
    moved = mm_file.with_suffix(".moved")
    mm_file.rename(moved)
    try:
        again = _train(tmp_path, *common, "--trainer.max_steps", "3", "--ckpt_path", "last")
    finally:
        moved.rename(mm_file)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"model.weights {mm_file}: not loaded (resuming: the checkpoint's weights are restored)" in again.stdout
    assert not LINE.findall(again.stdout)
    assert "resuming from step 2" in again.stdout
