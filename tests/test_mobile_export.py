"""Mobile export: verified .ptl files, sidecar, refusal of broken exports, bytecode backport, CLI errors.

Uses the narrowest registered ShuffleNet (0.25x, g=3) with randomised BatchNorm statistics (so no unit is
the identity it is at initialisation) and real CIFAR-10 test images from the repository's tests/data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from bounds import FP32, assert_recorded_within, assert_within
from conftest import _randomize_bn
from torch import nn

import shufflenet
from shufflenet.mobile import ExportSpec, RuntimeUnavailableError, export
from shufflenet.mobile import ptl as mptl
from shufflenet.mobile.cli import cli
from shufflenet.mobile.images import list_images, load_images
from shufflenet.mobile.source import ModelSource, load_model
from shufflenet.mobile.verify import VerificationError

TEST_DATA = Path(__file__).resolve().parent / "data"
CIFAR_TEST = TEST_DATA / "cifar10" / "test"
TINY = "shufflenet_v1_x0_25_g3"


def _tiny(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    model = shufflenet.create_model(TINY, num_classes=num_classes)
    nn.init.normal_(model.fc.weight, 0, 0.3)  # logits of order 1, like a trained model's
    return _randomize_bn(model)


def _lite(path: Path):
    from torch.jit.mobile import _load_for_lite_interpreter

    return _load_for_lite_interpreter(str(path))


def _quiet(_msg: str) -> None:
    pass


def _cifar(n: int, size):
    files = list_images(CIFAR_TEST)[::30][:n]  # one image from each of n classes (30 per class)
    return load_images(files, size)


@pytest.mark.slow
def test_export_registered_model_matches_eager_and_sidecar(tmp_path):
    model = _tiny()
    src = ModelSource(model, TINY, "test")
    sizes = [(32, 32), (64, 48)]
    ptl, side = export("ptl", src, tmp_path, ExportSpec(sizes, images=CIFAR_TEST, n_real=2, log=_quiet))
    assert ptl == tmp_path / f"{TINY}.ptl" and ptl.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TINY}.json", f"{TINY}.ptl"]  # no temp files left

    # The file on disk reproduces eager on random and real inputs, including a size not used at export.
    lite = _lite(ptl)
    with torch.no_grad():
        for size in [(32, 32), (64, 48), (96, 96)]:
            for x in (torch.randn(2, 3, *size), _cifar(4, size)):
                ref, got = model(x), lite(x)
                assert got.shape == ref.shape == (x.shape[0], 10)
                assert ref.abs().max() > 0.1  # a non-trivial function
                torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)

    # Sidecar on disk equals the returned dict and says what a runtime needs.
    on_disk = json.loads((tmp_path / f"{TINY}.json").read_text())
    assert on_disk == json.loads(json.dumps(side))
    assert on_disk["model"] == TINY and on_disk["file"] == ptl.name
    assert on_disk["input"]["sizes_hw_verified"] == [[32, 32], [64, 48]]
    norm = on_disk["input"]["normalization"]
    assert norm["mean"] == pytest.approx([0.485, 0.456, 0.406]) and norm["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert on_disk["sha256"] == hashlib.sha256(ptl.read_bytes()).hexdigest()
    assert on_disk["size_bytes"] == ptl.stat().st_size
    from torch.jit.mobile import _export_operator_list

    assert on_disk["operators"] == sorted(_export_operator_list(lite))
    assert "aten::channel_shuffle" in on_disk["operators"]  # native shuffle, not reshape/permute
    assert any(op.startswith("prepacked::conv2d_clamp") for op in on_disk["operators"])  # XNNPACK prepacked convs
    assert not any("batch_norm" in op for op in on_disk["operators"])  # BN folded away
    checks = on_disk["verification"]["checks"]
    assert {tuple(c["size"]) for c in checks} == {(32, 32), (64, 48)}
    assert {c["input"].split(" ")[0] for c in checks} == {"random", "real"}
    assert_recorded_within(checks, FP32)  # the test's own bound (tests/bounds.py), not the sidecar's verdict
    assert on_disk["outputs"] == [[1, 10]]


@pytest.mark.slow
def test_cli_exports_package_weights_file(tmp_path, capsys):
    model = _tiny(num_classes=7)
    weights = shufflenet.save_weights(model, tmp_path / "model.pth", arch=TINY, meta={"note": "test"})
    out = tmp_path / "out"
    rc = cli([str(weights), "--input-size", "32", "40x56", "--out", str(out), "--images", str(CIFAR_TEST)])
    assert rc == 0, capsys.readouterr().err
    ptl = out / f"{TINY}.ptl"
    side = json.loads((out / f"{TINY}.json").read_text())
    assert side["source"] == str(weights) and side["extra"]["weights_meta"] == {"note": "test"}
    assert side["outputs"] == [[1, 7]]
    # The weights came through: the file reproduces the model the weights were saved from.
    x = _cifar(3, (40, 56))
    with torch.no_grad():
        torch.testing.assert_close(_lite(ptl)(x), model(x), atol=1e-4, rtol=1e-5)
    # load_model rebuilds the same network from the file (config + arch).
    assert load_model(str(weights)).name == TINY


class _ScriptedDiffers(nn.Module):
    """A model whose TorchScript form computes something else than eager (a classic export bug)."""

    def __init__(self, inner: nn.Module, delta: float) -> None:
        super().__init__()
        self.inner, self.delta = inner, delta

    def forward(self, x):
        y = self.inner(x)
        if torch.jit.is_scripting():
            y = y + self.delta
        return y


@pytest.mark.slow
def test_export_refuses_model_whose_scripted_form_differs(tmp_path):
    src = ModelSource(_ScriptedDiffers(_tiny(), 0.01), "broken", "test")
    out = tmp_path / "out"
    with pytest.raises(VerificationError) as err:
        export("ptl", src, out, ExportSpec([(32, 32)], images=CIFAR_TEST, log=_quiet))
    msg = str(err.value)
    assert "1e-02" in msg or "0.01" in msg  # the measured difference is in the message
    assert "32x32" in msg and "no file was written" in msg
    assert list(out.iterdir()) == []  # no artifact, no temp file


@pytest.mark.slow
def test_export_refuses_output_corrupted_by_optimization(tmp_path, monkeypatch):
    """If the optimized module misbehaves (here: a conv weight changed after scripting), nothing is written."""
    real_optimize = mptl.optimize

    def corrupting_optimize(scripted):
        # Optimize a copy with one perturbed conv weight: same structure and ops, slightly wrong numbers.
        bad = _tiny()
        with torch.no_grad():
            bad.conv1[0].weight.mul_(1.01)
        return real_optimize(torch.jit.script(bad))

    monkeypatch.setattr(mptl, "optimize", corrupting_optimize)
    out = tmp_path / "out"
    with pytest.raises(VerificationError, match=r"max \|eager - exported\| = [0-9.e+-]+ exceeds the bound"):
        export("ptl", ModelSource(_tiny(), TINY, "test"), out, ExportSpec([(32, 32)], images=None, log=_quiet))
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_bytecode_backport_still_verifies(tmp_path):
    from torch.jit.mobile import _get_model_bytecode_version

    model = _tiny()
    ptl, side = export(
        "ptl",
        ModelSource(model, TINY, "test"),
        tmp_path,
        ExportSpec([(32, 32)], images=CIFAR_TEST, bytecode_version=7, log=_quiet),
    )
    assert _get_model_bytecode_version(str(ptl)) == 7
    assert side["bytecode_version"] == 7 and side["bytecode_version_written"] > 7
    assert_recorded_within(side["verification"]["checks"], FP32)
    x = _cifar(2, (48, 48))
    with torch.no_grad():
        torch.testing.assert_close(_lite(ptl)(x), model(x), atol=1e-4, rtol=1e-5)


def test_newer_bytecode_version_is_an_error(tmp_path, capsys):
    rc = cli([TINY, "--input-size", "32", "--out", str(tmp_path), "--images", "none", "--bytecode-version", "99"])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "99" in err and "Traceback" not in err
    assert not any(tmp_path.glob("*.ptl"))


def test_no_xnnpack_gives_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mptl, "xnnpack_available", lambda: False)
    with pytest.raises(RuntimeUnavailableError, match="torch==2.12.0"):
        mptl.require_xnnpack()
    rc = cli([TINY, "--input-size", "32", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "XNNPACK" in err and "pip install torch==2.12.0" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["shufflenet_v1_x0_5_g7", "--input-size", "32"], "unknown model name 'shufflenet_v1_x0_5_g7'"),
        ([TINY, "--input-size", "12x"], "input size '12x' is not valid"),
        ([TINY, "--input-size", "16"], "input size '16' is not valid"),
        (["missing/weights.pth"], "no such weights file"),
        ([TINY, "--images", "/nonexistent/photos"], "no such image folder"),
        ([TINY, "--n-real", "-1"], "--n-real must be >= 0"),
    ],
)
def test_bad_cli_input_is_one_clear_error(argv, expected, tmp_path, capsys):
    rc = cli(argv + ["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err and err.startswith("error:") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_checkpoint_without_arch_asks_for_arch(tmp_path, capsys):
    sd = {f"model.{k}": v for k, v in shufflenet.create_model(TINY, num_classes=3).state_dict().items()}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": {}}, ckpt)
    rc = cli([str(ckpt), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "--arch" in err and err.count("\n") == 1
    # With the architecture stored as the classification wing stores it, it loads (class count from fc).
    torch.save({"state_dict": sd, "hyper_parameters": {"arch": TINY, "num_classes": 3}}, ckpt)
    src = load_model(str(ckpt))
    assert src.name == TINY and src.model.fc.out_features == 3


@pytest.mark.slow
def test_detector_export_through_detection_public_api(tmp_path):
    import detectron2  # noqa: F401 (setup installs it: missing fails, never skips)

    from shufflenet.mobile.detector import export_detector

    coco = TEST_DATA / "coco" / "val2017"
    formats = ("ptl", "onnx")  # the setup installs ONNX Runtime: both are always checked
    torch.manual_seed(0)  # detectron2 initialises from torch's generator: the same seed gives the same detector
    ptl, side = export_detector(
        "demo_shapes", tmp_path, formats, ExportSpec([(96, 128)], images=coco, n_real=1, log=_quiet)
    )
    assert side["task"] == "detection" and side["input"]["normalization"]["color"] == "BGR"
    assert {"torchvision::nms", "torchvision::roi_align"} <= set(side["operators"])  # what a runtime must provide
    assert [c["input"].split(" ")[0] for c in side["verification"]["checks"]] == ["random", "real"]
    assert len(side["outputs"]) == 3 and side["outputs"][0][1:] == [4]  # boxes [N, 4], scores [N], classes [N]
    assert side["sha256"] == hashlib.sha256(ptl.read_bytes()).hexdigest()
    # reload the written files and compare them with the eager detector on a real photo (not only the
    # exporter's own check): same detections, boxes and scores within the bound
    from shufflenet.detection import build_detector
    from shufflenet.detection.export import traceable_detector
    from shufflenet.mobile.detector import detector_inputs

    torch.manual_seed(0)
    eager = traceable_detector(build_detector("demo_shapes", opts=["MODEL.DEVICE", "cpu"])[0])
    image = detector_inputs([(96, 128)], sorted(coco.glob("*.jpg"))[1:2])[1].tensor
    with torch.no_grad():
        ref = eager(image)
    assert ref[0].shape[0] > 0  # random heads with score threshold 0 still detect: the comparison has content
    assert_within(ref, _lite(ptl)(image), (1e-3, 1e-4))  # boxes of up to ~128 px: 1e-2 px, fp32 rounding ~1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "demo_shapes.onnx"), providers=["CPUExecutionProvider"])
    got = [torch.from_numpy(o) for o in sess.run(None, {"input": image.numpy()})]
    assert_within(ref, got, (1e-3, 1e-4))
