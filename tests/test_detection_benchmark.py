"""detection/benchmark.py: JSON + table + PNG from a (tiny) interleaved run; bad input is one message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("detectron2")

from shufflenet.detection.benchmark import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_writes_json_table_and_plot(tmp_path, capsys):
    rc = main(["--models", "ShuffleNet 1x (g=3)", "--sizes", "300", "--repeats", "2", "--warmup", "0",
               "--out", str(tmp_path), "MODEL.RPN.POST_NMS_TOPK_TEST", "100"])
    assert rc == 0
    result = json.loads((tmp_path / "benchmark.json").read_text())
    (row,) = result["metrics"]
    assert row["model"] == "ShuffleNet 1x (g=3)" and row["short_side"] == 300 and row["max_side"] == 500
    assert len(row["ms_all"]) == 2 and row["ms_per_image"] > 0 and row["rois_per_image"] == 100
    assert row["ratio_to_r50_c4"] is None  # R50-C4 not in this run
    assert result["repeats"] == 2 and "tiny_coco" in result["images"]
    assert "| ShuffleNet 1x (g=3) | 300/500 | 100 |" in capsys.readouterr().out
    assert (tmp_path / "benchmark.png").stat().st_size > 1000


def test_benchmark_bad_input(tmp_path, capsys):
    assert main(["--images", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --images {tmp_path / 'nope'}: no such folder"
    assert main(["--out", str(tmp_path), "MODEL.RPN.POST_NMS_TOPK_TEST"]) == 2
    assert "KEY VALUE" in capsys.readouterr().err
    assert not (tmp_path / "benchmark.json").exists()
