"""Classification wing, training runs: the no-argument demo, real CIFAR-10 images, SIGKILL + resume,
two-process DDP, bad images inside a training set, evaluation of the run's outputs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shufflenet.classification.demo import DEMO_CLASSES, render

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "classification" / "train.py"
EVALUATE = REPO / "classification" / "evaluate.py"

pytestmark = pytest.mark.slow

# A tiny, fast setup shared by the fault tests: 0.25x g3 at 32 px, one thread.
TINY = [
    "--model.arch",
    "shufflenet_v1_x0_25_g3",
    "--data.image_size",
    "32",
    "--data.resize_size",
    "32",
    "--data.num_workers",
    "0",
    "--num_threads",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.logger",
    "false",
    "--model.lr_reference_batch",
    "16",
]


def env(tmp: Path) -> dict:
    e = dict(os.environ, SHUFFLENET_CACHE=str(tmp / "cache"), PYTHONUNBUFFERED="1")
    e.pop("SHUFFLENET_CLASSIFICATION_RUN_DIR", None)
    return e


def make_tree(root: Path, per_class: int, classes=DEMO_CLASSES, val_per_class: int = 2, size: int = 32) -> Path:
    for split, n, off in (("train", per_class, 0), ("val", val_per_class, 10_000)):
        for label, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                render(label % len(DEMO_CLASSES), off + 100 * label + i, size).save(d / f"{i}.png")
    return root


def run_folder(stdout: str) -> Path:
    found = re.findall(r"^run folder: (.+)$", stdout, re.M)
    assert found, stdout[-3000:]
    return Path(found[-1])


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# --- the no-argument run and its outputs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, str(TRAIN)], cwd=tmp, env=env(tmp), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, proc, run_folder(proc.stdout)


def test_no_argument_run(demo_run):
    tmp, proc, run = demo_run
    assert "no arguments: training the demo" in proc.stdout
    assert run.parent.parent == (tmp / "outputs" / "classification").resolve() and run.parent.name == "demo"
    assert "Epoch 3: 100%" in proc.stdout  # the progress bar (Lightning writes it to stdout)
    for rel in (
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "csv/metrics.csv",
        "metrics.json",
        "curves.png",
        "model.pth",
    ):
        assert (run / rel).is_file(), rel
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    m = metrics(run)
    assert m["num_classes"] == 10 and m["global_step"] == 500
    assert m["last_val"]["step"] == 500 and m["last_val"]["val/top1"] >= 0.30  # >= 3x chance (10 classes)
    assert len(m["history"]["val"]) >= 10 and len(m["history"]["train"]) >= 40
    assert (tmp / "cache" / "demo_shapes_v2" / "DONE").is_file()  # generated on first use, cached


def test_evaluate_run_outputs(demo_run, tmp_path, capsys):
    from shufflenet.classification.evaluate import main as evaluate_main

    tmp, _, run = demo_run
    data = tmp / "cache" / "demo_shapes_v2"
    results = {}
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "model.pth"):
        out = tmp_path / (Path(name).stem + ".json")
        args = ["--checkpoint", str(run / name), "--data.root", str(data), "--out", str(out), "--no-progress"]
        if name == "model.pth":  # through the script once
            proc = subprocess.run([sys.executable, str(EVALUATE), *args], capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
            stdout = proc.stdout
        else:
            assert evaluate_main([*args, "--num_workers", "0"]) == 0
            stdout = capsys.readouterr().out
        assert "| ShuffleNet 0.25x (g=3) | 13 MFLOPs |" in stdout
        results[name] = json.loads(out.read_text())
        assert results[name]["protocol"] == "resize 36, center crop 32"  # the run's own eval transform
    last, model_pth = results["checkpoints/last.ckpt"], results["model.pth"]
    assert last["top1"] == model_pth["top1"] and last["num_images"] == 500  # same final weights
    assert abs(last["top1"] - metrics(run)["last_val"]["val/top1"]) < 1e-6  # same as the run's validation
    assert results["checkpoints/best.ckpt"]["top1"] >= 0.30


def test_checkpoint_with_other_number_of_classes(demo_run, tmp_path):
    tmp, _, run = demo_run
    three = make_tree(tmp_path / "three", per_class=2, classes=("a", "b", "c"))
    proc = subprocess.run(
        [sys.executable, str(EVALUATE), "--checkpoint", str(run / "checkpoints/last.ckpt"), "--data.root", str(three)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "has 10 classes" in proc.stderr
    # resuming training from it on a 3-class dataset
    from shufflenet.classification.cli import cli

    rc = cli(
        [
            "--data.root",
            str(three),
            "--ckpt_path",
            str(run / "checkpoints/last.ckpt"),
            "--run_dir",
            str(tmp_path / "r"),
            "--data.batch_size",
            "2",
            *TINY,
        ]
    )
    assert rc == 2


# --- real images ----------------------------------------------------------------------------------------------------
def _train_on_cifar(source: Path, tmp_path: Path, per_class: int, steps: int) -> dict:
    """0.5x g3 at 32 px on real CIFAR-10 JPEGs (val folder named test/), ``per_class`` training images a class."""
    from shufflenet.classification.cli import main

    root = tmp_path / "cifar"
    for split, n in (("train", per_class), ("test", 100)):
        for cls in sorted(p.name for p in (source / split).iterdir()):
            d = root / split / cls
            d.mkdir(parents=True)
            for f in sorted((source / split / cls).iterdir())[:n]:
                (d / f.name).symlink_to(f)
    run = tmp_path / "run"
    rc = main(
        [
            "--data.root",
            str(root),
            "--run_dir",
            str(run),
            "--model.arch",
            "shufflenet_v1_x0_5_g3",
            "--data.image_size",
            "32",
            "--data.resize_size",
            "32",
            "--data.crop_scale",
            "[0.5, 1.0]",
            "--data.batch_size",
            "64",
            "--data.num_workers",
            "1",
            "--num_threads",
            "1",
            "--model.lr_reference_batch",
            "64",
            "--model.warmup_steps",
            "20",
            "--trainer.max_steps",
            str(steps),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger",
            "false",
        ]
    )
    assert rc == 0
    m = metrics(run)
    assert m["data_root"] == str(root) and m["num_classes"] == 10
    print(
        f"CIFAR-10 {per_class}/class, {steps} steps: val top-1 {m['last_val']['val/top1']:.4f} "
        f"(best {m['best_val']['val/top1']:.4f})"
    )
    return m


def test_cifar10_slice_reaches_30_percent(tmp_path, cifar_root):
    """The repository's CIFAR-10 slice (tests/data/cifar10: 150 train / 30 test real JPEGs a class): >= 3x chance."""
    m = _train_on_cifar(cifar_root, tmp_path, per_class=150, steps=300)
    assert len(list((tmp_path / "cifar" / "test").rglob("*.jpg"))) == 300
    assert m["last_val"]["val/top1"] >= 0.30, m["history"]["val"]


@pytest.mark.extended
def test_cifar10_larger_slice_reaches_30_percent(tmp_path, extra_data):
    """The larger slice ($SHUFFLENET_DATA/cifar10: 500 train / 100 test a class), as before tests/data existed."""
    m = _train_on_cifar(extra_data / "cifar10", tmp_path, per_class=500, steps=300)
    assert m["last_val"]["val/top1"] >= 0.30, m["history"]["val"]


# --- faults ----------------------------------------------------------------------------------------------------------
def _final_state(run: Path) -> dict:
    ck = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ck


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    data = make_tree(tmp_path / "data", per_class=16, val_per_class=1)  # 160 images: 10 batches of 16
    common = [
        sys.executable,
        str(TRAIN),
        "--data.root",
        str(data),
        "--data.batch_size",
        "16",
        "--trainer.max_steps",
        "40",
        "--save_every_n_steps",
        "7",
        "--trainer.deterministic",
        "true",
        "--model.ema",
        "true",
        "--model.ema_decay",
        "0.9",
        "--export",
        "false",
        *TINY,
    ]
    e = env(tmp_path)
    ref = subprocess.run(
        [*common, "--run_dir", str(tmp_path / "ref")], env=e, capture_output=True, text=True, timeout=300
    )
    assert ref.returncode == 0, ref.stderr[-3000:]

    # Kill as soon as the first mid-epoch checkpoint (step 7 of a 10-batch epoch) exists.
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [*common, "--run_dir", str(tmp_path / "killed")], env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < step < 40 and step % 10 != 0, step  # a mid-epoch checkpoint of an unfinished run

    resumed = subprocess.run(
        [*common, "--run_dir", str(tmp_path / "killed"), "--ckpt_path", "last"],
        env=e,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _final_state(tmp_path / "ref"), _final_state(tmp_path / "killed")
    assert a["global_step"] == b["global_step"] == 40
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert any(k.startswith("model_ema.module.") for k in a["state_dict"])
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    # the metric history survives the resume too
    assert [r["step"] for r in metrics(tmp_path / "ref")["history"]["val"]] == [
        r["step"] for r in metrics(tmp_path / "killed")["history"]["val"]
    ]


def test_ddp_two_processes_keep_replicas_identical(tmp_path):
    data = make_tree(tmp_path / "data", per_class=8, val_per_class=1)
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            str(TRAIN),
            "--data.root",
            str(data),
            "--data.batch_size",
            "8",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.max_steps",
            "6",
            "--trainer.log_every_n_steps",
            "1",
            "--model.ema",
            "true",
            "--run_dir",
            str(run),
            *TINY,
        ],
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    m = metrics(run)
    assert m["world_size"] == 2 and m["global_step"] == 6
    assert len(m["replica_param_sha256"]) == 2 and m["replicas_identical"] is True
    ck = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert any(k.startswith("model_ema.module.") for k in ck["state_dict"])  # EMA under DDP
    assert "DDP replicas identical: True (2 processes)" in proc.stdout
    # lr of the first step scaled by the global batch: 0.5 x (8 per process x 2 processes) / 16
    assert m["history"]["train"][0]["step"] == 1
    assert m["history"]["train"][0]["lr"] == pytest.approx(0.5)


def test_bad_images_inside_a_training_set_are_skipped_and_counted(tmp_path, capsys):
    from shufflenet.classification.cli import main

    data = make_tree(tmp_path / "data", per_class=4, val_per_class=1)
    good = (data / "train" / "circle" / "0.png").read_bytes()
    (data / "train" / "circle" / "truncated.png").write_bytes(good[: len(good) // 3])
    (data / "val" / "ring" / "corrupt.jpg").write_bytes(b"garbage" * 50)
    run = tmp_path / "run"
    rc = main(
        ["--data.root", str(data), "--data.batch_size", "8", "--trainer.max_steps", "10", "--run_dir", str(run), *TINY]
    )
    assert rc == 0
    m = metrics(run)
    assert m["num_skipped_images"] == 2
    assert sorted(Path(p).name for p in m["skipped_images"]) == ["corrupt.jpg", "truncated.png"]
    assert "skipped unreadable images: 2" in capsys.readouterr().out
