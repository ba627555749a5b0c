"""Fault tests of the mobile CLIs: bad --out, interrupted and killed exports, input errors.

Each is fast (no export runs to completion except where noted) and checks what a user sees: one `error:`
line, exit status 2, and no file or temporary file left behind.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import _randomize_bn
from proc import run as watched_run

import shufflenet
from shufflenet.mobile import ExportSpec, export
from shufflenet.mobile.cli import cli
from shufflenet.mobile.source import ModelSource

TINY = "shufflenet_v1_x0_25_g3"
REPO = Path(__file__).resolve().parents[1]


def _one_error_line(capsys, expected):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_out_naming_a_file_is_one_error_line(tmp_path, capsys):
    target = tmp_path / "exported"
    target.write_text("not a folder")
    assert cli([TINY, "--input-size", "32", "--out", str(target)]) == 2
    _one_error_line(capsys, "is a file, not a folder")
    assert target.read_text() == "not a folder"
    assert cli([TINY, "--input-size", "32", "--out", str(target / "sub")]) == 2  # a folder under a file
    _one_error_line(capsys, "is a file, not a folder")


def test_out_where_nothing_can_be_written_is_one_error_line(capsys):
    # /proc refuses new files even for root (a chmod'ed folder would not stop root)
    assert cli([TINY, "--input-size", "32", "--out", "/proc/shufflenet-export"]) == 2
    _one_error_line(capsys, "cannot write")


def test_benchmark_bad_out(tmp_path, capsys):
    from shufflenet.mobile import benchmark

    f = tmp_path / "file"
    f.write_text("x")
    assert benchmark.cli(["--models", "sn0.5", "--out", str(f)]) == 2
    _one_error_line(capsys, "is a file, not a folder")


def test_interrupted_export_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    """Ctrl-C during verification: the exception propagates, and neither the .ptl nor its temp file stays."""

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    from shufflenet.mobile import runtime

    monkeypatch.setattr(runtime, "verify_runtime", interrupt)  # the one verify-and-write path of every exporter
    torch.manual_seed(0)
    src = ModelSource(_randomize_bn(shufflenet.create_model(TINY, num_classes=10)), TINY, "test")
    with pytest.raises(KeyboardInterrupt):
        export("ptl", src, tmp_path, ExportSpec([(32, 32)], images=None, log=lambda s: None))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_leftover_of_a_killed_export_is_removed_by_the_next_one(tmp_path):
    """kill -9 mid-export leaves a hidden temp file; the next export of the same name removes it."""
    out = tmp_path / "out"
    code = (
        "import os, signal, sys\n"
        "from shufflenet.mobile import runtime\n"  # the verify-and-write path every exporter uses
        "def die(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "runtime.verify_runtime = die\n"
        "from shufflenet.mobile.cli import cli\n"
        f"sys.exit(cli([{TINY!r}, '--input-size', '32', '--images', 'none', '--out', {str(out)!r}]))\n"
    )
    proc = watched_run([sys.executable, "-c", code], cwd=REPO)
    assert proc.returncode == -9, proc.stderr[-2000:]
    leftovers = [p.name for p in out.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{TINY}.ptl.") and leftovers[0].endswith(".tmp")
    assert cli([TINY, "--input-size", "32", "--images", "none", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{TINY}.json", f"{TINY}.ptl"]


def test_images_flag_that_finds_no_images_says_so(tmp_path, capsys):
    empty = tmp_path / "photos"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    assert cli([TINY, "--input-size", "32", "--images", str(empty), "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, "no images")
    assert not (tmp_path / "o").exists()


def test_console_script_entry_points_exist():
    """The installed console scripts run these functions, and their usage line names the command the user typed
    (argparse's default program name), not a file of the repository."""
    from importlib.metadata import entry_points

    from shufflenet.mobile import benchmark
    from shufflenet.mobile import cli as cli_mod

    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    for name, mod, script in (
        ("shufflenet-export", cli_mod, "mobile/export.py"),
        ("shufflenet-bench", benchmark, "mobile/benchmark.py"),
    ):
        assert scripts[name].load() is mod.cli  # the installed console script runs this function
        proc = watched_run([str(Path(sys.executable).parent / name), "--help"])
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {name} "), proc.stdout[:200]
        proc = watched_run([sys.executable, str(REPO / script), "--help"])
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {Path(script).name} "), proc.stdout[:200]


def test_a_full_disk_during_an_export_keeps_the_previous_files(tmp_path, monkeypatch, capsys):
    """The disk fills up while the sidecar of a second export (other weights, same file names) is written: the
    first export's model file and sidecar stay as they were (never a new model beside an old sidecar), no temporary
    is left, one error line naming the folder and the cause."""
    from disk import NO_SPACE, full_disk

    from shufflenet.models import create_model
    from shufflenet.weights import save_weights

    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        files.append(save_weights(create_model(TINY), tmp_path / f"w{seed}.pth", arch=TINY))
    out = tmp_path / "o"
    common = ["--format", "onnx", "--input-size", "32", "--images", "none", "--name", "net", "--out", str(out)]
    assert cli([str(files[0]), *common]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["net.onnx", "net.onnx.json"]
    capsys.readouterr()
    hit = full_disk(monkeypatch, match=lambda final: final.endswith(".json"), after=10)
    rc = cli([str(files[1]), *common])
    monkeypatch.undo()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and hit and "Traceback" not in err, err[-3000:]
    assert len(errors) == 1 and NO_SPACE in errors[0] and str(out) in errors[0], err[-3000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # both files as they were, no temporary
    assert cli([str(files[1]), *common]) == 0  # the disk has room again: the export goes through
    assert (out / "net.onnx").read_bytes() != before["net.onnx"]  # (other weights: a replaced file would show)
