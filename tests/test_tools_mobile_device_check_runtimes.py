"""The device side of ``make check-aarch64`` for ONNX/ncnn files, run here on a real tiny ONNX file."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch


def _case_dir(tmp_path):
    from shufflenet.mobile.onnx_export import onnx_runner, write_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, groups=3), torch.nn.ReLU(), torch.nn.Flatten()).eval()
    write_onnx(model, torch.randn(1, 3, 8, 8), tmp_path / "m.onnx", ["logits"], "NCHW")
    x = torch.randn(2, 3, 8, 8)
    np.save(tmp_path / "in0.npy", x.numpy())
    np.save(tmp_path / "exp0.npy", onnx_runner(tmp_path / "m.onnx")(x).numpy())
    case = {"runtime": "onnx", "files": ["m.onnx"], "inputs": ["in0.npy"], "expected": ["exp0.npy"]}
    (tmp_path / "runtime_cases.json").write_text(json.dumps([{**case, "atol": 1e-4, "rtol": 1e-5}]))
    return tmp_path


def test_device_check_runtimes_ok_mismatch_and_nothing_checked(tmp_path, capsys, monkeypatch):
    from tools import mobile_device_check_runtimes as dev

    root = _case_dir(tmp_path)
    assert dev.main([str(root)]) == 0
    assert "[device] OK   onnx m.onnx" in capsys.readouterr().out
    np.save(root / "exp0.npy", np.load(root / "exp0.npy") + 1.0)  # a device that computes something else
    assert dev.main([str(root)]) == 1
    assert "[device] FAIL onnx m.onnx" in capsys.readouterr().out
    # A runtime that cannot be imported is skipped; when that leaves nothing checked, the check fails.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert dev.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "[device] SKIP onnx" in out and "nothing was checked" in out
