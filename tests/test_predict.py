"""``shufflenet-predict``: top-k classes of the package's sample photos, with weights served by a local server."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from proc import run as watched_run
from test_convert import MMShuffleNetV1, cifar_images, randomize, save_mm, to_mm
from weights_server import WeightsServer, hashed_copy, point_weights_at

from shufflenet import ShuffleNet_V1_X1_0_G3_Weights, create_model, save_weights
from shufflenet.classification.predict import cli, load_predictor, main
from shufflenet.convert import convert_mmpretrain
from shufflenet.models import IMAGENET_CATEGORIES
from shufflenet.paths import sample_images

REPO = Path(__file__).resolve().parents[1]
NAME = "shufflenet_v1_x1_0_g3"


@pytest.fixture(scope="module")
def mm_file(tmp_path_factory):
    ref = MMShuffleNetV1(3)
    randomize(ref, to_mm(cifar_images(64, n=4, offset=1)), seed=41)
    return save_mm(ref, tmp_path_factory.mktemp("mm") / "mm_original.pth")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SHUFFLENET_WEIGHTS_MIRROR", raising=False)


def _expected(model, transform, path, k):
    from shufflenet.classification.data import load_rgb

    with torch.no_grad():
        p = model.eval()(transform(load_rgb(path))[None]).softmax(1)[0]
    return p.topk(k)


def test_predict_default_weights_on_the_sample_photos(tmp_path, torch_home, mm_file, monkeypatch, capsys):
    served = hashed_copy(mm_file, tmp_path / "www", "shufflenet_v1_test_imagenet")
    photos = sample_images()
    broken = tmp_path / "photos" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(photos[0].read_bytes()[:300])  # a truncated JPEG: listed and skipped
    out = tmp_path / "pred.json"
    with WeightsServer(served.parent) as server:
        point_weights_at(monkeypatch, server, ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN, served.name)
        args = [str(p) for p in photos] + [str(broken.parent), "--model", NAME, "--weights", "DEFAULT"]
        # one image per forward pass, as _expected below: the same arithmetic, so the same probabilities
        assert main(args + ["--topk", "3", "--json", str(out), "--no-progress", "--batch-size", "1"]) == 0
        assert server.requests == [served.name]
    printed = capsys.readouterr()
    assert f"skipped {broken}" in printed.err
    doc = json.loads(out.read_text())
    assert [r["path"] for r in doc["predictions"]] == [str(p) for p in photos]
    assert doc["skipped"].keys() == {str(broken)} and doc["top_k"] == 3
    # the numbers are those of the converted network on the source's own preprocessing
    model = convert_mmpretrain(served)[0]
    transform = ShuffleNet_V1_X1_0_G3_Weights.DEFAULT.transforms()
    for r, path in zip(doc["predictions"], photos):
        p, idx = _expected(model, transform, path, 3)
        assert [t["index"] for t in r["top_k"]] == idx.tolist()
        assert [t["name"] for t in r["top_k"]] == [IMAGENET_CATEGORIES[i] for i in idx.tolist()]
        assert [t["prob"] for t in r["top_k"]] == pytest.approx(p.tolist(), abs=5e-7)  # JSON keeps 6 decimals
        assert f"{100 * r['top_k'][0]['prob']:6.2f} %  {r['top_k'][0]['name']}" in printed.out


def test_predict_uses_the_class_names_a_weights_file_carries(tmp_path, torch_home, capsys):
    model = create_model("shufflenet_v1_x0_25_g3", num_classes=3)
    path = save_weights(model, tmp_path / "model.pth", arch="shufflenet_v1_x0_25_g3", meta={"classes": ["a", "b", "c"]})
    photo = sample_images()[1]
    assert main([str(photo), "--weights", str(path), "--topk", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(photo) and len(lines) == 4  # k is capped at the 3 classes
    assert sorted(line.split()[-1] for line in lines[1:]) == ["a", "b", "c"]
    _, _, classes, info = load_predictor(str(path))
    assert classes == ["a", "b", "c"] and info["arch"] == "shufflenet_v1_x0_25_g3"


def test_original_public_file_gets_the_imagenet_names(torch_home, mm_file, capsys):
    assert main([str(sample_images()[2]), "--weights", str(mm_file), "--topk", "1"]) == 0
    name = capsys.readouterr().out.splitlines()[1].split("%  ", 1)[1]
    assert name in IMAGENET_CATEGORIES


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.jpg", "--weights", "DEFAULT", "--model", NAME], "missing.jpg: no such image file or folder"),
        (["{photo}", "--weights", "nope.pth"], "nope.pth: no such weights file"),
        (["{photo}", "--weights", "DEFAULT"], "DEFAULT: no such weights file"),
        (["{photo}", "--weights", "DEFAULT", "--model", NAME, "--topk", "0"], "--topk and --batch-size must be"),
    ],
)
def test_bad_input_is_one_error_line(torch_home, capsys, args, message):
    args = [a.replace("{photo}", str(sample_images()[0])) for a in args]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_nothing_readable_is_an_error(tmp_path, torch_home, capsys):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    model = create_model("shufflenet_v1_x0_25_g3", num_classes=2)
    path = save_weights(model, tmp_path / "m.pth", arch="shufflenet_v1_x0_25_g3")
    assert cli([str(bad), "--weights", str(path)]) == 2
    assert "none of the 1 images could be read" in capsys.readouterr().err


def test_thin_script_runs(tmp_path):
    model = create_model("shufflenet_v1_x0_25_g3", num_classes=2)
    path = save_weights(model, tmp_path / "m.pth", arch="shufflenet_v1_x0_25_g3")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "TORCH_HOME": str(tmp_path)}
    proc = watched_run(
        [sys.executable, str(REPO / "classification" / "predict.py"), str(sample_images()[0]), "--weights", str(path)],
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(sample_images()[0]) and "class " in proc.stdout


def test_shufflenet_predict_and_train_predict_write_one_layout(tmp_path):
    """The rows of ``shufflenet-predict --json`` (through the console script) and of ``shufflenet-train predict``
    (the module's ``predict_step``) for the same weights and images are the same dicts."""
    from shufflenet.classification.module import ImageClassifier

    module = ImageClassifier("shufflenet_v1_x0_25_g3", num_classes=3).eval()
    module.class_names, module.predict_top_k = ["a", "b", "c"], 2
    path = save_weights(
        module.model, tmp_path / "model.pth", arch="shufflenet_v1_x0_25_g3", meta={"classes": ["a", "b", "c"]}
    )
    photos = sample_images()[:2]
    out = tmp_path / "pred.json"
    script = Path(sys.executable).parent / "shufflenet-predict"
    proc = watched_run([str(script), *map(str, photos), "--weights", str(path), "--topk", "2", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    _, transform, _, _ = load_predictor(str(path))
    from shufflenet.classification.data import load_rgb

    with torch.no_grad():
        rows = module.predict_step((torch.stack([transform(load_rgb(p)) for p in photos]), [str(p) for p in photos]), 0)
    assert doc["top_k"] == 2 and [set(r) for r in doc["predictions"]] == [{"path", "top_k"}] * 2
    assert json.loads(json.dumps(rows)) == doc["predictions"]
