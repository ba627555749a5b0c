"""Table-8 benchmark: a --quick run on tiny settings writes consistent JSON, markdown and PNG."""

from __future__ import annotations

import json

import pytest
import torch

from shufflenet.mobile.benchmark import main


@pytest.mark.slow
def test_quick_benchmark_writes_table_json_and_chart(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "bench"
    rc = main(["--quick", "--models", "sn0.5", "megvii0.5", "--sizes", "224", "64x96", "--repeats", "2",
               "--warmup", "1", "--runtimes", "eager", "ptl", "--out", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert torch.get_num_threads() == threads  # the process's setting is restored
    res = json.loads((out / "benchmark.json").read_text())
    assert res["settings"]["sizes"] == [[224, 224], [64, 96]] and res["settings"]["threads"] == 1
    assert res["settings"]["interleaved"] is True
    assert res["host"]["torch"] == torch.__version__ and res["host"]["arch"]
    for key in ("sn0.5", "megvii0.5"):
        for rt in ("eager", "ptl"):
            for tag in ("224x224", "64x96"):
                cell = res["cells"][key][rt][tag]
                assert cell["n"] == 2 and len(cell["runs_ms"]) == 2
                assert 0 < min(cell["runs_ms"]) <= cell["median_ms"] <= cell["p90_ms"] <= max(cell["runs_ms"])
        assert (out / "exported" / f"bench_{key}.ptl").is_file()
    # The ratio row is computed from the cells, not typed in.
    (row,) = [r for r in res["ratios"] if r["num"] == "megvii0.5"]
    for tag in ("224x224", "64x96"):
        expect = res["cells"]["megvii0.5"]["ptl"][tag]["median_ms"] / res["cells"]["sn0.5"]["ptl"][tag]["median_ms"]
        assert row["measured"]["ptl"][tag] == pytest.approx(expect)
    # Markdown: measured cells beside the paper's ms (224 column of ShuffleNet 0.5x is 15.2 ms in Table 8).
    md = (out / "benchmark.md").read_text()
    sn_rows = [line for line in md.splitlines() if line.startswith("| ShuffleNet 0.5x (g=3) |")]
    assert len(sn_rows) == 2 and all("15.2" in line for line in sn_rows)
    assert f"{res['cells']['sn0.5']['ptl']['224x224']['median_ms']:.1f}" in md
    assert "torch " + torch.__version__ in md
    png = (out / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # A progress line per measurement (2 models x 2 runtimes x 2 sizes) and per round.
    assert sum(line.startswith("[bench ") for line in printed.out.splitlines()) == 8
    assert sum(" round " in line for line in printed.out.splitlines()) == 4


@pytest.mark.parametrize(
    "argv, expected",
    [(["--models", "resnet50"], "unknown benchmark model"), (["--threads", "0"], "--threads must be >= 1"),
     (["--sizes", "7"], "input size '7' is not valid")],
)
def test_benchmark_bad_arguments(argv, expected, tmp_path, capsys):
    rc = main(argv + ["--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()

