"""Broken downloads of published weights, against the local server (tests/weights_server.py), no network.

Each failure is what ``shufflenet-predict --weights DEFAULT`` (the first command of the README that downloads)
shows: one ``error:`` line that says what went wrong, exit status 2, and nothing new in torch.hub's cache -- no
file under the final name, no temporary file. The served bytes need not be a checkpoint: every case fails (or is
checked) before the file is read as weights.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from disk import NO_SPACE, full_disk
from weights_server import WeightsServer, hashed_copy, point_weights_at

from shufflenet import ShuffleNet_V1_X1_0_G3_Weights
from shufflenet.classification.predict import cli as predict_cli
from shufflenet.paths import sample_images
from shufflenet.weights import checkpoints_dir, download_weights
from shufflenet.weights import download as download_module

ENTRY = ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several 64 KiB reads, so a transfer can stop in the middle


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(server, served file name, the entry's URL): a hash-named file; TORCH_HOME is a fresh folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    src = tmp_path / "payload.bin"
    src.write_bytes(PAYLOAD)
    name = hashed_copy(src, tmp_path / "www", "shufflenet_v1_test_imagenet").name
    with WeightsServer(tmp_path / "www") as server:
        url = point_weights_at(monkeypatch, server, ENTRY, name)
        yield server, name, url


def _cache():
    folder = checkpoints_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _predict_fails(capsys, *expected):
    """``shufflenet-predict PHOTO --model ... --weights DEFAULT``: exit 2 and one error line with ``expected``."""
    capsys.readouterr()
    rc = predict_cli([str(sample_images()[0]), "--model", "shufflenet_v1_x1_0_g3", "--weights", "DEFAULT"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def test_no_content_length_downloads_whole_and_a_cut_one_is_caught_by_the_hash(served, capsys):
    server, name, url = served
    server.no_length = {name}
    assert download_weights(url, progress=False).read_bytes() == PAYLOAD  # nothing to check the size against
    assert _cache() == [name]
    (checkpoints_dir() / name).unlink()
    server.truncate = {name}  # half, then the connection closes: without a length only the hash can tell
    _predict_fails(capsys, "sha256 starts with", "nothing was kept")
    assert _cache() == []


@pytest.mark.parametrize("status, text", [(404, "HTTP 404"), (500, "HTTP 500")])
def test_http_errors_from_the_mirror_name_the_status(served, capsys, status, text):
    server, name, _ = served
    if status == 404:
        (server.root / name).unlink()
    else:
        server.status = {name: status}
    line = _predict_fails(capsys, text, server.url(name), "the server answered", str(checkpoints_dir() / name))
    assert "without a network" not in line  # the network was there: the server said no
    assert server.requests == [name] and _cache() == []


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_stalled_server_times_out_with_one_line_naming_it(served, capsys, monkeypatch, where):
    server, name, _ = served
    server.stall = {name: where}
    monkeypatch.setattr(download_module, "TIMEOUT_S", 1.0)  # the setting's default is 30 s
    _predict_fails(capsys, "the server sent nothing for 1 s (timed out)", server.url(name))
    assert _cache() == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stale_temporary_file_of_a_crashed_download_is_removed(served, monkeypatch):
    server, name, url = served
    folder = checkpoints_dir()
    folder.mkdir(parents=True)
    stale = folder / f".{name}.{_dead_pid()}.abc123.tmp"  # what a download killed mid-transfer leaves
    stale.write_bytes(PAYLOAD[:1000])
    assert download_weights(url, progress=False).read_bytes() == PAYLOAD
    assert _cache() == [name]


def test_a_full_disk_during_the_download_is_not_called_a_network_problem(served, capsys, monkeypatch):
    server, name, _ = served
    hit = full_disk(monkeypatch, after=200_000)  # fills up after ~0.2 MB of the 1 MiB
    line = _predict_fails(capsys, f"{checkpoints_dir() / name}: cannot write the download ({NO_SPACE})")
    assert "without a network" not in line and "nothing was kept" in line
    assert hit == [name] and server.requests == [name] and _cache() == []


def test_a_truncated_file_at_the_cached_name_is_one_error_line_and_left_alone(served, capsys):
    """A file at the cached name is used as it is (torch.hub's convention: a hand download is picked up, no
    network asked); cut short, it is refused when read, naming it, and neither deleted nor replaced."""
    import torch

    server, name, _ = served
    cached = checkpoints_dir() / name
    cached.parent.mkdir(parents=True)
    torch.save({"w": torch.randn(64, 64)}, cached)
    cached.write_bytes(cached.read_bytes()[:5000])  # an earlier tool's cut download
    line = _predict_fails(capsys, str(cached), "cannot be read as a torch weights file")
    assert "weights_only" not in line  # not the advice to load it unsafely
    assert server.requests == [] and _cache() == [name] and cached.stat().st_size == 5000
