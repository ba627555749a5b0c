"""Detection resume with real signals: detection/train_net.py killed (kill -9, SIGTERM, to its process group:
the trainer and its data worker) at fixed iterations, resumed with ``--resume`` each time, ends with the weights
of an uninterrupted run, tensor by tensor. The data side at every iteration: test_resume_replay.py."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from proc import run as watched_run

REPO = Path(__file__).resolve().parents[1]
TRAIN_NET = REPO / "detection" / "train_net.py"

pytestmark = pytest.mark.slow

# The script itself, after wrapping the trainer's step: at iteration KILL_AT_ITER, before the step runs, the
# process sends KILL_SIGNAL to its process group.
CHILD = """
import os, runpy, sys
from shufflenet.detection.engine import Trainer
_at, _sig = int(os.environ["KILL_AT_ITER"]), int(os.environ["KILL_SIGNAL"])
_step = Trainer.run_step
def run_step(self):
    if self.iter == _at:
        os.killpg(os.getpgid(0), _sig)
    return _step(self)
Trainer.run_step = run_step
sys.argv = sys.argv[1:]  # the script's path and its arguments, as when it runs itself
runpy.run_path(sys.argv[0], run_name="__main__")
"""

ARGS = [
    "--config",
    "coco2017_shufflenet1x_300",
    "MODEL.SHUFFLENET.NAME",
    "shufflenet_v1_x0_25_g3",
    "MODEL.DEVICE",
    "cpu",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.BASE_LR",
    "0.01",
    "SOLVER.WARMUP_ITERS",
    "1",
    "DATALOADER.NUM_WORKERS",
    "1",
    "INPUT.MIN_SIZE_TRAIN",
    "(96, 128)",
    "INPUT.MAX_SIZE_TRAIN",
    "192",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "100",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
    "8",
    "SEED",
    "0",
    "DATASETS.TRAIN",
    "('coco_2017_train',)",
    "DATASETS.TEST",
    "()",
    "SOLVER.MAX_ITER",
    "8",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
]


def test_kill_and_sigterm_at_fixed_iterations_resume_to_the_uninterrupted_weights(tmp_path, coco_datasets_root):
    env = dict(os.environ, DETECTRON2_DATASETS=str(coco_datasets_root), OMP_NUM_THREADS="1")
    run = lambda out, *extra: watched_run(  # noqa: E731
        [sys.executable, str(TRAIN_NET), *extra, *ARGS, "OUTPUT_DIR", str(out)], env=env
    )
    ref = run(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "run"
    # (iteration at which the signal is sent, signal, checkpoint --resume continues from): checkpoints after
    # iterations 1, 3, 5 (CHECKPOINT_PERIOD 2); 8 images, 2 a batch: iterations 4-7 are the stream's second epoch,
    # interrupted twice (resumed from 3, then from 5)
    plan = [(3, signal.SIGKILL, 1), (5, signal.SIGTERM, 3), (7, signal.SIGKILL, 5)]
    for i, (at, sig, kept) in enumerate(plan):
        proc = watched_run(  # its own process group (the child signals its group)
            [sys.executable, "-c", CHILD, str(TRAIN_NET), *(["--resume"] if i else []), *ARGS, "OUTPUT_DIR", str(out)],
            env=dict(env, KILL_AT_ITER=str(at), KILL_SIGNAL=str(int(sig))),
        )
        assert proc.returncode == -sig, (sig.name, proc.returncode, proc.stderr[-3000:])
        assert (out / "last_checkpoint").read_text().strip() == f"model_{kept:07d}.pth", (at, sig.name)
    final = run(out, "--resume")
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Starting training from iteration 6" in (out / "log.txt").read_text()
    a = torch.load(tmp_path / "ref" / "model_final.pth", map_location="cpu", weights_only=True)
    b = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert a["iteration"] == b["iteration"] == 7
    assert a["model"].keys() == b["model"].keys()
    differ = [k for k, v in a["model"].items() if not torch.equal(v, b["model"][k])]
    assert not differ, differ
