"""``scripts/gpu_check.sh`` (``tools/gpu_check.py``): without a CUDA device it says so in one line and exits 0,
writing nothing. Its GPU path runs only on a CUDA machine (the checks it makes are listed in its docstring)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from proc import run as watched_run

from tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    run = watched_run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(out)], cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == [gpu_check.no_gpu_message()] and "no CUDA device" in run.stdout
    assert not out.exists()


def test_the_no_gpu_line_is_given_only_without_a_gpu():
    if torch.cuda.is_available():
        assert gpu_check.no_gpu_message() is None
    else:
        assert gpu_check.no_gpu_message().startswith("gpu_check: no CUDA device")


def test_bad_arguments_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--steps", "many"])
    assert exc.value.code == 2 and "--steps" in capsys.readouterr().err
