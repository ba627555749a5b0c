"""tools/data_benchmark.py runs end to end on the package's real photos and writes its JSON, table and plot."""

from __future__ import annotations

import json

from tools import data_benchmark


def test_data_benchmark_writes_json_table_and_png(tmp_path, capsys):
    out = tmp_path / "bench"
    backends = ["pil", "tensor"]
    try:
        import litdata  # noqa: F401

        backends.append("shards")
    except ImportError:
        pass
    argv = ["--images", "6", "--rounds", "1", "--out", str(out), "--backends", *backends]
    assert data_benchmark.main(argv) == 0
    res = json.loads((out / "data_benchmark.json").read_text())
    photos = res["sources"]["photos"]
    assert photos["source"]["files"] == 6 and photos["source"]["min_size"] == [427, 320]
    for b in backends:
        rate = photos["images_per_s_per_core"][b]
        assert rate > 0 and len(photos["rounds"][b]) == 1
    assert photos["speedup_vs_pil"]["pil"] == 1.0
    assert res["gpu_end_to_end"].startswith("not measured")
    md = (out / "data_benchmark.md").read_text()
    assert "| photos (" in md and "| 6 |" in md
    assert (out / "data_benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_benchmark_refuses_a_folder_without_jpegs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.png").write_bytes(b"")
    assert data_benchmark.main(["--no-photos", "--folder", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_previous_transform_is_the_old_chain():
    from torchvision.transforms import v2 as T

    tf = data_benchmark.previous_train_transform(224)
    assert [type(t) for t in tf.transforms] == [
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
        T.ToImage,
        T.ToDtype,
        T.Normalize,
    ]
