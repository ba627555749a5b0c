"""The mobile developer tools in tools/: the emulated aarch64 check's host side and the int8 report.

The CLI cases fail before any export, and check what a user sees (one `error:` line, exit 2, nothing created);
the report runs once on a tiny model and the CIFAR slice of tests/data (ONNX Runtime and ncnn rows).
"""

from __future__ import annotations

import pytest

from tools import mobile_aarch64 as aarch64
from tools import mobile_int8_report as int8_report

TINY = "shufflenet_v1_x0_25_g3"


def _one_error_line(capsys, expected):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_aarch64_prepare_bad_input_is_one_error_line(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert aarch64.cli(["prepare", str(tmp_path / "c"), "--models", "no_such_model"]) == 2
    _one_error_line(capsys, "unknown model name 'no_such_model'")
    assert aarch64.cli(["prepare", str(f), "--models", TINY]) == 2
    _one_error_line(capsys, "is a file, not a folder")
    assert aarch64.cli(["prepare", str(tmp_path / "c"), "--input-size", "8"]) == 2
    _one_error_line(capsys, "input size '8' is not valid")
    assert not (tmp_path / "c").exists()


def test_tools_are_command_line_programs(capsys):
    for mod, prog in ((aarch64, "tools.mobile_aarch64"), (int8_report, "tools.mobile_int8_report")):
        with pytest.raises(SystemExit) as exc:
            mod.cli(["--help"])
        assert exc.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m {prog} [-h]")


def test_int8_report_rows_side_by_side(tmp_path, monkeypatch):
    """The report on a tiny model and the CIFAR slice: ONNX Runtime fp32/int8 and ncnn rows beside eager, ncnn
    int8 listed as skipped without its tools, and a row registered from outside (how a new runtime is added)."""
    import json
    from pathlib import Path

    import ncnn  # noqa: F401 (setup installs it: missing fails, never skips)
    import onnxruntime  # noqa: F401 (setup installs it: missing fails, never skips)
    import torch

    import shufflenet

    data = Path(__file__).parent / "data" / "cifar10"
    torch.manual_seed(0)
    weights = shufflenet.save_weights(shufflenet.create_model(TINY, num_classes=10), tmp_path / "tiny.pth")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no ncnn2table / ncnn2int8, whatever this machine has

    def export_eager(ctx):  # a runtime whose "file" is the weights and whose runner is the eager model
        return int8_report.Exported([weights], ctx.source.model, "itself")

    fake = int8_report.Row("fake", "fp32", "eager, registered by a test", export_eager)
    monkeypatch.setitem(int8_report.ROWS, ("fake", "fp32"), fake)
    out = tmp_path / "out"
    out.mkdir()
    res = int8_report.report(
        weights,
        data,
        out,
        int8_report.ReportSettings(
            sizes=[(32, 32)], calib_count=16, runtimes=["onnx", "ncnn", "fake"], repeats=2, warmup=1, log=lambda s: None
        ),
    )
    rows = {(r["runtime"], r["precision"]): r for r in res["rows"]}
    assert list(rows) == [
        ("eager", "fp32"),
        ("onnx", "fp32"),
        ("onnx", "int8"),
        ("ncnn", "fp32"),
        ("ncnn", "int8"),
        ("fake", "fp32"),
    ]
    assert "ncnn2table" in rows[("ncnn", "int8")]["skipped"] and "top1" not in rows[("ncnn", "int8")]
    n = res["test_images"]
    assert n == 300
    eager = rows[("eager", "fp32")]["top1"]
    # fp32 files equal eager within 1e-4: a class changes only on a near tie (at most one image here).
    for key in (("onnx", "fp32"), ("ncnn", "fp32")):
        assert abs(rows[key]["top1"] - eager) <= 1 / n
    assert rows[("fake", "fp32")]["top1"] == eager
    for key, r in rows.items():
        if "skipped" in r:
            continue
        assert r["latency_ms"]["32x32"] > 0 and r["wall_median_ms"]["32x32"] > 0
        if key != ("eager", "fp32"):
            assert r["size_bytes"] == sum(Path(f).stat().st_size for f in r["files"])
    int8 = rows[("onnx", "int8")]
    assert int8["verified_against"].startswith("its QDQ graph") and 0 <= int8["top1"] <= 1
    side = json.loads((out / "int8.onnx.json").read_text())
    assert side["quantization"]["calibration"]["images"] == 16
    assert side["quantization"]["calibration"]["dir"] == str(data / "train")
    md = (out / "int8_report.md").read_text()
    assert md.count("\n| ") == 1 + len(rows)  # header + one line per row and "skipped: ncnn2table" in md
    assert json.loads((out / "int8_report.json").read_text())["rows"] == json.loads(json.dumps(res["rows"]))


def test_int8_report_bad_input_is_one_error_line(tmp_path, capsys):
    assert int8_report.cli(["--weights", str(tmp_path / "nope.pth"), "--data", str(tmp_path)]) == 2
    _one_error_line(capsys, "nope.pth")
    assert int8_report.cli(["--weights", "x", "--data", str(tmp_path / "none")]) == 2
    _one_error_line(capsys, "no such folder")
