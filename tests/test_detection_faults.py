"""Fault injection for detection/train_net.py: bad weights, bad resumes, unwritable results, a model
that detects nothing, a crash mid-run. Each is one `error:` line and exit 2 (or a compatible load), before
detectron2's environment/config dump, with no output folder or empty metrics.json left behind.

All runs use the real COCO slice in tests/data/coco (DETECTRON2_DATASETS=tests/data) and a tiny network.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import build_detection_train_loader  # noqa: E402
from detectron2.data.samplers import TrainingSampler  # noqa: E402
from detectron2.engine import DefaultTrainer, TrainerBase  # noqa: E402
from proc import run as watched_run

import shufflenet.detection as det  # noqa: E402
from shufflenet import create_model, save_weights  # noqa: E402
from shufflenet.detection.engine import cli  # noqa: E402
from shufflenet.detection.resume import ResumableLoader, SeededMapper, TrainingStream  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = "shufflenet_v1_x0_25_g3"
CONFIG = ["--config-file", "coco2017_shufflenet1x_300"]  # detectron2's flag takes the packaged name too
FAST = [
    "MODEL.SHUFFLENET.NAME",
    TINY,
    "MODEL.DEVICE",
    "cpu",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.BASE_LR",
    "0.01",
    "SOLVER.WARMUP_ITERS",
    "1",
    "DATALOADER.NUM_WORKERS",
    "0",
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "192",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "192",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "20",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
    "8",
    "SEED",
    "0",
]


@pytest.fixture(autouse=True)
def _datasets(monkeypatch, coco_datasets_root):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(coco_datasets_root))


def _one_error_line(capfd, *needles: str) -> str:
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Environment info" not in out + err and "Traceback" not in err  # before detectron2's dump
    return lines[0]


def test_bad_weights_are_one_line_before_any_output(tmp_path, capfd):
    out = tmp_path / "run"
    # truncated file
    good = save_weights(create_model(TINY, num_classes=10), tmp_path / "good.pth", arch=TINY)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:5000])
    assert cli([*CONFIG, *FAST, "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", str(tmp_path / "cut.pth")]) == 2
    _one_error_line(capfd, "cut.pth: cannot be read as a torch weights file")
    # a classifier of another width: the shape mismatch is found before training starts
    half = save_weights(create_model("shufflenet_v1_x0_5_g3", num_classes=10), tmp_path / "half.pth")
    assert cli([*CONFIG, *FAST, "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", str(half)]) == 2
    _one_error_line(capfd, "half.pth", "MODEL.SHUFFLENET")
    # a public (megvii-layout) checkpoint is converted on read; a broken one is one line naming the file
    torch.save(
        {
            "state_dict": {
                "module.first_conv.0.weight": torch.zeros(1),
                "module.features.0.branch_main_1.0.weight": torch.zeros(1),
            }
        },
        tmp_path / "m.pth.tar",
    )
    assert cli([*CONFIG, *FAST, "OUTPUT_DIR", str(out), "MODEL.WEIGHTS", str(tmp_path / "m.pth.tar")]) == 2
    _one_error_line(capfd, "MODEL.WEIGHTS", "m.pth.tar", "expected 3 stages of units")
    assert not out.exists()  # no run folder, no 0-byte metrics.json


def test_bad_weights_through_the_script_no_dump(tmp_path):
    """The shipped script: one line on stderr, exit 2, nothing on stdout (no ~660-line env/config dump)."""
    (tmp_path / "empty.pth").write_bytes(b"")
    proc = watched_run(
        [
            sys.executable,
            str(REPO / "detection" / "train_net.py"),
            *CONFIG,
            *FAST,
            "OUTPUT_DIR",
            str(tmp_path / "run"),
            "MODEL.WEIGHTS",
            str(tmp_path / "empty.pth"),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: MODEL.WEIGHTS: ")
    assert "empty.pth" in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "run").exists()


def _train(out: Path, iters: int, *flags: str) -> int:
    return cli([*CONFIG, *flags, *FAST, "DATASETS.TEST", "()", "SOLVER.MAX_ITER", str(iters), "OUTPUT_DIR", str(out)])


def test_resume_of_a_bad_checkpoint_is_one_line(tmp_path, capfd):
    out = tmp_path / "run"
    capfd.readouterr()
    assert _train(out, 1) == 0
    # Quiet by default: detectron2's environment, full config and model print are in log.txt only, without
    # colour codes, and the files the run wrote are named.
    printed = "".join(capfd.readouterr())
    log = (out / "log.txt").read_text()
    for dump in ("Environment info:", "Running with full config", "Model:\nGeneralizedRCNN"):
        assert dump in log and dump not in printed, dump
    assert "\x1b[" not in log
    assert "No CUDA runtime is found" not in printed and "torch.meshgrid" not in printed
    assert "model_final.pth" in printed.splitlines()[-1] and "log.txt" in printed.splitlines()[-1]
    final = out / "model_final.pth"
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    final.write_bytes(final.read_bytes()[:4096])  # cut by a crash or a full disk
    assert _train(out, 2, "--resume") == 2
    _one_error_line(capfd, "--resume checkpoint", "model_final.pth: cannot be read")
    final.unlink()
    assert _train(out, 2, "--resume") == 2
    _one_error_line(capfd, "last_checkpoint names model_final.pth, which does not exist")


def _upstream_state_dict(self):  # detectron2 main's DefaultTrainer.state_dict
    ret = TrainerBase.state_dict(self)
    ret["_trainer"] = self._trainer.state_dict()
    return ret


def _upstream_load_state_dict(self, state_dict):  # detectron2 main's DefaultTrainer.load_state_dict
    TrainerBase.load_state_dict(self, state_dict)
    self._trainer.load_state_dict(state_dict["_trainer"])


def test_resume_of_a_0_6_checkpoint_under_upstream_detectron2(tmp_path, monkeypatch, capfd):
    """A checkpoint in detectron2 0.6's layout (its trainer state has no '_trainer' entry), resumed by upstream
    detectron2's trainer: a compatible load with a warning, no KeyError. The test writes the 0.6 layout itself
    (whichever install trained the first iteration), and runs upstream's trainer: the installed one under an
    upstream detectron2, upstream's state_dict/load_state_dict patched into the trainer on the 0.6 copy."""
    out = tmp_path / "run"
    assert _train(out, 1) == 0
    path = out / "model_final.pth"
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["iteration"] == 0
    saved["trainer"] = {k: v for k, v in saved["trainer"].items() if k != "_trainer"}  # the 0.6 layout
    torch.save(saved, path)
    if det.compat.install_kind() != "upstream":
        monkeypatch.setattr(DefaultTrainer, "state_dict", _upstream_state_dict)
        monkeypatch.setattr(DefaultTrainer, "load_state_dict", _upstream_load_state_dict)
    capfd.readouterr()
    assert _train(out, 2, "--resume") == 0
    out_text, err_text = capfd.readouterr()
    assert "written by detectron2 0.6" in out_text + err_text  # detectron2's logger (setup_logger) prints it
    resumed = torch.load(path, map_location="cpu", weights_only=True)
    assert resumed["iteration"] == 1 and "_trainer" in resumed["trainer"]  # continued at iteration 1, upstream format


def test_no_detections_say_why_and_unwritable_results(tmp_path, capfd):
    weights = save_weights(create_model(TINY, num_classes=10), tmp_path / "w.pth", arch=TINY)
    eval_only = [*CONFIG, "--eval-only", *FAST, "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(tmp_path / "run")]
    # Nothing scores above 1.0: the model detects nothing.
    assert (
        cli(
            [
                *eval_only[:2],
                "--results-json",
                str(tmp_path / "r.json"),
                *eval_only[2:],
                "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                "1.0",
            ]
        )
        == 0
    )
    out, err = capfd.readouterr()
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["metrics"]["coco_2017_val"]["AP"] is None
    assert result["detections"]["coco_2017_val"] == {"count": 0, "images": 9}
    note = result["notes"]["coco_2017_val"]
    assert "no detections on the 9 images" in note and "SCORE_THRESH_TEST=1.0" in note
    assert f"warning: {note}" in err
    # --results-json naming a folder: the table is printed first, then one error line, exit 2.
    (tmp_path / "folder.json").mkdir()
    assert (
        cli(
            [
                *eval_only[:2],
                "--results-json",
                str(tmp_path / "folder.json"),
                *eval_only[2:],
                "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                "1.0",
            ]
        )
        == 2
    )
    out, err = capfd.readouterr()
    assert "| coco_2017_val |" in out
    assert err.strip().splitlines()[-1].startswith(f"error: --results-json {tmp_path / 'folder.json'}: cannot write")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_crash_in_the_first_iteration_leaves_no_empty_metrics_json(tmp_path, coco_root):
    images = tmp_path / "images"
    shutil.copytree(coco_root / "train2017", images)
    for f in images.glob("*.jpg"):
        f.write_bytes(b"not a jpeg")  # listed and present (so the early checks pass), unreadable when loaded
    out = tmp_path / "run"
    with pytest.raises(Exception, match="cannot identify image file"):
        cli(
            [
                *CONFIG,
                "--register-coco",
                "broken",
                str(coco_root / "annotations" / "instances_train2017.json"),
                str(images),
                *FAST,
                "DATASETS.TRAIN",
                "('broken',)",
                "DATASETS.TEST",
                "()",
                "SOLVER.MAX_ITER",
                "2",
                "OUTPUT_DIR",
                str(out),
            ]
        )
    assert (out / "config.yaml").is_file()  # the run did start ...
    assert not (out / "metrics.json").exists()  # ... and left no empty metrics.json behind


def _draws(d: dict) -> dict:
    """A mapper that augments at random: one draw from each of Python's, NumPy's and torch's generators."""
    return {**d, "draws": (random.random(), float(np.random.rand()), float(torch.rand(())))}


def _loader(dicts, workers: int, batch: int = 3, seed: int = 7) -> ResumableLoader:
    stream = TrainingStream(dicts, seed)
    mapper = SeededMapper(_draws, seed)
    inner = build_detection_train_loader(
        stream, mapper=mapper, total_batch_size=batch, aspect_ratio_grouping=True, num_workers=workers
    )
    return ResumableLoader(inner, stream, mapper, batch, aspect_ratio_grouping=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_training_stream_resumes_at_any_batch(workers):
    """The data side of an exact resume, without images: detectron2's batched loader (aspect-ratio grouping
    on) over the training stream, resumed after k batches in a new loader, yields the batches the uninterrupted
    loader yields next: the same images, the images held back in a partly filled aspect-ratio group included,
    with the same random augmentation, in a process or in two data workers. The stream is TrainingSampler's
    order, and iterating it leaves the global generators as they were."""
    # 10 images, about a third portrait: with batches of 3 some image is usually held back in a group
    dicts = [
        {"image_id": i, "width": 480 if i % 3 == 0 else 640, "height": 640 if i % 3 == 0 else 480} for i in range(10)
    ]
    stream = TrainingStream(dicts, seed=7)
    order = [index for _, index in itertools.islice(stream.indices(itertools.count()), 40)]
    assert order == list(itertools.islice(iter(TrainingSampler(10, seed=7)), 40))  # 4 epochs, 4 permutations
    second = TrainingStream(dicts, seed=7, rank=1, world_size=2)
    assert [i for _, i in itertools.islice(second.indices(itertools.count()), 20)] == order[1::2]

    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    reference = _loader(dicts, workers=0)
    batches, states = [], []
    for batch in itertools.islice(reference, 12):
        batches.append([(d["image_id"], d["draws"]) for d in batch])
        states.append(reference.state_dict())
    after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    held = [k for k, s in enumerate(states, 1) if s["held"]]
    assert held, states  # the case that needs more than a count of images consumed occurs
    assert all("_shufflenet_stream_position" not in d for d in batch)

    for k in sorted({1, held[0], held[-1], 9}):
        resumed = _loader(dicts, workers=workers)
        assert resumed.resume(k, states[k - 1]) is None  # the recomputed position agrees with the saved one
        got = [[(d["image_id"], d["draws"]) for d in b] for b in itertools.islice(resumed, 12 - k)]
        assert got == batches[k:], k
        assert resumed.state_dict() == states[-1]
