"""tools/data_benchmark.py runs end to end on the package's real photos and writes its JSON, table and plot."""

from __future__ import annotations

import json

import torch

from tools import data_benchmark


def test_data_benchmark_writes_json_table_and_png(tmp_path, capsys):
    out = tmp_path / "bench"
    backends = ["pil", "tensor", "shards"]  # the setup installs litdata: the shards backend is always measured
    argv = ["--images", "6", "--rounds", "1", "--out", str(out), "--backends", *backends]
    assert data_benchmark.main(argv) == 0
    res = json.loads((out / "data_benchmark.json").read_text())
    photos = res["sources"]["photos"]
    assert photos["source"]["files"] == 6 and photos["source"]["min_size"] == [427, 320]
    rates = photos["images_per_s_per_core"]
    assert set(rates) == set(backends)
    for b in backends:
        assert rates[b] > 0 and photos["rounds"][b] == [rates[b]]  # one round: the median is that round
        assert abs(photos["speedup_vs_pil"][b] - rates[b] / rates["pil"]) <= 1e-9 * rates[b] / rates["pil"]
    # no GPU here, and the file says so (not measured either way: the CPU tool never times the GPU path)
    assert ("no GPU on this machine" in res["gpu_end_to_end"]) == (not torch.cuda.is_available())
    md = (out / "data_benchmark.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| photos ("))
    cells = [f"{rates[b]:.0f} ({rates[b] / rates['pil']:.2f}x)" for b in backends]
    assert row.endswith("| 6 | " + " | ".join(cells) + " |"), row  # the table shows the measured numbers
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
