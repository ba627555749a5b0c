"""int8 post-training static quantization (calibrated on real CIFAR images) exported to .ptl (and .pte)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bounds import INT8_SELF, INT8_VS_FP32, assert_recorded_within, assert_within
from test_mobile_export import CIFAR_TEST, TINY, _cifar, _lite, _quiet, _tiny

from shufflenet.mobile import Calibration, ExportSpec, export
from shufflenet.mobile.images import list_images, load_images
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
    f32_path, f32_side = export("ptl", fp32, tmp_path / "fp32", ExportSpec([(32, 32)], images=None, log=_quiet))
    prev = torch.backends.quantized.engine
    i8_path, i8_side = export(
        "ptl",
        fp32,
        tmp_path / "int8",
        ExportSpec(
            [(32, 32), (48, 48)],
            images=CIFAR_TEST,
            atol=INT8_ATOL,
            rtol=INT8_RTOL,
            int8=Calibration(CIFAR_TRAIN, 32, (32, 32)),
            log=_quiet,
        ),
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
    assert_within(ref, got, INT8_SELF)  # the test's own bound (tests/bounds.py), not the exporter's
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


# ---------------------------------------------------------------------------------------- ONNX Runtime int8
#
# A random network's logits hardly depend on its input (biases dominate), so a calibration that sees nothing
# of the real inputs would go unnoticed on it. These tests use a network whose BatchNorm statistics are those
# of real CIFAR images (one pass in train mode): every layer is normalized for real inputs, as in a trained
# model, and the logits change from image to image.

ONNX_REASON = "needs the 'onnx' extra: pip install 'shufflenet[onnx]'"
SAMPLE_PHOTOS = sample_images_dir()


def _data_bn_source(name=TINY, size=(32, 32)) -> ModelSource:
    import shufflenet

    torch.manual_seed(0)
    model = shufflenet.create_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the pass
    model.train()
    with torch.no_grad():
        model(calibration_batch(CIFAR_TRAIN, 32, size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    return ModelSource(model.eval(), name, "test")


def _session_ops(path, optimize, tmp_path):
    """The op types ONNX Runtime actually runs for ``path`` at the default level or with optimizations off."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / f"session_{optimize}.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}


def test_onnx_int8_export_verified_on_real_photos(tmp_path):
    import onnxruntime  # noqa: F401 (setup installs it: missing fails, never skips)

    from shufflenet.mobile.onnx_export import onnx_runner
    from shufflenet.mobile.quantize import ORT_INT8_SCHEME

    src = _data_bn_source()
    sizes = [(32, 32), (48, 64)]
    spec = ExportSpec(sizes, atol=INT8_ATOL, rtol=INT8_RTOL, int8=Calibration(CIFAR_TRAIN, 32, (32, 32)), log=_quiet)
    path, side = export("onnx", src, tmp_path / "i8", spec)
    assert sorted(p.name for p in (tmp_path / "i8").iterdir()) == [f"{TINY}.onnx", f"{TINY}.onnx.json"]
    q = side["quantization"]
    assert q["scheme"] == ORT_INT8_SCHEME and q["calibration"]["images"] == 32
    # Per channel wherever ONNX Runtime supports it: every Conv and the classifier's Gemm.
    assert q["weights"]["Conv"]["per_channel"] >= 50 and q["weights"]["Conv"]["per_tensor"] == 0
    assert q["weights"]["Gemm"] == {"per_channel": 1, "per_tensor": 0}
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(side["operators"])
    fp32_bytes = 4 * sum(p.numel() for p in src.model.parameters())
    assert path.stat().st_size < 0.5 * fp32_bytes  # int8 weights (the QDQ nodes and scales cost a little)
    # Verified twice at every size: the int8 kernels against the file's own QDQ graph (random and real inputs),
    # and the file against the fp32 model on the real photos.
    assert [(c["input"], c["size"]) for c in side["verification"]["checks"]] == [
        (label, list(s)) for s in sizes for label in ("random", "real (2 images)")
    ]
    assert [c["size"] for c in side["fidelity"]["checks"]] == [list(s) for s in sizes]
    # The reference is a different computation: node by node in fp32, while the default level runs fused
    # int8 kernels.
    assert "QLinearConv" in _session_ops(path, True, tmp_path)
    assert "QLinearConv" not in _session_ops(path, False, tmp_path)
    # On other real photos than the verification's: close to the fp32 network, mostly the same class.
    x = load_images(list_images(SAMPLE_PHOTOS), (32, 32))
    with torch.no_grad():
        f32 = src.model(x)
    got = onnx_runner(path)(x)
    assert_within(f32, got, INT8_VS_FP32)
    assert F.cosine_similarity(got, f32).min() > 0.9
    assert (got.argmax(1) == f32.argmax(1)).float().mean() >= 0.5


def test_onnx_int8_refuses_a_degenerate_calibration(tmp_path):
    """Blank frames as calibration: the int8 file matches its own QDQ graph, but not the fp32 model."""
    import onnxruntime  # noqa: F401 (setup installs it: missing fails, never skips)
    from PIL import Image

    from shufflenet.mobile.verify import VerificationError

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (124, 116, 104)).save(blank / f"{i}.png")  # the normalization's mean colour
    src = _data_bn_source()
    out = tmp_path / "out"
    out.mkdir()
    spec = ExportSpec([(32, 32)], atol=INT8_ATOL, rtol=INT8_RTOL, int8=Calibration(blank, 4, (32, 32)), log=_quiet)
    with pytest.raises(VerificationError, match=r"int8 check against the fp32 model failed .*--calib-images DIR"):
        export("onnx", src, out, spec)
    assert list(out.iterdir()) == []  # nothing written, no temporary file left


def test_onnx_int8_kernels_are_checked_against_the_qdq_graph(tmp_path, monkeypatch):
    """A fault in the int8 kernels' result (injected into the optimized session only) is refused."""
    import onnxruntime  # noqa: F401 (setup installs it: missing fails, never skips)

    from shufflenet.mobile import onnx_export
    from shufflenet.mobile.verify import VerificationError

    real_runner = onnx_export.onnx_runner

    def off_by_ten_percent(path, threads=None, optimize=True):
        run = real_runner(path, threads, optimize)
        return (lambda x: run(x) * 1.1) if optimize else run

    monkeypatch.setattr(onnx_export, "onnx_runner", off_by_ten_percent)
    src = _data_bn_source()
    spec = ExportSpec(
        [(32, 32)], atol=INT8_ATOL, rtol=INT8_RTOL, int8=Calibration(CIFAR_TRAIN, 16, (32, 32)), log=_quiet
    )
    with pytest.raises(VerificationError, match="int8 kernels vs QDQ graph"):
        export("onnx", src, tmp_path, spec)
    assert list(tmp_path.iterdir()) == []


def test_cli_onnx_int8(tmp_path, capsys):
    import json

    import onnxruntime  # noqa: F401 (setup installs it: missing fails, never skips)

    from shufflenet.mobile.cli import cli

    out = tmp_path / "o"
    args = [TINY, "--format", "onnx", "--quantize", "int8", "--input-size", "32", "--out", str(out)]
    assert cli(args + ["--calib-images", str(CIFAR_TRAIN), "--calib-count", "16"]) == 0
    side = json.loads((out / f"{TINY}_int8.onnx.json").read_text())
    assert side["quantization"]["calibration"] == {"dir": str(CIFAR_TRAIN), "images": 16, "size": [32, 32]}
    assert side["verification"]["atol"] == INT8_ATOL and side["verification"]["rtol"] == INT8_RTOL
    assert (out / f"{TINY}_int8.onnx").is_file()
    capsys.readouterr()
    # Bad calibration input is one error line before any export work.
    assert cli(args + ["--calib-images", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --calib-images") and err.count("\n") == 1


def test_cli_ncnn_int8_without_the_tools_is_one_error_line(tmp_path, capsys, monkeypatch):
    import ncnn  # noqa: F401 (setup installs it: missing fails, never skips)
    import pnnx  # noqa: F401 (setup installs it: missing fails, never skips)

    from shufflenet.mobile.cli import cli

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # whatever this machine has: no ncnn2table here
    out = tmp_path / "o"
    rc = cli([TINY, "--format", "ncnn", "--quantize", "int8", "--input-size", "32", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1, err
    assert "ncnn2table and ncnn2int8 on PATH" in err and "wheels do not ship" in err
    assert not out.exists()


@pytest.mark.slow
def test_ncnn_int8_export_with_the_tools(tmp_path):
    """Only where ncnn2table and ncnn2int8 are on PATH (built from the ncnn source, docs/mobile.md)."""
    import pnnx  # noqa: F401 (setup installs it: missing fails, never skips)

    from shufflenet.mobile.ncnn_export import find_ncnn_int8_tools

    if find_ncnn_int8_tools() is None:
        pytest.skip("needs ncnn's ncnn2table and ncnn2int8 on PATH (built from the ncnn source, docs/mobile.md)")
    src = _data_bn_source()
    spec = ExportSpec([(32, 32), (48, 64)], int8=Calibration(CIFAR_TRAIN, 32, (32, 32)), log=_quiet)
    paths, side = export("ncnn", src, tmp_path, spec)
    assert side["quantization"]["table_entries"] > 10
    assert side["runtime_options"] == {"use_packing_layout": False}  # what an app must set (docs/mobile.md)
    assert_recorded_within(side["verification"]["checks"], INT8_SELF)
    # int8 weights: the .bin shrinks to about a quarter.
    f32_paths, _ = export("ncnn", src, tmp_path / "f32", ExportSpec([(32, 32)], log=_quiet))
    assert paths["bin"].stat().st_size < 0.5 * f32_paths["bin"].stat().st_size
