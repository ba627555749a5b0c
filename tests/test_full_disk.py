"""A full disk (ENOSPC) while the package writes its outputs: each writer keeps what was there (the previous file, or
no file), leaves no temporary file, and the command ends with one ``error:`` line naming the file, exit status 2.

The fault is injected where the package stages its writes (tests/disk.py patches the ``open`` of
``shufflenet.fileio``); the demo dataset's images are written by PIL, so there the image writer is patched.
The last.ckpt case is in tests/test_faults_classification.py.
"""

from __future__ import annotations

import errno

import pytest
import torch
from disk import NO_SPACE, full_disk
from test_faults_classification import args_for, data, state  # noqa: F401 (data: a fixture)

from shufflenet.classification.cli import cli

pytestmark = pytest.mark.slow


def _one_error_line(capsys, *expected) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def _temporary_files(folder):
    return sorted(str(p) for p in folder.rglob("*.tmp"))


@pytest.mark.parametrize("name, rel", [("model.pth", "model.pth"), ("metrics.json", "metrics.json")])
def test_a_full_disk_at_the_end_of_a_run_keeps_the_previous_output(data, tmp_path, monkeypatch, capsys, name, rel):  # noqa: F811
    run = tmp_path / "run"
    assert cli(args_for(data, "--run_dir", str(run))) == 0
    target = run / rel
    before = target.read_bytes()
    capsys.readouterr()
    hit = full_disk(monkeypatch, match=lambda final: final == name, after=100)
    rc = cli(args_for(data, "--run_dir", str(run), "--ckpt_path", "last", steps=6))
    monkeypatch.undo()
    line = _one_error_line(capsys, str(target), NO_SPACE)
    assert rc == 2 and hit, line
    assert target.read_bytes() == before  # the previous run's file, whole
    # model.pth is written after the last checkpoint; metrics.json also at each validation, which stops the run there
    assert state(run)["global_step"] == (6 if name == "model.pth" else 4)
    assert _temporary_files(run) == []


def test_a_full_disk_while_writing_shards_leaves_no_folder(data, tmp_path, monkeypatch, capsys):  # noqa: F811
    from shufflenet.classification.shards import cli as shards_cli

    out = tmp_path / "shards"
    hit = full_disk(monkeypatch, match=lambda final: final == "shards.json")
    rc = shards_cli([str(data), str(out), "--workers", "1"])
    line = _one_error_line(capsys, f"cannot write the shards to {out}", NO_SPACE)
    assert rc == 2 and hit, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling


def test_a_full_disk_while_generating_the_demo_dataset_leaves_nothing(tmp_path, monkeypatch, capsys):
    """The no-argument run generates the demo dataset first (PIL writes the images): the disk fills up after a
    few images."""
    from PIL import Image

    cache = tmp_path / "cache"
    monkeypatch.setenv("SHUFFLENET_CACHE", str(cache))
    real_save = Image.Image.save
    saved = []

    def save(self, fp, *args, **kwargs):
        if len(saved) == 5:
            raise OSError(errno.ENOSPC, NO_SPACE)
        saved.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    monkeypatch.chdir(tmp_path)
    rc = cli([])
    line = _one_error_line(capsys, "demo", NO_SPACE)
    assert rc == 2 and len(saved) == 5, line
    assert not cache.exists() or [p for p in cache.rglob("*") if p.is_file()] == []


def test_a_full_disk_while_caching_a_conversion_still_loads_and_leaves_no_file(tmp_path, monkeypatch):
    """The converted copy of a public checkpoint is a cache: when it cannot be written, the conversion is used
    (and done again next time), and no half-written cache file is left to be trusted later."""
    from test_convert import MMShuffleNetV1, cifar_images, randomize, save_mm, to_mm

    from shufflenet import create_model
    from shufflenet.convert import convert_mmpretrain
    from shufflenet.weights import checkpoints_dir

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ref = MMShuffleNetV1(3)
    randomize(ref, to_mm(cifar_images(64, n=4, offset=1)), seed=5)
    src = save_mm(ref, tmp_path / "mm.pth")
    hit = full_disk(monkeypatch, match=lambda final: final.endswith(".shufflenet.pth"), after=1000)
    model = create_model(None, weights=src)
    want = convert_mmpretrain(src)[0]
    assert hit
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), want.state_dict().values()))
    cache = checkpoints_dir()
    assert not cache.exists() or sorted(p.name for p in cache.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    create_model(None, weights=src)  # room again: now the cache is written, whole
    assert [p.name.endswith(".shufflenet.pth") for p in checkpoints_dir().iterdir()] == [True]


def test_a_full_disk_while_appending_to_metrics_csv_keeps_whole_rows(data, tmp_path, monkeypatch, capsys):  # noqa: F811
    """The CSV log is appended to (a resume continues it): a disk that fills up in the middle of a row cuts the
    file back to the rows it had; the run ends with one error line naming the file."""
    run = tmp_path / "run"
    logs = ["--trainer.logger", "true", "--trainer.log_every_n_steps", "1"]  # the run's own loggers (TINY has none)
    assert cli(args_for(data, "--run_dir", str(run), *logs)) == 0
    target = run / "csv" / "metrics.csv"
    before = target.read_bytes()
    assert before.count(b"\n") >= 2  # a header and rows: something to keep
    capsys.readouterr()
    hit = full_disk(monkeypatch, match=lambda final: final == "metrics.csv", after=7)  # 7 bytes: inside a row
    rc = cli(args_for(data, "--run_dir", str(run), *logs, "--ckpt_path", "last", steps=6))
    monkeypatch.undo()
    line = _one_error_line(capsys, str(target), NO_SPACE)
    assert rc == 2 and hit, line
    kept = target.read_bytes()
    assert kept.endswith(b"\n") and before.startswith(kept), (before[-200:], kept[-200:])  # whole rows, none cut
    assert _temporary_files(run) == []
