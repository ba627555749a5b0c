"""Fault injection on shufflenet-train (classification/train.py) and shufflenet-eval, on generated data.

Every test is one scenario a user hit: the wrong run resumed, logs lost on resume, tracebacks for bad
checkpoints, signals that saved nothing, one huge image that killed a run, results lost at the last step,
half-made run folders, two writers in one folder, a missing best.ckpt, noise on a normal run; and a loop
that kills a training at fixed steps (kill -9, SIGTERM, SIGINT, SIGUSR1) and checks the final weights
against an uninterrupted run's; and the run-safety limits: replayed steps in metrics.csv, a signal during the
sanity check, a full disk during a checkpoint save, a NaN loss.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kill_at_step import run_killed
from PIL import Image
from proc import run as watched_run

from shufflenet.classification.cli import cli
from shufflenet.classification.demo import DEMO_CLASSES, render
from shufflenet.errors import EXIT_INTERRUPTED

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "classification" / "train.py"
EVALUATE = REPO / "classification" / "evaluate.py"

pytestmark = pytest.mark.slow

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
    "--trainer.enable_model_summary",
    "false",
    "--trainer.num_sanity_val_steps",
    "0",
]


def make_tree(root: Path, per_class: int = 4, val_per_class: int = 1, classes=DEMO_CLASSES[:4], size: int = 32) -> Path:
    for split, n, off in (("train", per_class, 0), ("val", val_per_class, 10_000)):
        for label, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                render(label, off + 100 * label + i, size).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("faults") / "data")


def env(tmp: Path) -> dict:
    e = dict(os.environ, SHUFFLENET_CACHE=str(tmp / "cache"), PYTHONUNBUFFERED="1")
    e.pop("SHUFFLENET_CLASSIFICATION_RUN_DIR", None)
    return e


def last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    return err.strip().splitlines()[-1]


def args_for(data: Path, *extra: str, steps: int = 4, batch: int = 8) -> list:
    return ["--data.root", str(data), "--data.batch_size", str(batch), "--trainer.max_steps", str(steps), *TINY, *extra]


def state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


# --- 1. the wrong run is never resumed --------------------------------------------------------------------------
def test_ckpt_last_resumes_only_a_run_with_the_same_settings(data, tmp_path, capsys):
    out = ["--output_root", str(tmp_path / "out")]
    assert cli(args_for(data, *out)) == 0  # run A -> version_0
    a = tmp_path / "out" / "shufflenet_v1_x0_25_g3" / "version_0"
    before = {p: (a / p).read_bytes() for p in ("config.yaml", "model.pth", "metrics.json")}
    # run B (other settings) "killed before its first checkpoint": its folder has settings and no checkpoint
    b_args = args_for(data, *out, "--model.lr", "0.1")
    assert cli(b_args) == 0
    b = tmp_path / "out" / "shufflenet_v1_x0_25_g3" / "version_1"
    (b / "checkpoints" / "last.ckpt").unlink()
    (b / "checkpoints" / "best.ckpt").unlink()
    capsys.readouterr()
    assert cli([*b_args, "--ckpt_path", "last"]) == 0
    printed = capsys.readouterr().out
    assert f"run folder: {b}" in printed and "starting it from step 0" in printed
    assert {p: (a / p).read_bytes() for p in before} == before  # A untouched
    # settings no run was started with: refused, naming the nearest run and the differing key
    assert cli([*args_for(data, *out, "--model.lr", "0.3"), "--ckpt_path", "last"]) == 2
    err = last_error(capsys)
    assert err.startswith("error: --ckpt_path last: no run in") and "model.lr: 0.1 -> 0.3" in err


def test_resume_with_other_settings_is_refused_except_the_allowed_keys(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(args_for(data, "--run_dir", str(run))) == 0
    capsys.readouterr()
    assert (
        cli(
            args_for(
                data,
                "--run_dir",
                str(run),
                "--model.weight_decay",
                "0.001",
                "--data.batch_size",
                "4",
                "--ckpt_path",
                "last",
            )
        )
        == 2
    )
    err = last_error(capsys)
    assert err.startswith(f"error: {run} was started with other settings:")
    assert "model.weight_decay: 4e-05 -> 0.001" in err and "data.batch_size: 8 -> 4" in err
    # the same folder without --ckpt_path: refused too (it holds a run)
    assert cli(args_for(data, "--run_dir", str(run))) == 2
    assert "already holds a run" in last_error(capsys)
    # a longer run is a legitimate resume
    assert cli(args_for(data, "--run_dir", str(run), "--ckpt_path", "last", steps=6)) == 0
    assert state(run)["global_step"] == 6


# --- 2. resuming keeps every log ------------------------------------------------------------------------------------
def test_resume_keeps_csv_tensorboard_and_config_history(data, tmp_path):
    run = tmp_path / "run"
    logged = [*args_for(data, "--run_dir", str(run), "--trainer.log_every_n_steps", "1"), "--trainer.logger", "true"]
    assert cli(logged) == 0
    steps_before = [int(r["step"]) for r in csv.DictReader(open(run / "csv" / "metrics.csv")) if r.get("train/loss")]
    config = (run / "config.yaml").read_text()
    assert cli([*logged[:], "--ckpt_path", "last", "--trainer.max_steps", "8"]) == 0
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps_before and steps[: len(steps_before)] == steps_before  # the first run's rows are still there
    assert max(steps) >= 7 and len(steps) > len(steps_before)
    assert (run / "config.yaml").read_text() == config  # the settings the run was started with
    assert sorted(p.name for p in (run / "config_history").iterdir()) == ["config.0.yaml", "config.1.yaml"]
    assert "max_steps: 8" in (run / "config_history" / "config.1.yaml").read_text()
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2


# --- 3. bad checkpoints, unwritable outputs, failed starts ------------------------------------------------------------
def test_bad_checkpoints_and_unwritable_outputs_are_one_error_line(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(args_for(data, "--run_dir", str(run))) == 0
    last = run / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])  # truncated
    capsys.readouterr()
    assert cli(args_for(data, "--run_dir", str(run), "--ckpt_path", "last")) == 2
    assert "cannot be read as a torch weights file" in last_error(capsys)
    last.write_bytes(good)
    for ckpt, message in (
        (tmp_path / "missing.ckpt", "no such weights file"),
        (run / "model.pth", "not a Lightning training checkpoint"),
    ):
        assert cli(args_for(data, "--output_root", str(tmp_path / "o"), "--ckpt_path", str(ckpt))) == 2
        assert message in last_error(capsys)
    (tmp_path / "a_file").write_text("x")
    assert cli(args_for(data, "--output_root", str(tmp_path / "a_file" / "out"))) == 2
    assert last_error(capsys).startswith("error: cannot write to the run folder")
    assert not (tmp_path / "o").exists()  # none of the failed starts made a folder


def test_a_failed_start_leaves_no_run_folder(data, tmp_path, capsys):
    out = tmp_path / "out"
    empty = make_tree(tmp_path / "empty", per_class=2)
    (empty / "train" / "zzz").mkdir()
    cases = [
        (["--data.root", str(tmp_path / "missing")], "does not exist"),
        (["--data.root", str(empty)], "has no images"),
        (["--data.root", str(data), "--data.batch_size", "0"], "batch_size must be >= 1"),
        (["--data.root", str(data), "--data.batch_size", "1000"], "fewer than one batch"),
    ]
    for extra, message in cases:
        assert cli([*TINY, "--output_root", str(out), *extra]) == 2
        assert message in last_error(capsys)
    assert not out.exists() or not any(out.rglob("version_*"))


# --- 4. two writers, one folder ---------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(args_for(data, "--run_dir", str(run))) == 0
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "started": "now"}))
        capsys.readouterr()
        assert cli(args_for(data, "--run_dir", str(run), "--ckpt_path", "last", steps=6)) == 2
        err = last_error(capsys)
        assert "is in use by another run" in err and f"pid {sleeper.pid}" in err
        assert state(run)["global_step"] == 4  # nothing written
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder is gone: its lock is stale and taken over
    assert cli(args_for(data, "--run_dir", str(run), "--ckpt_path", "last", steps=6)) == 0
    assert "taking over the stale lock" in capsys.readouterr().err
    assert state(run)["global_step"] == 6 and not (run / ".lock").exists()


# --- 5. oversized and bomb images ----------------------------------------------------------------------------------
def test_oversized_and_bomb_images_are_skipped_and_counted(data, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data, root)
    Image.new("1", (15000, 15000)).save(root / "train" / DEMO_CLASSES[0] / "bomb.png")  # over PIL's bomb limit
    Image.new("1", (11000, 11000)).save(root / "val" / DEMO_CLASSES[1] / "huge.png")  # 121 M px: over ours
    run = tmp_path / "run"
    assert cli(args_for(root, "--run_dir", str(run), steps=6)) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert sorted(Path(p).name for p in m["skipped_images"]) == ["bomb.png", "huge.png"]
    assert "max_image_pixels" in m["skipped_images"][str(root / "val" / DEMO_CLASSES[1] / "huge.png")]
    out = tmp_path / "eval.json"
    from shufflenet.classification.evaluate import cli as evaluate_cli

    assert (
        evaluate_cli(
            [
                "--checkpoint",
                str(run / "model.pth"),
                "--data-root",
                str(root),
                "--num-workers",
                "0",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["num_images"] == 4 and res["num_skipped_images"] == 1  # 5 files, the huge one skipped


# --- 6. evaluation: no image twice, the result survives a failed write ---------------------------------------------
def test_evaluate_counts_each_image_once_and_prints_before_writing(data, tmp_path, capsys):
    import shutil

    from shufflenet import create_model, save_weights
    from shufflenet.classification.evaluate import cli as evaluate_cli

    root = tmp_path / "data"
    shutil.copytree(data, root)
    for name in ("bad1.png", "bad2.png"):
        (root / "val" / DEMO_CLASSES[2] / name).write_bytes(b"not an image" * 20)
    save_weights(
        create_model("shufflenet_v1_x0_25_g3", num_classes=4), tmp_path / "w.pth", arch="shufflenet_v1_x0_25_g3"
    )
    base = [
        "--checkpoint",
        str(tmp_path / "w.pth"),
        "--data-root",
        str(root),
        "--num-workers",
        "0",
        "--no-progress",
        "--image-size",
        "32",
        "--resize-size",
        "32",
        "--batch-size",
        "3",
    ]
    assert evaluate_cli([*base, "--out", str(tmp_path / "r.json")]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["num_images"] == 4 and res["num_skipped_images"] == 2  # 6 files: 4 read, 2 skipped, none twice
    capsys.readouterr()
    (tmp_path / "a_file").write_text("x")
    assert evaluate_cli([*base, "--out", str(tmp_path / "a_file" / "r.json")]) == 2
    captured = capsys.readouterr()
    assert "top-1" in captured.out and "| ShuffleNet 0.25x (g=3) |" in captured.out  # printed first
    assert captured.err.strip().splitlines()[-1].startswith("error: cannot write the results to")


# --- 7. best.ckpt, and a normal run's output without noise ---------------------------------------------------------
def test_best_ckpt_exists_without_validation_and_no_noise(data, tmp_path):
    run = tmp_path / "run"
    args = args_for(data, "--run_dir", str(run), steps=3, batch=2)  # 8 batches an epoch
    args[args.index("--trainer.logger") + 1] = "true"  # TensorBoard + CSV, as a user runs it
    args[args.index("--data.num_workers") + 1] = "64"  # more than the machine has: capped, not warned about
    proc = watched_run([sys.executable, str(TRAIN), *args, "--trainer.log_every_n_steps", "50"], env=env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "best.ckpt").is_file()  # 3 steps < one epoch: no validation ran in training
    assert "best.ckpt is a copy of last.ckpt" in proc.stdout
    text = proc.stdout + proc.stderr
    for noise in (
        "Tip:",
        "weights_only",
        "smaller than the logging interval",
        "does not have many workers",
        "Previous log files",
        "Warning",
    ):
        assert noise not in text, (noise, text[-3000:])


def test_resume_from_an_end_of_epoch_checkpoint_is_exact(data, tmp_path, monkeypatch):
    """A run killed just after the checkpoint written at an epoch's end (after its validation) resumes to the
    uninterrupted weights: Lightning's epoch counter runs one ahead there, which used to skip an epoch's data."""
    from shufflenet.classification.callbacks import StopOnSignal
    from shufflenet.classification.errors import TrainingInterrupted

    args = args_for(
        data, "--save_every_n_steps", "100", "--trainer.deterministic", "true", "--export", "false", steps=6
    )  # 16 images, batch 8: 2 steps an epoch, a checkpoint after each epoch's validation
    assert cli([*args, "--run_dir", str(tmp_path / "ref")]) == 0

    def die_after_step_3(self, trainer, *rest):  # like kill -9 at step 3: last.ckpt is step 2's (epoch end)
        if trainer.global_step == 3:
            raise TrainingInterrupted(signal.SIGKILL, 3)

    monkeypatch.setattr(StopOnSignal, "on_train_batch_end", die_after_step_3)
    assert cli([*args, "--run_dir", str(tmp_path / "run")]) == EXIT_INTERRUPTED
    assert state(tmp_path / "run")["global_step"] == 2
    monkeypatch.undo()
    assert cli([*args, "--run_dir", str(tmp_path / "run"), "--ckpt_path", "last"]) == 0
    a, b = state(tmp_path / "ref"), state(tmp_path / "run")
    assert a["global_step"] == b["global_step"] == 6
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


# --- 8. signals and the kill loop ----------------------------------------------------------------------------------
KILL_BEFORE_RENAME = (
    "import shufflenet.fileio as fileio\n"
    "real_replace, seen = fileio.os.replace, []\n"
    "class _Os:\n"
    "    def __getattr__(self, name):\n"
    "        return getattr(os, name)\n"
    "    @staticmethod\n"
    "    def replace(src, dst):\n"
    "        if str(dst).endswith('last.ckpt'):\n"
    "            seen.append(dst)\n"
    "            if len(seen) == 3:  # the third last.ckpt: written and fsynced, not yet renamed\n"
    "                os.kill(os.getpid(), signal.SIGKILL)\n"
    "        return real_replace(src, dst)\n"
    "fileio.os = _Os()\n"
)


def test_kill_at_fixed_steps_resumes_to_the_uninterrupted_weights(tmp_path):
    """Six interruptions in a row, each followed by ``--ckpt_path last``: a kill -9 between a checkpoint's
    temporary file and its rename, then kill -9, SIGTERM, SIGINT, kill -9 and SIGUSR1 sent at fixed steps (two
    resumes inside one epoch: from steps 16 and 17 of the epoch of steps 16-18). The final weights (and EMA) equal
    an uninterrupted run's bit for bit. The signals go to the process group (main process and data worker), as
    SLURM's and a terminal's do."""
    data = make_tree(tmp_path / "data", per_class=6, val_per_class=1)  # 24 images: 3 batches of 8 an epoch
    steps = 30
    train_args = args_for(
        data,
        "--save_every_n_steps",
        "5",
        "--trainer.deterministic",
        "true",
        "--model.ema",
        "true",
        "--model.ema_decay",
        "0.9",
        "--export",
        "false",
        steps=steps,
    )
    train_args[train_args.index("--data.num_workers") + 1] = "1"  # a data worker, as in real runs
    common = [sys.executable, str(TRAIN), *train_args]
    e = env(tmp_path)
    ref = subprocess.Popen(
        [*common, "--run_dir", str(tmp_path / "ref")], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    seen = []
    # 0. killed between the temporary file's write and its rename (the third last.ckpt of the run)
    code = f"import os, signal, sys\n{KILL_BEFORE_RENAME}from shufflenet.classification.cli import cli\nsys.exit(cli())"
    proc = subprocess.run(
        [sys.executable, "-c", code, *train_args, "--run_dir", str(run)], env=e, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    stale = [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and stale[0].startswith(".last.ckpt."), stale
    unrenamed = torch.load(last.parent / stale[0], map_location="cpu", weights_only=True)  # whole, never renamed
    kept = state(run)["global_step"]
    assert 0 < kept < unrenamed["global_step"]  # last.ckpt is still the previous checkpoint, intact
    seen.append(("SIGKILL before rename", proc.returncode, kept))

    # (step at which the signal is sent, signal): kill -9 lands before that step's checkpoint (last.ckpt is an
    # earlier one), the other signals finish the step and save it
    plan = [
        (14, signal.SIGKILL),
        (16, signal.SIGTERM),
        (17, signal.SIGINT),
        (23, signal.SIGKILL),
        (25, signal.SIGUSR1),
    ]
    for at, sig in plan:
        proc = run_killed([*train_args, "--run_dir", str(run), "--ckpt_path", "last"], at, sig, e)
        out, err = proc.stdout, proc.stderr
        step = state(run)["global_step"]
        assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]  # a resume removes stale files
        seen.append((sig.name, proc.returncode, step))
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL, err[-3000:]
            assert seen[-2][2] < step < at, seen
        else:
            assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
            assert step == at, seen
            assert f"--ckpt_path last --run_dir {run}" in out and "resume with:" in out
            assert json.loads((run / "metrics.json").read_text())["interrupted"]["step"] == step
    print("interruptions (signal, exit status, step of last.ckpt):", seen)
    assert [s[0] for s in seen] == ["SIGKILL before rename", *(sig.name for _, sig in plan)], seen
    final = watched_run([*common, "--run_dir", str(run), "--ckpt_path", "last"], env=e)
    assert final.returncode == 0, final.stderr[-3000:]
    ref_out, ref_err = ref.communicate(timeout=3600)  # a hang cap only: it ran beside the whole loop
    assert ref.returncode == 0, ref_err[-3000:]
    a, b = state(tmp_path / "ref"), state(run)
    assert a["global_step"] == b["global_step"] == steps
    assert any(k.startswith("model_ema.module.") for k in a["state_dict"])
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), (k, seen)


# --- 9. replayed steps, signals before the first step, a full disk, a NaN loss ----------------------------------------
def _child(tmp: Path, patch: str, args: list) -> subprocess.CompletedProcess:
    """``shufflenet-train ARGS`` in a fresh interpreter after running ``patch`` there (the fault to inject)."""
    code = (
        "import os, signal, sys\n"
        f"{patch}\n"
        "from shufflenet.classification.cli import cli\n"
        "sys.argv[0] = 'shufflenet-train'\n"
        "sys.exit(cli(sys.argv[1:]))\n"
    )
    return watched_run([sys.executable, "-c", code, *args], env=env(tmp))


def test_steps_replayed_after_a_kill_appear_once_in_metrics_csv(data, tmp_path):
    """kill -9 after step 7 with last.ckpt of step 4 and the CSV rows of steps 0-5 on disk (Lightning logs the
    step that makes global_step s+1 as step s): the resumed run replays from step 4 on, and metrics.csv lists
    every step once (training, validation and learning-rate rows alike)."""
    run = tmp_path / "run"
    args = [
        *args_for(
            data,
            "--run_dir",
            str(run),
            "--save_every_n_steps",
            "4",
            "--trainer.log_every_n_steps",
            "1",
            steps=10,
            batch=2,  # 8 steps an epoch: the first validation (and its checkpoint) after step 8
        ),
        "--trainer.logger",
        "true",
        "--export",
        "false",
    ]
    kill_at_7 = (
        "from shufflenet.classification.callbacks import StopOnSignal\n"
        "def die(self, trainer, *a):\n"
        "    if trainer.global_step == 7:\n"
        "        for lg in trainer.loggers: lg.save()  # the rows so far reach the disk, as with a long run\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "StopOnSignal.on_train_batch_end = die\n"
    )
    killed = _child(tmp_path, kill_at_7, args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert state(run)["global_step"] == 4
    before = [int(r["step"]) for r in csv.DictReader(open(run / "csv" / "metrics.csv")) if r.get("train/loss")]
    assert before == [0, 1, 2, 3, 4, 5], before  # steps 4 and 5 will be replayed (row 6 was not yet logged)
    assert cli([*args, "--ckpt_path", "last"]) == 0
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == list(range(10)), steps
    kinds = [(r["step"], tuple(sorted(k for k, v in r.items() if v))) for r in rows]
    assert len(kinds) == len(set(kinds)), kinds  # no row of any kind twice


def test_a_signal_during_the_sanity_check_saves_nothing_and_says_so(data, tmp_path):
    run = tmp_path / "run"
    term_in_sanity = (
        "from shufflenet.classification.module import ImageClassifier\n"
        "orig = ImageClassifier.validation_step\n"
        "def step(self, batch, i):\n"
        "    if self.trainer.sanity_checking and i == 0:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return orig(self, batch, i)\n"
        "ImageClassifier.validation_step = step\n"
    )
    proc = _child(
        tmp_path, term_in_sanity, [*args_for(data, "--run_dir", str(run)), "--trainer.num_sanity_val_steps", "2"]
    )
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"interrupted by SIGTERM during the sanity check, before the first step: nothing was saved "
        f"(exit status {EXIT_INTERRUPTED})"
    )
    assert "resume with" not in proc.stdout and not run.exists()  # nothing saved, no folder left


def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_one(data, tmp_path, monkeypatch, capsys):
    """The second last.ckpt write fails half-way with ENOSPC: the step-2 checkpoint stays loadable, no temporary
    file is left, and the run ends with one error line (exit status 2)."""
    import errno

    real_save = torch.save
    writes = []

    def save(obj, f, *a, **k):
        name = getattr(f, "name", str(f))
        if ".last.ckpt." in str(name):
            writes.append(name)
            if len(writes) == 2:
                f.write(b"PK\x03\x04 half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    assert cli(args_for(data, "--run_dir", str(run), "--save_every_n_steps", "2", steps=6)) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1]
    assert lines[0].startswith(f"error: cannot write the checkpoint {run / 'checkpoints' / 'last.ckpt'}: No space left")
    assert "the previous one is kept" in lines[0]
    assert state(run)["global_step"] == 2  # the previous checkpoint, whole
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]  # no temporary file
    assert cli(args_for(data, "--run_dir", str(run), "--save_every_n_steps", "2", "--ckpt_path", "last", steps=6)) == 0
    assert state(run)["global_step"] == 6


def test_a_nan_loss_stops_with_the_last_good_checkpoint_and_names_the_step(data, tmp_path, monkeypatch, capsys):
    from shufflenet.classification.module import ImageClassifier

    real_step = ImageClassifier.training_step

    def step(self, batch, i):
        loss = real_step(self, batch, i)
        return loss * float("nan") if self.trainer.global_step == 5 else loss

    monkeypatch.setattr(ImageClassifier, "training_step", step)
    run = tmp_path / "run"
    assert cli(args_for(data, "--run_dir", str(run), "--save_every_n_steps", "2", steps=8)) == 2
    err = last_error(capsys)
    ckpt = run / "checkpoints" / "last.ckpt"
    assert err.startswith("error: training loss is nan in optimizer step 6 (global_step 5"), err
    assert f"the last good checkpoint is {ckpt} (step 4)" in err
    good = state(run)
    assert good["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())
    assert not (run / "model.pth").exists()  # nothing written after the bad loss
