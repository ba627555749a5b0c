"""ONNX Runtime and ncnn exports (optional extras ``onnx`` and ``ncnn``), the plain ``torch.onnx.export`` of the
backbone, and the verifier's refusal of NaN/inf.

Models are the narrowest ShuffleNets (0.25x) with random BatchNorm statistics at 32-96 px; real inputs are the
package's sample photos. Float bounds are the wing's defaults (atol 1e-4 + 1e-5 x max|eager|): fp32 kernels
that sum in another order differ by a few ulps of the activations (about 1e-6 here), far below it.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from bounds import FP32, assert_within
from conftest import _randomize_bn

import shufflenet
from shufflenet.mobile import ExportSpec, export
from shufflenet.mobile.cli import cli
from shufflenet.mobile.source import ModelSource
from shufflenet.mobile.verify import VerificationError, compare_outputs

TINY = "shufflenet_v1_x0_25_g3"


def _one_error_line(capsys, expected):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def _src(name=TINY, **kw) -> ModelSource:
    torch.manual_seed(0)
    return ModelSource(_randomize_bn(shufflenet.create_model(name, **kw)), name, "test")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", [0, 1, 2])
def test_compare_outputs_fails_on_nan_or_inf_in_any_output(bad, where):
    ref = (torch.ones(4, 4), torch.ones(4), torch.ones(4))
    got = [t.clone() for t in ref]
    got[where][0] = bad
    res = compare_outputs(ref, tuple(got))
    assert res["ok"] is False and f"exported output {where}" in res["why"]
    res = compare_outputs(tuple(got), ref)  # in the eager reference too
    assert res["ok"] is False and f"eager output {where}" in res["why"]
    assert compare_outputs(ref, tuple(t.clone() for t in ref))["ok"] is True


def _ort(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "name,kw",
    [
        ("shufflenet_v1_x0_25_g3", {}),
        ("shufflenet_v1_x0_25_g8", {}),
        ("shufflenet_v1_x0_25_g3", {"features_only": True}),
    ],
)
def test_plain_torch_onnx_export_of_the_backbone_runs_in_onnx_runtime(tmp_path, name, kw):
    """What a user tries first: torch.onnx.export on the model as created (no project code in between)."""
    import onnx
    import onnxruntime  # noqa: F401 (setup installs it: missing fails, never skips)

    model = _src(name, **kw).model
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 64, 64),),
        str(path),
        input_names=["x"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
        dynamo=False,
    )
    onnx.checker.check_model(str(path))
    x = torch.randn(2, 3, 96, 128)  # another batch and size than traced
    got = _ort(path).run(None, {"x": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    ref = ref if isinstance(ref, list) else [ref]
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        assert (torch.from_numpy(g) - r).abs().max().item() <= 1e-4 + 1e-5 * r.abs().max().item()
    # eager keeps the native op: the export form is used only while exporting
    assert not torch.onnx.is_in_onnx_export()


@pytest.mark.slow
def test_plain_torch_onnx_export_works_for_every_registered_shufflenet(tmp_path):
    import onnx  # noqa: F401 (setup installs it: missing fails, never skips)

    names = [n for n in shufflenet.list_models() if n.startswith("shufflenet_v1")]
    assert len(names) >= 20
    for name in names:
        torch.onnx.export(shufflenet.create_model(name).eval(), (torch.randn(1, 3, 32, 32),), str(tmp_path / "m.onnx"))


def test_onnx_cli_writes_a_verified_dynamic_file_on_real_photos(tmp_path, capsys):
    import onnxruntime  # noqa: F401 (setup installs it: missing fails, never skips)

    out = tmp_path / "o"
    torch.manual_seed(0)  # the CLI builds the network from torch's generator: the test builds the same one below
    assert cli([TINY, "--format", "onnx", "--input-size", "64", "96x128", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    path = out / f"{TINY}.onnx"
    assert f"wrote {path}" in printed and f"wrote {out / (TINY + '.onnx.json')}" in printed
    side = json.loads((out / f"{TINY}.onnx.json").read_text())
    checks = side["verification"]["checks"]
    assert [(c["input"].split(" ")[0], c["size"], c["batch"]) for c in checks] == [
        ("random", [64, 64], 1),
        ("real", [64, 64], 2),
        ("random", [96, 128], 1),
        ("real", [96, 128], 2),
    ]
    assert side["input"]["dynamic_axes"] == ["batch", "height", "width"] and side["rewrite"]
    assert {"Conv", "Transpose", "Reshape"} <= set(side["operators"])
    assert sorted(p.name for p in out.iterdir()) == [f"{TINY}.onnx", f"{TINY}.onnx.json"]  # no temporary left
    torch.manual_seed(0)
    model = shufflenet.create_model(TINY).eval()  # the network the CLI exported (same seed, same draws)
    x = torch.randn(3, 3, 80, 48)  # a batch and a size the export never saw (dynamic axes)
    got = torch.from_numpy(_ort(path).run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        ref = model(x)
    assert got.shape == (3, model.fc.out_features)
    assert_within(ref, got, FP32)
    assert not torch.allclose(ref, shufflenet.create_model(TINY).eval()(x), atol=1e-2)  # the seed matters here


def test_onnx_export_refuses_a_wrong_graph_and_writes_nothing(tmp_path, monkeypatch):
    import onnxruntime  # noqa: F401 (setup installs it: missing fails, never skips)

    from shufflenet.mobile import onnx_export

    real = onnx_export.onnx_runner

    def off_by_a_little(path, threads=None):
        run = real(path, threads)
        return lambda x: run(x) + 1e-3  # a kernel that is wrong by 10x the bound

    monkeypatch.setattr(onnx_export, "onnx_runner", off_by_a_little)
    with pytest.raises(VerificationError, match="ONNX Runtime"):
        export("onnx", _src(), tmp_path, ExportSpec([(32, 32)], log=lambda s: None))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt,module,extra", [("onnx", "onnxruntime", "onnx"), ("ncnn", "pnnx", "ncnn")])
def test_missing_optional_runtime_is_one_error_line_naming_the_extra(tmp_path, monkeypatch, capsys, fmt, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    assert cli([TINY, "--format", "ptl", fmt, "--input-size", "32", "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, f'pip install "shufflenet[{extra}]"')
    assert not (tmp_path / "o").exists()  # checked before any export (the .ptl was not written either)


@pytest.mark.slow
def test_ncnn_export_verifies_at_two_sizes_in_fp32(tmp_path):
    import ncnn  # noqa: F401 (setup installs it: missing fails, never skips)
    import pnnx  # noqa: F401 (setup installs it: missing fails, never skips)

    from shufflenet.mobile.ncnn_export import ncnn_runner

    src = _src()
    paths, side = export("ncnn", src, tmp_path, ExportSpec([(64, 64), (96, 128)], log=lambda s: None))
    assert [c["size"] for c in side["verification"]["checks"]] == [[64, 64], [64, 64], [96, 128], [96, 128]]
    assert {"Convolution", "ShuffleChannel"} <= set(side["layers"]) and side["storage"].startswith("fp32")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TINY}.ncnn.bin", f"{TINY}.ncnn.json", f"{TINY}.ncnn.param"]
    # the .param is not tied to the traced sizes: a third size runs and matches eager
    x = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        ref = src.model(x)
    got = ncnn_runner(paths["param"], paths["bin"])(x)
    assert_within(ref, got, FP32)  # the test's own bound (tests/bounds.py), not compare_outputs' default
