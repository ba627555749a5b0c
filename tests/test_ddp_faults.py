"""A NaN loss under DDP: two gloo processes on CPU (``--trainer.strategy ddp --trainer.devices 2``), the NaN on one
rank only. Both ranks must stop at the same step (a rank that stopped alone would leave the other waiting in the
next all-reduce for ever), each with the message, and nothing written before the bad step is lost."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from proc import run as watched_run
from test_classification_train import TINY, env, make_tree

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# The training script with a NaN loss injected on rank 1 at global step 5 (Lightning starts rank 1 by running the
# same script again, so the injection is in both processes; only rank 1 uses it).
WRAPPER = """
import sys

from shufflenet.classification.module import ImageClassifier

real = ImageClassifier.training_step


def step(self, batch, i):
    loss = real(self, batch, i)
    if self.trainer.global_step == 5 and self.trainer.global_rank == 1:
        return loss * float("nan")
    return loss


ImageClassifier.training_step = step
from shufflenet.classification.cli import cli  # noqa: E402

sys.exit(cli())
"""


def test_a_nan_loss_on_one_rank_stops_both_at_the_same_step(tmp_path):
    data = make_tree(tmp_path / "data", per_class=8, val_per_class=1)
    run = tmp_path / "run"
    script = tmp_path / "train_with_nan.py"
    script.write_text(WRAPPER)
    args = ["--data.root", str(data), "--data.batch_size", "4", "--trainer.accelerator", "cpu"]
    args += ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_steps", "8"]
    args += ["--save_every_n_steps", "2", "--run_dir", str(run), *TINY]
    proc = watched_run([sys.executable, str(script), *args], cwd=tmp_path, env=env(tmp_path))
    err = proc.stderr
    assert proc.returncode == 2 and "Traceback" not in err, err[-4000:]
    errors = sorted(line for line in err.splitlines() if line.startswith("error:"))
    ckpt = run / "checkpoints" / "last.ckpt"
    tail = "in optimizer step 6 (global_step 5, epoch 0); stopped before that step changed the weights; "
    tail += f"the last good checkpoint is {ckpt} (step 4)"
    # Rank 0 stops at rank 1's step, and says so. Rank 1 prints its own line unless Lightning's launcher, ending the
    # run on rank 0's error, kills it first: either way no process trains on past step 5.
    ours = [
        e for e in errors if e.startswith("error: training loss is not finite on another DDP process (rank 0's is ")
    ]
    theirs = [e for e in errors if e.startswith("error: training loss is nan ")]
    assert len(ours) == 1 and len(theirs) <= 1 and len(errors) == len(ours) + len(theirs), err[-4000:]
    assert all(tail in e for e in errors), errors
    # nothing lost: the step-4 checkpoint, whole and finite; nothing written after the bad loss
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not (run / "model.pth").exists() and not list(run.rglob("*.tmp"))
