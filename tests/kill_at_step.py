"""Kill a classification training at a fixed step with a real signal, for the kill-and-resume tests.

``run_killed(args, step, sig)`` runs ``shufflenet-train ARGS`` in a new process group; when the run's
``global_step`` reaches ``step`` (in ``on_train_batch_end``, before that step's checkpoint is written) the main
process sends ``sig`` to its whole process group (itself and its data workers), as SLURM and a terminal do. A
fixed step, not a moment: the test is the same on a loaded machine and a quiet one.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from proc import run as watched_run

CHILD = """
import os, signal, sys
from shufflenet.classification.callbacks import StopOnSignal
_step, _sig = int(os.environ["KILL_AT_STEP"]), int(os.environ["KILL_SIGNAL"])
_original = StopOnSignal.on_train_batch_end
def on_train_batch_end(self, trainer, *args, **kwargs):
    if trainer.global_step == _step:
        os.killpg(os.getpgid(0), _sig)
    return _original(self, trainer, *args, **kwargs)
StopOnSignal.on_train_batch_end = on_train_batch_end
from shufflenet.classification.cli import cli
sys.argv[0] = "shufflenet-train"
sys.exit(cli(sys.argv[1:]))
"""


def run_killed(args: list, step: int, sig: signal.Signals, env: dict) -> subprocess.CompletedProcess:
    """The run in its own process group (the child signals its group); fails only when it hangs (tests/proc.py)."""
    e = dict(env, KILL_AT_STEP=str(step), KILL_SIGNAL=str(int(sig)))
    return watched_run([sys.executable, "-c", CHILD, *args], env=e)
