"""What a new user meets in the first hour, through the installed console scripts: unwritable detection outputs,
the demo line of a run on the demo data, what training prints, and what ``import shufflenet`` loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from proc import run as watched_run

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "src" / "shufflenet" / "resources" / "images" / "cats.jpg"


def script(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{path}: the package is not installed in this environment (pip install -e .)"
    return str(path)


def run(*args: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    e = dict(os.environ, SHUFFLENET_CACHE=str(env.pop("cache", tmp / "cache")), PYTHONUNBUFFERED="1", **env)
    return watched_run(list(args), cwd=tmp, env=e)


def one_error_line(proc: subprocess.CompletedProcess, message: str) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-3000:]
    return errors[0]


# --- item 4: an output folder that cannot be written ---------------------------------------------------------
@pytest.mark.parametrize("target", ["/sys/x", "{file}/x"])
def test_unwritable_detection_output_is_one_error_line_before_any_work(tmp_path, target):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = target.format(file=blocker)
    expect = "cannot write in /sys" if target == "/sys/x" else f"{blocker} is a file, not a folder"
    demo = run(
        script("shufflenet-detect-demo"),
        "--config",
        "demo_shapes",
        "--input",
        str(PHOTO),
        "--output",
        out,
        tmp=tmp_path,
    )
    one_error_line(demo, f"--output {out}: {expect}")
    train = run(script("shufflenet-detect"), "--config", "demo_shapes", "OUTPUT_DIR", out, tmp=tmp_path)
    one_error_line(train, f"OUTPUT_DIR {out}: {expect}")
    assert "iter:" not in train.stdout + train.stderr  # refused before training, not during it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no demo data, no cache: no work done


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    """One folder for the generated demo data of this module's runs."""
    return tmp_path_factory.mktemp("demo_cache")


# --- item 6: what a training run prints into a log --------------------------------------------------------------
@pytest.mark.slow
def test_training_output_redirected_to_a_log_is_short_and_has_no_noise(tmp_path, demo_cache):
    proc = run(
        script("shufflenet-train"),
        "--trainer.max_steps", "31", "--trainer.log_every_n_steps", "10", "--trainer.limit_val_batches", "2",
        tmp=tmp_path, cache=demo_cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for noise in ("Trainer already configured", "FLOPs", "Total Flops"):
        assert noise not in out, noise
    assert "Total params" in out and "| model " in out  # the summary itself stays
    # the bar of one 31-batch epoch, not a tty: redrawn every 10 batches and at the end, not 31 times
    redraws = out.count("Epoch 0:")
    assert 2 <= redraws <= 12, redraws
    assert "Epoch 0: 100%" in out


# --- item 8: the demo line is the run --------------------------------------------------------------------------
@pytest.mark.slow
def test_base_yaml_without_data_root_says_what_runs(tmp_path, demo_cache):
    """``--config base.yaml`` (data.root: null) runs on the demo data with base.yaml's model and size over
    demo.yaml's: the first line says so, and the header agrees with it."""
    proc = run(
        script("shufflenet-train"),
        "--config", "base.yaml", "--trainer.max_steps", "1", "--data.batch_size", "2", "--data.num_workers", "0",
        "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false", "--num_threads", "1",
        tmp=tmp_path, cache=demo_cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines[0].startswith(
        "no --data.root: training the demo (demo.yaml under --config base.yaml: shufflenet_v1_x1_0_g3 at 224 px, "
        "batch 2, 1 steps) on the generated shapes dataset"
    ), lines[0]
    header = next(line for line in lines if line.startswith("model "))
    assert header.startswith("model shufflenet_v1_x1_0_g3, data ") and "image 224 px, batch 2 per process" in header


# --- item 3: a small image is drawn at a readable scale ----------------------------------------------------------
def test_detection_demo_draws_a_small_image_enlarged(tmp_path):
    import json

    from PIL import Image

    small = tmp_path / "small.png"
    with Image.open(PHOTO) as photo:
        photo.convert("RGB").resize((128, 96)).save(small)
    out = tmp_path / "out"
    proc = run(
        script("shufflenet-detect-demo"), "--config", "demo_shapes", "--input", str(small), "--output", str(out),
        "--confidence-threshold", "0.0", tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(out / "small.png") as drawn:
        assert drawn.size == (512, 384)  # 4x: the longer side at MIN_DRAWN_SIZE, boxes and labels scaled with it
    (record,) = json.loads((out / "detections.json").read_text())["images"]
    assert record["drawn_scale"] == 4.0 and (record["width"], record["height"]) == (128, 96)
    assert all(0 <= d["box"][2] <= 129 and 0 <= d["box"][3] <= 97 for d in record["detections"])  # original pixels


# --- item 6: the COCO configs ask for 4 data workers, more than a small machine has ----------------------------
def test_detection_workers_are_capped_at_the_cores_with_one_note(tmp_path, coco_root, monkeypatch, capsys):
    """``DATALOADER.NUM_WORKERS: 4`` on a 2-core machine: one note, and the run uses 2 (no torch warning about
    4 workers); the workers' own setup (``verify_weights=False``) says nothing again."""
    from shufflenet.detection import engine

    monkeypatch.setattr(engine, "available_cpus", lambda: 2)  # what this test's machines have; any host alike
    ann = coco_root / "annotations" / "instances_train2017.json"
    argv = ["--config", "coco_shufflenet1x_300", "--register-coco", "tiny_cap", str(ann), str(coco_root / "train2017")]
    opts = ["DATASETS.TRAIN", "('tiny_cap',)", "DATASETS.TEST", "()", "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path)]
    args = engine.build_argument_parser().parse_args([*argv, *opts])
    assert engine.get_detection_cfg("coco_shufflenet1x_300").DATALOADER.NUM_WORKERS == 4  # the config's ask
    cfg = engine.setup(args)
    assert cfg.DATALOADER.NUM_WORKERS == 2
    notes = [line for line in capsys.readouterr().err.splitlines() if "NUM_WORKERS" in line]
    assert notes == ["note: DATALOADER.NUM_WORKERS 4 -> 2 (the CPU cores this process has)"]
    assert engine.setup(args, verify_weights=False).DATALOADER.NUM_WORKERS == 2
    assert "NUM_WORKERS" not in capsys.readouterr().err
    monkeypatch.setattr(engine, "available_cpus", lambda: 8)  # a larger machine: the config's value stands
    assert engine.setup(args).DATALOADER.NUM_WORKERS == 4
