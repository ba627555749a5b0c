"""tools/detection_benchmark.py: JSON + table (per stage, per runtime) + PNG from a tiny interleaved run; bad input is
one message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tools.detection_benchmark import cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_writes_json_table_and_plot(tmp_path, capsys):
    """Per-stage eager times, the fused and traced paths, on the package's sample photos by default; the process's
    thread count is what it was before (--threads 1 applies to the run only)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rc = cli(
            [
                "--models",
                "ShuffleNet 1x (g=3)",
                "--sizes",
                "300",
                "--proposals",
                "100",
                "--repeats",
                "2",
                "--warmup",
                "0",
                "--runtimes",
                "eager",
                "fused",
                "traced",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
                "MODEL.SHUFFLENET.NAME",
                "shufflenet_v1_x0_25_g3",
            ]
        )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    result = json.loads((tmp_path / "benchmark.json").read_text())
    rows = {r["runtime"]: r for r in result["metrics"]}
    assert set(rows) == {"eager", "fused", "traced"}
    eager = rows["eager"]
    assert eager["model"] == "ShuffleNet 1x (g=3)" and eager["short_side"] == 300 and eager["max_side"] == 500
    assert eager["proposals"] == 100 and eager["rois_per_image"] == 100
    assert len(eager["ms_all"]) == 2 and eager["ms_per_image"] > 0
    stages = [eager[f"{s}_ms"] for s in ("backbone", "rpn", "roi_head")]
    assert all(t > 0 for t in stages) and sum(stages) <= eager["ms_per_image"] * 1.001
    assert rows["traced"]["ms_per_image"] > 0 and "note" not in rows["traced"]
    assert eager["ratio_to_r50_c4_eager"] is None  # R50-C4 not in this run
    assert result["repeats"] == 2 and result["clock"] == "thread" and result["torch_threads"] == 1
    assert "package sample photos" in result["images"]
    assert "| ShuffleNet 1x (g=3) | 300/500 | 100 | eager |" in capsys.readouterr().out
    assert (tmp_path / "benchmark.png").stat().st_size > 1000


def test_benchmark_bad_input(tmp_path, capsys):
    assert cli(["--images", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --images {tmp_path / 'nope'}: no such folder"
    assert cli(["--out", str(tmp_path), "MODEL.RPN.POST_NMS_TOPK_TEST"]) == 2
    assert "KEY VALUE" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(["--images", str(tmp_path / "empty"), "--out", str(tmp_path), "--models", "ShuffleNet 1x (g=3)"]) == 2
    assert capsys.readouterr().err.startswith(f"error: --images {tmp_path / 'empty'}: no images")
    assert cli(["--proposals", "0", "--out", str(tmp_path)]) == 2
    assert "--proposals must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "benchmark.json").exists()
