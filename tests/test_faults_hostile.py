"""Hostile weights files: a pickle that would run code, given to every place that reads weights.

The file's object has a ``__reduce__`` that creates a marker file when unpickled (checked once with an unsafe
load, so the file is known to be hostile). Every reader must refuse it with one ``error:`` line (exit 2 for a
command, one exception for an API), pass on none of torch's advice to load it unsafely, and leave no marker.
Commands run through their installed console scripts. A hostile or damaged entry of the converted-weights cache
is rebuilt from the original checkpoint, not trusted.
"""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from proc import run as watched_run
from test_classification_train import make_tree
from test_convert import MMShuffleNetV1, cifar_images, randomize, save_mm, to_mm

import shufflenet
from shufflenet.fileio import sha256_file
from shufflenet.weights import WeightsError, converted_cache_path, read_weights

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "src" / "shufflenet" / "resources" / "images" / "cats.jpg"
UNSAFE_ADVICE = ("weights_only", "Re-running", "will likely succeed", "Unsupported operand", "Traceback")


class Hostile:
    """Unpickling this calls ``open(marker, "w")``: the file is created, as any code could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.fixture
def hostile(tmp_path):
    """``(torch.save file, raw .pkl file, marker)``; both files are shown to run code when loaded unsafely."""
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.0.weight": torch.zeros(1)}, "payload": Hostile(marker)}, evil)
    pkl = tmp_path / "evil.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {"w": Hostile(marker)}, "__author__": "x"}, f)
    for load in (lambda: torch.load(evil, weights_only=False), lambda: pickle.loads(pkl.read_bytes())):
        load()
        assert marker.exists()  # the file really runs code when trusted
        marker.unlink()
    return evil, pkl, marker


def env(tmp: Path) -> dict:
    e = dict(os.environ, SHUFFLENET_CACHE=str(tmp / "cache"), TORCH_HOME=str(tmp / "torch"))
    e["DETECTRON2_DATASETS"] = str(REPO / "tests" / "data")
    e.pop("SHUFFLENET_CLASSIFICATION_RUN_DIR", None)
    return e


def run(name: str, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / name
    assert script.is_file(), f"{script}: the package is not installed in this environment (pip install -e .)"
    return watched_run([str(script), *args], cwd=tmp, env=env(tmp))


def refused(proc: subprocess.CompletedProcess, path: Path, marker: Path) -> str:
    """Exit 2, one ``error:`` line naming the file and saying it holds objects, no unsafe advice, no marker."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
    assert str(path.name) in errors[0] and "holds Python objects other than tensors" in errors[0], errors[0]
    for advice in UNSAFE_ADVICE:
        assert advice not in proc.stderr + proc.stdout, advice
    assert not marker.exists()
    return errors[0]


def test_predict_refuses_a_hostile_file(hostile, tmp_path):
    evil, _, marker = hostile
    refused(run("shufflenet-predict", str(PHOTO), "--weights", str(evil), tmp=tmp_path), evil, marker)


def test_export_refuses_a_hostile_file_and_writes_nothing(hostile, tmp_path):
    evil, _, marker = hostile
    before = sorted(p.name for p in tmp_path.iterdir())
    refused(run("shufflenet-export", str(evil), tmp=tmp_path), evil, marker)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == before


def test_convert_refuses_a_hostile_file_and_writes_nothing(hostile, tmp_path):
    evil, _, marker = hostile
    refused(run("shufflenet-convert", str(evil), "--out", str(tmp_path / "out.pth"), tmp=tmp_path), evil, marker)
    assert not (tmp_path / "out.pth").exists()


def test_eval_refuses_a_hostile_file(hostile, tmp_path):
    evil, _, marker = hostile
    last = refused(run("shufflenet-eval", "--checkpoint", str(evil), tmp=tmp_path), evil, marker)
    assert "shufflenet-eval takes" in last


def test_train_refuses_a_hostile_ckpt_path(hostile, tmp_path):
    evil, _, marker = hostile
    data = make_tree(tmp_path / "data", per_class=2)
    out = tmp_path / "out"
    proc = run("shufflenet-train", "--data.root", str(data), "--ckpt_path", str(evil), "--output_root", str(out),
               tmp=tmp_path)  # fmt: skip
    assert "--ckpt_path takes a Lightning checkpoint" in refused(proc, evil, marker)


@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_detectron2_model_weights_refuses_a_hostile_file(hostile, tmp_path, kind):
    """``MODEL.WEIGHTS``: a ``.pth`` goes through the project's reader; a ``.pkl`` would be ``pickle.load``-ed by
    detectron2, so it is read by an arrays-only unpickler first."""
    evil = hostile[0] if kind == "pth" else hostile[1]
    marker = hostile[2]
    out = tmp_path / "run"
    args = ["--config-file", "coco2017_shufflenet1x_300", "MODEL.DEVICE", "cpu", "MODEL.SHUFFLENET.NAME"]
    args += ["shufflenet_v1_x0_25_g3", "MODEL.WEIGHTS", str(evil), "OUTPUT_DIR", str(out)]
    last = refused(run("shufflenet-detect", *args, tmp=tmp_path), evil, marker)
    assert "MODEL.WEIGHTS" in last
    assert not out.exists() or not any(out.iterdir())


def test_the_python_readers_refuse_a_hostile_file(hostile):
    evil, _, marker = hostile
    readers = {
        "create_model": lambda: shufflenet.create_model("shufflenet_v1_x0_25_g3", weights=str(evil)),
        "create_model(None)": lambda: shufflenet.create_model(None, weights=str(evil)),
        "shufflenet_v1": lambda: shufflenet.shufflenet_v1(groups=3, width_mult=0.25, weights=str(evil)),
        "read_weights": lambda: read_weights(evil),
        "timm file overlay": lambda: timm.create_model(
            "shufflenet_v1_x0_25_g3", pretrained=True, pretrained_cfg_overlay=dict(file=str(evil))
        ),
    }
    for name, read in readers.items():
        with pytest.raises(WeightsError) as e:
            read()
        message = str(e.value)
        assert "\n" not in message and "holds Python objects other than tensors" in message, (name, message)
        assert not any(advice in message for advice in UNSAFE_ADVICE), (name, message)
        assert not marker.exists(), name


@pytest.fixture
def public_file(tmp_path, monkeypatch):
    """An mmpretrain-layout checkpoint (converted on read) and torch.hub's cache in ``tmp_path``."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ref = MMShuffleNetV1(3)
    randomize(ref, to_mm(cifar_images(64, n=4, offset=1)), seed=5)
    src = save_mm(ref, tmp_path / "mm_original.pth")
    return src, converted_cache_path(src, sha256_file(src))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(cifar_images(64, n=2, offset=3))


def test_a_hostile_converted_cache_entry_is_rebuilt_not_trusted(hostile, public_file):
    _, _, marker = hostile
    src, cache = public_file
    want = _logits(shufflenet.create_model(None, weights=src))  # converts and caches
    good = cache.read_bytes()
    cache.write_bytes(hostile[0].read_bytes())  # the cache entry replaced by a file that would run code
    got = _logits(shufflenet.create_model(None, weights=src))
    assert not marker.exists()
    assert torch.equal(got, want)
    rebuilt = read_weights(cache)  # the entry was written again, as a package weights file
    assert rebuilt.kind == "package" and rebuilt.meta["sha256"] == sha256_file(src)
    assert all(torch.equal(rebuilt.state_dict[k], v) for k, v in torch.load(
        __import__("io").BytesIO(good), weights_only=True)["state_dict"].items())  # fmt: skip


def test_a_damaged_converted_cache_entry_is_rebuilt(public_file):
    src, cache = public_file
    want = _logits(shufflenet.create_model(None, weights=src))
    good = cache.read_bytes()
    cache.write_bytes(good[: len(good) // 3])  # truncated, as by a crash or a full disk
    assert torch.equal(_logits(shufflenet.create_model(None, weights=src)), want)
    assert read_weights(cache).kind == "package"  # readable again: rebuilt


# --- not a weights file at all, and a misspelled model name -----------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["shufflenet-predict", str(PHOTO), "--weights", "README.md"],
        ["shufflenet-export", "README.md"],
        ["shufflenet-convert", "README.md", "--out", "out.pth"],
    ],
    ids=lambda c: c[0],
)
def test_a_text_file_as_weights_is_the_one_message(tmp_path, command):
    (tmp_path / "README.md").write_text("# not weights\n\nsome text\n")
    proc = run(*command, tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: README.md: cannot be read as a torch weights file (another kind of file, or a truncated copy); a "
        "weights file is what torch.save writes, holding only tensors and plain values (any other object is never "
        "loaded)"
    ], proc.stderr[-3000:]
    assert not (tmp_path / "out.pth").exists()


def test_a_misspelled_model_with_published_weights_is_unknown_model(tmp_path):
    proc = run(
        "shufflenet-predict", str(PHOTO), "--model", "shufflenet_v1_x1_0_g33", "--weights", "DEFAULT", tmp=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown model name 'shufflenet_v1_x1_0_g33'. Did you mean shufflenet_v1_x1_0_g3"), (
        last
    )
    assert "published weights" not in proc.stderr
