"""int8 post-training static quantization (calibrated on real CIFAR images) exported to .ptl (and .pte)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_mobile_export import CIFAR_TEST, TINY, _cifar, _lite, _quiet, _tiny

from shufflenet.mobile.ptl import export_ptl
from shufflenet.mobile.quantize import calibration_batch, quantize_fx_int8, resolve_calib_dir
from shufflenet.mobile.source import MobileError, ModelSource
from shufflenet.mobile.verify import INT8_ATOL, INT8_RTOL
from shufflenet.paths import sample_images_dir

CIFAR_TRAIN = CIFAR_TEST.parent / "train"


@pytest.mark.slow
def test_int8_ptl_verifies_against_its_reference_and_is_smaller(tmp_path):
    fp32 = ModelSource(_tiny(), TINY, "test")
    q = quantize_fx_int8(fp32, CIFAR_TRAIN, 32, (32, 32))
    assert q.extra["quantization"]["calibration"]["images"] == 32
    assert any("quantized" in type(m).__module__ for m in q.model.modules())  # really converted
    f32_path, f32_side = export_ptl(fp32, tmp_path / "fp32", [(32, 32)], images=None, log=_quiet)
    prev = torch.backends.quantized.engine
    i8_path, i8_side = export_ptl(
        q,
        tmp_path / "int8",
        [(32, 32), (48, 48)],
        images=CIFAR_TEST,
        atol=INT8_ATOL,
        rtol=INT8_RTOL,
        quantized_engine="qnnpack",
        log=_quiet,
    )
    assert torch.backends.quantized.engine == prev  # restored
    assert i8_side["size_bytes"] < 0.7 * f32_side["size_bytes"]  # tiny model: bytecode is a fixed share
    assert any(op.startswith("quantized::conv2d") for op in i8_side["operators"])
    assert i8_side["quantized_engine"] == "qnnpack" and i8_side["extra"]["quantization"]["scheme"].startswith("int8")
    # The file reproduces its own int8 reference within the documented bound, on real images.
    x = _cifar(4, (32, 32))
    torch.backends.quantized.engine = "qnnpack"
    try:
        with torch.no_grad():
            ref, got = q.model(x), _lite(i8_path)(x)
    finally:
        torch.backends.quantized.engine = prev
    assert (got - ref).abs().max() <= INT8_ATOL + INT8_RTOL * ref.abs().max()
    # ... and stays close to the fp32 network it was calibrated from.
    with torch.no_grad():
        f32 = fp32.model(x)
    assert F.cosine_similarity(got, f32).min() > 0.95


@pytest.mark.slow
def test_int8_cli_and_calibration_errors(tmp_path, capsys):
    from shufflenet.mobile.cli import cli

    rc = cli([TINY, "--quantize", "int8", "--calib-images", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--calib-images" in err and "no such folder" in err and err.count("\n") == 1
    with pytest.raises(MobileError, match="calib-count"):
        calibration_batch(CIFAR_TRAIN, 0, (32, 32), (0.5,) * 3, (0.5,) * 3)
    batch = calibration_batch(CIFAR_TRAIN, 20, (32, 32), (0.5,) * 3, (0.5,) * 3)
    assert batch.shape == (20, 3, 32, 32) and batch.std() > 0.1  # real images, spread over the classes
    # The default calibration set is the package's sample photos: real images on any machine.
    assert resolve_calib_dir("auto") == sample_images_dir()
    photos = calibration_batch(resolve_calib_dir("auto"), 64, (32, 32), (0.5,) * 3, (0.5,) * 3)
    assert 4 <= photos.shape[0] <= 64 and photos.std() > 0.1
