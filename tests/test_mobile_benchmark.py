"""Table-8 benchmark: a --quick run on tiny settings writes consistent JSON, markdown and PNG."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from shufflenet.mobile.benchmark import cli, main


@pytest.mark.slow
def test_quick_benchmark_writes_table_json_and_chart(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "bench"
    exported = ["ptl", "onnx"] if importlib.util.find_spec("onnxruntime") else ["ptl"]
    rc = main(
        [
            "--quick",
            "--models",
            "sn0.5",
            "megvii0.5",
            "alexnet",
            "--sizes",
            "64x96",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--runtimes",
            "eager",
            *exported,
            "--out",
            str(out),
            "--profile",
        ]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert torch.get_num_threads() == threads  # the process's setting is restored
    res = json.loads((out / "benchmark.json").read_text())
    assert res["settings"]["sizes"] == [[64, 96]] and res["settings"]["threads"] == 1
    assert res["settings"]["interleaved"] is True and res["settings"]["input_layout"] == "nhwc"
    assert res["host"]["torch"] == torch.__version__ and res["host"]["arch"]
    for key in ("sn0.5", "megvii0.5", "alexnet"):
        for rt in ("eager", *exported):
            cell = res["cells"][key][rt]["64x96"]
            assert cell["n"] == 2 and len(cell["runs_ms"]) == 2 and len(cell["wall_runs_ms"]) == 2
            assert 0 < min(cell["runs_ms"]) <= cell["median_ms"] <= cell["p90_ms"] <= max(cell["runs_ms"])
        assert (out / "exported" / f"bench_{key}.ptl").is_file()
        # The ratios use the fastest exported runtime (eager only counts when nothing was exported).
        best = min(exported, key=lambda rt: res["cells"][key][rt]["64x96"]["median_ms"])
        assert res["fastest"][key]["64x96"]["runtime"] == best
        assert res["models"][key]["macs"]["64x96"] > 0
    assert res["models"]["megvii0.5"]["macs"] == res["models"]["sn0.5"]["macs"]  # same network, other code
    # MAC/s and the share of AlexNet's come from the cells, not typed in.
    eff = res["efficiency"]["sn0.5"]["64x96"]
    gmacs = res["models"]["sn0.5"]["macs"]["64x96"] / res["fastest"]["sn0.5"]["64x96"]["median_ms"] / 1e6
    assert eff["gmac_per_s"] == pytest.approx(gmacs)
    assert eff["share_of_alexnet"] == pytest.approx(gmacs / res["efficiency"]["alexnet"]["64x96"]["gmac_per_s"])
    (row,) = [r for r in res["ratios"] if r["num"] == "megvii0.5"]
    expect = res["fastest"]["megvii0.5"]["64x96"]["median_ms"] / res["fastest"]["sn0.5"]["64x96"]["median_ms"]
    assert row["fastest"]["64x96"] == pytest.approx(expect) and row["met"]["64x96"] == (expect >= 1.5)
    # The per-layer-type profile names ShuffleNet's parts and adds up to 100 %.
    prof = res["profile"]["rows"]
    assert {"1x1 group conv", "depthwise 3x3 conv", "channel shuffle", "add + ReLU", "stem max pool"} <= set(prof)
    assert sum(v["64x96"]["pct"] for v in prof.values()) == pytest.approx(100.0)
    md = (out / "benchmark.md").read_text()
    assert f"{res['cells']['sn0.5']['ptl']['64x96']['median_ms']:.1f}" in md and "torch " + torch.__version__ in md
    assert "megvii-style 0.5x / ours 0.5x" in md and "vs AlexNet" in md
    png = (out / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    if "onnx" in exported:  # the same ratio through each runtime
        assert set(row["measured"]) == {"eager", *exported} and "The same ratios per runtime" in md
    # A progress line per measurement (3 models x runtimes x 1 size) and per round.
    assert sum(line.startswith("[bench ") for line in printed.out.splitlines()) == 3 * (1 + len(exported))
    assert sum(" round " in line for line in printed.out.splitlines()) == 2


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--models", "resnet50"], "unknown benchmark model"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--sizes", "7"], "input size '7' is not valid"),
        (["--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_benchmark_bad_arguments(argv, expected, tmp_path, capsys):
    rc = cli(argv + ["--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.startswith("error:") and err.count("\n") == 1
    assert not (tmp_path / "b").exists()
