"""ExecuTorch ``--format pte`` (optional dependency): verified .pte per size, int8 via PT2E, one message without it."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from bounds import INT8_SELF, INT8_VS_FP32, assert_recorded_within, assert_within
from test_mobile_export import CIFAR_TEST, TINY, _cifar, _quiet, _tiny

from shufflenet.mobile import Calibration, ExportSpec, export
from shufflenet.mobile import pte as mpte
from shufflenet.mobile.cli import cli
from shufflenet.mobile.source import ModelSource
from shufflenet.mobile.verify import INT8_ATOL, INT8_RTOL, VerificationError


def test_pte_without_executorch_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mpte, "executorch_available", lambda: False)
    rc = cli([TINY, "--format", "pte", "--input-size", "32", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install executorch==1.3.1" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def fp32_pte(tmp_path_factory):
    """One fp32 export at two sizes, shared by the tests below (each lowering takes seconds)."""
    model, out = _tiny(), tmp_path_factory.mktemp("pte")
    paths, side = export(
        "pte", ModelSource(model, TINY, "test"), out, ExportSpec([(32, 32), (40, 56)], images=CIFAR_TEST, log=_quiet)
    )
    return model, out, paths, side


@pytest.mark.slow
def test_pte_export_verifies_each_size(fp32_pte):
    model, tmp_path, paths, side = fp32_pte
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{TINY}_32x32.pte", f"{TINY}_40x56.pte", f"{TINY}.pte.json"]
    )
    on_disk = json.loads((tmp_path / f"{TINY}.pte.json").read_text())
    assert on_disk["files"]["40x56"]["sha256"] == hashlib.sha256(paths[(40, 56)].read_bytes()).hexdigest()
    assert on_disk["operators"] == ["executorch_call_delegate", "getitem"]  # one XNNPACK delegate: the whole net
    assert on_disk["input"]["memory_format"] == "channels_last" and on_disk["rewrite"]
    assert on_disk["exported_with"]["executorch"] == mpte.executorch_version()
    run = mpte.pte_runner(paths, threads=1)
    for size in [(32, 32), (40, 56)]:
        x = _cifar(2, size)
        with torch.no_grad():  # NCHW and NHWC tensors alike: the runner hands ExecuTorch the program's layout
            torch.testing.assert_close(run(x), model(x), atol=1e-4, rtol=1e-5)
            torch.testing.assert_close(
                run(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-4, rtol=1e-5
            )


@pytest.mark.slow
def test_pte_refuses_a_wrong_program(tmp_path, monkeypatch, fp32_pte):
    """A program that computes something else than the model (here: lowered from other weights) is refused."""
    model, _, paths, _ = fp32_pte
    wrong_program = paths[(32, 32)].read_bytes()  # lowered from `model`
    monkeypatch.setattr(mpte, "lower_to_pte", lambda m, example: (wrong_program, ["executorch_call_delegate"]))
    other = _tiny()
    with torch.no_grad():
        other.fc.bias.add_(0.05)  # the model being exported differs from the program by exactly 0.05
    with pytest.raises(VerificationError, match=r"ExecuTorch runtime: max \|eager - exported\| = 0.05"):
        export("pte", ModelSource(other, TINY, "test"), tmp_path, ExportSpec([(32, 32)], images=None, log=_quiet))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_pte_int8_pt2e_verifies_and_is_smaller(tmp_path, fp32_pte):
    f32 = fp32_pte[3]
    src = ModelSource(_tiny(), TINY, "test")
    calib = Calibration(CIFAR_TEST.parent / "train", 16, (32, 32))
    spec = ExportSpec([(32, 32)], images=CIFAR_TEST, int8=calib, atol=INT8_ATOL, rtol=INT8_RTOL, log=_quiet)
    paths, side = export("pte", src, tmp_path / "q", spec)
    assert side["quantization"].startswith("int8")
    assert side["files"]["32x32"]["size_bytes"] < 0.7 * f32["files"]["32x32"]["size_bytes"]
    assert_recorded_within(side["verification"]["checks"], INT8_SELF)  # the test's bound, not the sidecar's ok
    x = _cifar(2, (32, 32))
    with torch.no_grad():
        got, ref = mpte.pte_runner(paths)(x), src.model(x)
    assert torch.nn.functional.cosine_similarity(got, ref).min() > 0.95  # close to fp32 too
    assert_within(ref, got, INT8_VS_FP32)
