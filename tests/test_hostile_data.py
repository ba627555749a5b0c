"""Damaged data files: a malformed shards.json, a truncated shard chunk, a truncated COCO annotation file. Each is
one ``error:`` line naming the file, exit status 2, no traceback, and no run output left behind."""

from __future__ import annotations

import json
import shutil

import pytest
from test_detection_faults import CONFIG, FAST
from test_faults_classification import TINY, make_tree

from shufflenet.classification.cli import cli as train_cli
from shufflenet.classification.shards import cli as shards_cli
from shufflenet.detection.engine import cli as detect_cli

pytestmark = pytest.mark.slow


def _one_error_line(err: str, *expected: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], err[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    data = make_tree(root / "data", per_class=4, val_per_class=1)
    assert shards_cli([str(data), str(root / "shards"), "--workers", "1"]) == 0
    return root / "shards"


def _train_on(shards_dir, tmp_path, capsys):
    capsys.readouterr()
    run = tmp_path / "run"
    args = ["--data.shards", str(shards_dir), "--data.batch_size", "8", "--trainer.max_steps", "2", *TINY]
    rc = train_cli([*args, "--run_dir", str(run)])
    return rc, capsys.readouterr().err, run


@pytest.mark.parametrize(
    "damage", ["not json", "truncated", "no classes"], ids=["not-json", "truncated", "missing-key"]
)
def test_a_malformed_shards_json_is_one_error_line(shards, tmp_path, capsys, damage):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    index = copy / "shards.json"
    text = index.read_text()
    if damage == "not json":
        index.write_text("<html>404</html>")
    elif damage == "truncated":
        index.write_text(text[: len(text) // 2])
    else:
        doc = json.loads(text)
        del doc["classes"]
        index.write_text(json.dumps(doc))
    rc, err, run = _train_on(copy, tmp_path, capsys)
    _one_error_line(err, "shards.json")
    assert rc == 2 and not (run / "checkpoints").exists()


def test_a_truncated_shard_chunk_is_one_error_line(shards, tmp_path, capsys):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    chunks = sorted((copy / "train").glob("*.bin"))
    assert chunks
    for chunk in chunks:
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 3])
    rc, err, run = _train_on(copy, tmp_path, capsys)
    _one_error_line(err, str(copy / "train"), "cannot be read", "write them again")
    assert rc == 2


def test_a_truncated_coco_json_is_one_error_line(coco_root, tmp_path, capfd, monkeypatch, coco_datasets_root):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(coco_datasets_root))
    ann = tmp_path / "instances.json"
    text = (coco_root / "annotations" / "instances_train2017.json").read_text()
    ann.write_text(text[: len(text) // 2])  # a download or copy cut short
    out = tmp_path / "run"
    rc = detect_cli(
        [
            *CONFIG,
            "--register-coco",
            "cut",
            str(ann),
            str(coco_root / "train2017"),
            *FAST,
            "DATASETS.TRAIN",
            "('cut',)",
            "DATASETS.TEST",
            "()",
            "SOLVER.MAX_ITER",
            "2",
            "OUTPUT_DIR",
            str(out),
        ]
    )
    _one_error_line(capfd.readouterr().err, str(ann))
    assert rc == 2 and not (out / "metrics.json").exists() and not (out / "model_final.pth").exists()
