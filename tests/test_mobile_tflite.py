"""LiteRT (TensorFlow Lite) export (optional extra ``litert``): ``--format tflite`` through the CLI, fp32 and
full-integer int8, verified in ai-edge-litert's Interpreter on the package's sample photos.

One litert-torch conversion takes ~20 s of CPU here (torch.export, FX passes, MLIR lowering), so the
converting tests share two module-scoped exports (fp32 through the CLI, int8 through the API) of the narrowest
ShuffleNet (0.25x g3, random BatchNorm statistics) at 64 px, and are marked ``slow``. Float bounds are the
wing's defaults (fp32 kernels that sum in another order differ by ~1e-7 here); int8 is compared with its own
PT2E reference within ``INT8_ATOL + INT8_RTOL x max|output|`` (a few output quantization steps).
"""

from __future__ import annotations

import json
import sys
from importlib.util import find_spec

import pytest
import torch
from bounds import FP32, INT8_SELF, assert_recorded_within, assert_within
from conftest import _randomize_bn

import shufflenet
from shufflenet.mobile import ExportSpec, export
from shufflenet.mobile.cli import cli
from shufflenet.mobile.source import ModelSource
from shufflenet.mobile.verify import INT8_ATOL, INT8_RTOL, VerificationError

TINY = "shufflenet_v1_x0_25_g3"
SIZE = 64
LITERT = find_spec("litert_torch") is not None and find_spec("ai_edge_litert") is not None
needs_litert = pytest.mark.skipif(
    not LITERT, reason="needs the 'litert' extra: pip install \"shufflenet[litert]\" (litert-torch, ai-edge-litert)"
)


def _one_error_line(capsys, expected):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def _model():
    torch.manual_seed(0)
    return _randomize_bn(shufflenet.create_model(TINY))


@pytest.mark.parametrize("module", ["litert_torch", "ai_edge_litert.interpreter"])
def test_missing_litert_is_one_error_line_naming_the_extra(tmp_path, monkeypatch, capsys, module):
    monkeypatch.setitem(sys.modules, module, None)  # the import fails as if the package were not installed
    assert cli([TINY, "--format", "ptl", "tflite", "--input-size", "32", "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, 'pip install "shufflenet[litert]"')
    assert not (tmp_path / "o").exists()  # checked before any export (the .ptl was not written either)


def test_tflite_refuses_camera_input_and_the_detector(tmp_path, capsys):
    assert cli([TINY, "--format", "tflite", "--camera-input", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "--format tflite takes float32 NHWC tensors")
    assert cli(["--detector", "demo_shapes", "--format", "tflite", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "no pte / ncnn / tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory):
    """``mobile/export.py WEIGHTS --format tflite --input-size 64`` on a package weights file."""
    if not LITERT:
        pytest.skip("needs the 'litert' extra: pip install \"shufflenet[litert]\" (litert-torch, ai-edge-litert)")
    tmp = tmp_path_factory.mktemp("tflite")
    model = _model()
    weights = shufflenet.save_weights(model, tmp / "model.pth", arch=TINY)
    out = tmp / "out"
    rc = cli([str(weights), "--format", "tflite", "--input-size", str(SIZE), "--out", str(out)])
    return {"rc": rc, "out": out, "model": model, "weights": weights}


@pytest.mark.slow
@needs_litert
def test_tflite_cli_writes_a_verified_nhwc_file_on_real_photos(fp32_export):
    from shufflenet.mobile.tflite_export import tflite_runner

    out, model = fp32_export["out"], fp32_export["model"]
    assert fp32_export["rc"] == 0
    path = out / f"{TINY}_{SIZE}x{SIZE}.tflite"
    assert sorted(p.name for p in out.iterdir()) == sorted([path.name, f"{TINY}.tflite.json"])  # no temporary left
    side = json.loads((out / f"{TINY}.tflite.json").read_text())
    checks = side["verification"]["checks"]
    assert [(c["input"].split(" ")[0], c["size"], c["batch"]) for c in checks] == [
        ("random", [SIZE, SIZE], 1),
        ("real", [SIZE, SIZE], 2),  # two of the package's sample photos
    ]
    assert_recorded_within(checks, FP32)  # the test's own bound (tests/bounds.py), not the sidecar's verdict
    assert side["verification"]["images"].endswith("images") and side["rewrite"]
    assert side["input"]["shape"].startswith("1 x H x W x 3") and side["input"]["static_shapes"] is True
    assert side["outputs"] == [[1, 1000]] and side["quantization"] is None
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE", "RESHAPE"} <= set(side["operators"])
    assert side["files"][f"{SIZE}x{SIZE}"]["size_bytes"] == path.stat().st_size
    assert side["exported_with"]["litert-torch"] and side["exported_with"]["ai-edge-litert"]
    # the file itself, on inputs the export did not see: NHWC tensors, NCHW tensors and channels_last ones agree
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = model(x)
    nchw = tflite_runner({(SIZE, SIZE): path})(x)
    nhwc = tflite_runner(path, layout="nhwc")(x.permute(0, 2, 3, 1).contiguous())
    cl = tflite_runner(path)(x.contiguous(memory_format=torch.channels_last))
    for got in (nchw, nhwc, cl):
        assert_within(ref, got, FP32)


@pytest.mark.slow
@needs_litert
def test_tflite_export_refuses_a_wrong_file_and_writes_nothing(fp32_export, tmp_path, monkeypatch):
    """A file that computes something else is refused before anything is written (the real converter's bytes,
    with a runtime that is off by 10x the bound, so no second conversion is needed)."""
    from shufflenet.mobile import tflite_export

    data = (fp32_export["out"] / f"{TINY}_{SIZE}x{SIZE}.tflite").read_bytes()
    monkeypatch.setattr(tflite_export, "convert_to_tflite", lambda form, example, quantizer=None: data)
    real = tflite_export.tflite_runner

    def off_by_a_little(paths, threads=1, layout="nchw"):
        run = real(paths, threads, layout)
        return lambda x: run(x) + 1e-3

    monkeypatch.setattr(tflite_export, "tflite_runner", off_by_a_little)
    src = ModelSource(fp32_export["model"], TINY, "test")
    with pytest.raises(VerificationError, match="LiteRT interpreter"):
        export("tflite", src, tmp_path, ExportSpec([(SIZE, SIZE)], log=lambda s: None))
    assert list(tmp_path.iterdir()) == []
    # the same bytes with the honest runtime pass: the refusal came from the comparison, not the plumbing
    monkeypatch.setattr(tflite_export, "tflite_runner", real)
    paths, _ = export("tflite", src, tmp_path, ExportSpec([(SIZE, SIZE)], log=lambda s: None))
    assert paths[(SIZE, SIZE)].read_bytes() == data


@pytest.mark.slow
@needs_litert
def test_tflite_int8_cli_is_full_integer_and_verified_against_its_reference(fp32_export, tmp_path):
    from shufflenet.mobile.images import resolve_images
    from shufflenet.mobile.tflite_export import tflite_runner
    from shufflenet.mobile.verify import make_inputs

    model, out = fp32_export["model"], tmp_path / "q"
    args = [str(fp32_export["weights"]), "--format", "tflite", "--quantize", "int8", "--calib-count", "8"]
    assert cli([*args, "--input-size", str(SIZE), "--out", str(out)]) == 0
    path = out / f"{TINY}_int8_{SIZE}x{SIZE}.tflite"
    assert sorted(p.name for p in out.iterdir()) == sorted([path.name, f"{TINY}_int8.tflite.json"])
    side = json.loads((out / f"{TINY}_int8.tflite.json").read_text())
    q = side["quantization"]
    assert q["scheme"].startswith("int8 full integer") and q["float_ops"] == []  # every op runs in int8
    assert q["calibration"]["images"] >= 2 and q["calibration"]["dir"].endswith("images")  # the sample photos
    assert q["io"]["input"]["dtype"] == "int8" and q["io"]["input"]["scale"] > 0
    assert all(o["dtype"] == "int8" for o in q["io"]["outputs"])
    # verified against its own PT2E reference with the int8 bound, on random input and real photos
    assert side["verification"]["atol"] == INT8_ATOL and side["verification"]["rtol"] == INT8_RTOL
    assert [c["input"].split(" ")[0] for c in side["verification"]["checks"]] == ["random", "real"]
    # int8 weights: well under half the size of the fp32 file
    assert path.stat().st_size < 0.5 * side_size(fp32_export)
    # and close to the fp32 model on real photos (a few int8 steps, not a different function)
    real = make_inputs([(SIZE, SIZE)], resolve_images("auto"), 2)[1].tensor
    with torch.no_grad():
        ref = model(real)
    assert_within(ref, tflite_runner(path)(real), INT8_SELF)


def side_size(export) -> int:
    return (export["out"] / f"{TINY}_{SIZE}x{SIZE}.tflite").stat().st_size
