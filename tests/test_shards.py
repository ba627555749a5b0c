"""Streaming shards (litdata): the writer, the reader, the split across ranks, and exact resume after a kill.

Real JPEG photos (the package's samples) and generated demo images; the kill loop runs classification/train.py
as a child process on shards, interrupts it (kill -9 of the process group, SIGTERM) at fixed steps, twice inside
one epoch, resumes with ``--ckpt_path last`` and compares the final weights with an uninterrupted run's, bit for
bit. The data side of the same promise, at every batch and without training: tests/test_resume_replay.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
from kill_at_step import run_killed  # noqa: E402
from proc import run as watched_run

from shufflenet.classification.data import ImageFolderDataModule, decode_rgb, eval_transform  # noqa: E402
from shufflenet.classification.demo import DEMO_CLASSES, render  # noqa: E402
from shufflenet.classification.errors import DataError  # noqa: E402
from shufflenet.classification.shards import cli, read_classes, write_shards  # noqa: E402
from shufflenet.errors import EXIT_INTERRUPTED  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "classification" / "train.py"
PHOTOS = sorted(p for p in resources.files("shufflenet").joinpath("resources/images").iterdir() if p.suffix == ".jpg")


def make_tree(root: Path, per_class: int = 6, val_per_class: int = 1, classes=DEMO_CLASSES[:4]) -> Path:
    for split, n, off in (("train", per_class, 0), ("val", val_per_class, 10_000)):
        for label, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                render(label, off + 100 * label + i, 32).save(d / f"{i}.jpg", quality=90)
    return root


def test_writer_keeps_the_files_bytes_and_leaves_out_unreadable(tmp_path, capsys):
    root = tmp_path / "photos"
    for split in ("train", "val"):
        for i, p in enumerate(PHOTOS):
            (root / split / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
            shutil.copy(p, root / split / f"c{i % 3}" / p.name)
    (root / "train" / "c1" / "broken.jpg").write_bytes(b"not an image" * 40)
    out = tmp_path / "shards"
    assert cli([str(root), str(out), "--workers", "1", "--chunk-bytes", "100KB"]) == 0
    index = json.loads((out / "shards.json").read_text())
    assert index["classes"] == ["c0", "c1", "c2"] == read_classes(str(out))
    assert index["splits"]["train"] == {"images": 6, "files": 7} and index["skipped"] == {"train": 1}
    assert len(list((out / "train").glob("*.bin"))) >= 2  # several chunks: 6 photos of ~50 kB, 100 kB chunks
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    dm = ImageFolderDataModule(batch_size=2, num_workers=0, shards=str(out))
    dm.setup("fit")
    assert dm.classes == ["c0", "c1", "c2"] and len(dm.train_set) == 6 and len(dm.val_set) == 6
    # evaluation samples: the same tensors as the evaluation transform of the original files
    by_name = {}
    for i in range(len(dm.val_set)):
        raw = super(type(dm.val_set), dm.val_set).__getitem__(i)
        by_name[raw["name"]] = (raw, dm.val_set[i])
    for p in PHOTOS:
        name = f"c{PHOTOS.index(p) % 3}/{p.name}"
        raw, (x, label, skipped) = by_name[name]
        assert raw["image"] == p.read_bytes() and label == PHOTOS.index(p) % 3 and not skipped
        assert torch.equal(x, eval_transform()(decode_rgb(p)))
    # errors: one line each
    capsys.readouterr()
    assert cli([str(root), str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {out} exists already")
    with pytest.raises(DataError, match="has no shards.json"):
        _ = ImageFolderDataModule(shards=str(tmp_path)).classes


def test_ranks_read_disjoint_parts_and_crops_are_seeded_per_sample(tmp_path, monkeypatch):
    from litdata.utilities import env

    root = make_tree(tmp_path / "data", per_class=8)
    write_shards(str(root), str(tmp_path / "shards"), chunk_bytes="4KB", num_workers=1)
    seen = {}
    for rank in (0, 1):
        monkeypatch.setattr(
            env._DistributedEnv,
            "detect",
            classmethod(lambda cls, r=rank: cls(world_size=2, global_rank=r, num_nodes=1)),
        )
        dm = ImageFolderDataModule(
            batch_size=4, num_workers=0, image_size=32, resize_size=32, shards=str(tmp_path / "shards")
        )
        dm.setup("fit")
        batches = list(dm.train_dataloader())
        assert len(batches) == 4 and all(b[0].shape == (4, 3, 32, 32) for b in batches)  # 32 images / 2 ranks / 4
        seen[rank] = torch.cat([b[0] for b in batches])
        # the same sample in the same epoch gets the same crop; another epoch another crop
        ds = dm.train_set
        ds.set_epoch(1)
        a = ds[3][0]
        assert torch.equal(a, ds[3][0])
        ds.set_epoch(2)
        assert not torch.equal(a, ds[3][0])
    flat = {tuple(x.flatten()[:64].tolist()) for r in seen for x in seen[r]}
    assert len(flat) == 32  # the two ranks' 16 + 16 samples are 32 different images: no sample on both ranks


@pytest.mark.slow
def test_kill_on_shards_resumes_to_the_uninterrupted_weights(tmp_path):
    """kill -9 and SIGTERM (to the process group: main process and data worker) at fixed steps of a training on
    shards, each followed by ``--ckpt_path last``, two of them twice inside one epoch after the first: the final
    weights equal an uninterrupted run's bit for bit."""
    root = make_tree(tmp_path / "data", per_class=6)  # 24 images: 3 batches of 8 an epoch
    shards = tmp_path / "shards"
    write_shards(str(root), str(shards), chunk_bytes="8KB", num_workers=1)
    assert len(list((shards / "train").glob("*.bin"))) >= 3
    steps = 12
    args = [
        "--data.shards",
        str(shards),
        "--data.batch_size",
        "8",
        "--trainer.max_steps",
        str(steps),
        "--model.arch",
        "shufflenet_v1_x0_25_g3",
        "--data.image_size",
        "32",
        "--data.resize_size",
        "32",
        "--data.num_workers",
        "1",
        "--num_threads",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger",
        "false",
        "--model.lr_reference_batch",
        "16",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.num_sanity_val_steps",
        "0",
        "--save_every_n_steps",
        "1",
        "--trainer.deterministic",
        "true",
        "--export",
        "false",
    ]
    e = dict(os.environ, SHUFFLENET_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    e.pop("SHUFFLENET_CLASSIFICATION_RUN_DIR", None)
    ref = subprocess.Popen(
        [sys.executable, str(TRAIN), *args, "--run_dir", str(tmp_path / "ref")],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    # (step at which the signal is sent, signal, step of last.ckpt afterwards): kill -9 lands before the step's
    # checkpoint, SIGTERM finishes the step and saves it. Epochs are steps 1-3, 4-6, 7-9: the resumes from steps 4
    # and 5 are both inside epoch 2, those from 8 and 8 inside epoch 3 (the second litdata resume of an epoch is
    # the one that replayed another epoch's order before the fix in shards.py).
    plan = [
        (2, signal.SIGKILL, 1),
        (4, signal.SIGTERM, 4),
        (6, signal.SIGKILL, 5),
        (8, signal.SIGTERM, 8),
        (9, signal.SIGKILL, 8),
    ]
    for i, (at, sig, kept) in enumerate(plan):
        proc = run_killed([*args, "--run_dir", str(run)] + (["--ckpt_path", "last"] if i else []), at, sig, e)
        assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else EXIT_INTERRUPTED), proc.stderr[-3000:]
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == kept, (at, sig.name)
    final = watched_run([sys.executable, str(TRAIN), *args, "--run_dir", str(run), "--ckpt_path", "last"], env=e)
    assert final.returncode == 0, final.stderr[-3000:]
    ref_out, ref_err = ref.communicate(timeout=3600)  # a hang cap only: it ran beside the whole loop
    assert ref.returncode == 0, ref_err[-3000:]
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(last, map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == steps
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
