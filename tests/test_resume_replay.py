"""Exact resume, the data side, per data path: no training, the real data module, the loader state saved after
every batch (what a checkpoint holds), a new data module and loader resumed from it.

A resume at every batch position of three epochs (8 batches an epoch), and chains of two and three resumes,
with two kills inside one epoch after the first (4,5 / 7,8 / 10,11 / 2,7,8 ...): every batch after a resume
(images, so the augmentation too, and labels) equals the uninterrupted stream's. The driver that plays
Lightning's part (``train_dataloader``, ``load_state_dict`` before the first batch, one batch prefetched,
``on_after_batch_transfer``, ``state_dict``) is tools/replay_resume.py; the end-to-end kills with training are
in test_shards.py, test_faults_classification.py and test_detection_faults.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tools.replay_resume import lightning_stream, replay, resume_from

PER_EPOCH, EPOCHS = 8, 3
BATCHES = PER_EPOCH * EPOCHS + 2  # into the fourth epoch
CHAINS = [(4, 5), (7, 8), (10, 11), (2, 7, 8), (9, 10, 12), (17, 18)]


def assert_same(got, want, label):
    assert len(got) == len(want), label
    for n, ((g, _), (w, _)) in enumerate(zip(got, want), 1):
        assert len(g) == len(w) == 2, label
        assert torch.equal(g[1], w[1]), (label, "labels of batch", n)
        assert torch.equal(g[0], w[0]), (label, "images of batch", n)


def check_every_resume(open_stream, chains=CHAINS):
    reference = replay(open_stream, BATCHES)
    images = torch.cat([b[0] for b, _ in reference[:PER_EPOCH]])
    assert len({tuple(x.flatten()[:32].tolist()) for x in images}) == len(images)  # an epoch: distinct samples
    for k in range(1, PER_EPOCH * EPOCHS + 1):  # one resume at every position of three epochs
        got = resume_from(open_stream, reference[k - 1][1], BATCHES - k)
        assert_same(got, reference[k:], f"resumed after batch {k}")
    for chain in chains:
        assert_same(replay(open_stream, BATCHES, chain), reference, f"kills after batches {chain}")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from tools.replay_resume import shard_datamodule_factory

    return shard_datamodule_factory(tmp_path_factory.mktemp("replay"), per_epoch=PER_EPOCH)


def test_shards_resume_at_every_batch_and_after_chains_of_kills(shards):
    """litdata's StreamingDataLoader carries the position; with one data worker, as the kill test runs."""
    check_every_resume(lightning_stream(shards))


def folder_factory(root: Path, workers: int):
    from shufflenet.classification.data import ImageFolderDataModule

    return lambda: ImageFolderDataModule(
        root=str(root), batch_size=4, num_workers=workers, image_size=16, resize_size=16, persistent_workers=False
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    from shufflenet.classification.demo import DEMO_CLASSES, render

    root = tmp_path_factory.mktemp("replay-folder")
    for split, n, off in (("train", 9, 0), ("val", 1, 10_000)):  # 36 images: 8 batches of 4 an epoch, 4 left over
        for label, name in enumerate(DEMO_CLASSES[:4]):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                render(label, off + 100 * label + i, 24).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_folders_resume_at_every_batch_and_after_chains_of_kills(folder, workers):
    """The image-folder loader is a stateful loader (its state: the stream position); in the main process and
    with a data worker."""
    check_every_resume(lightning_stream(folder_factory(folder, workers)))


def detection_stream(cfg):
    """``open_stream`` for detection: the trainer's own training loader (``Trainer.build_train_loader``: the
    stream, the seeded ``DatasetMapper``, detectron2's batched loader with aspect-ratio grouping, one data
    worker), resumed from the state the trainer saves with each checkpoint; detectron2 fetches one batch a step."""
    from shufflenet.detection.engine import Trainer
    from tools.replay_resume import kill_workers

    def open_stream(saved):
        loader = Trainer.build_train_loader(cfg)
        if saved is not None:
            assert loader.load_state_dict(saved) is None  # the recomputed position agrees with the saved one
        try:
            for batch in loader:
                yield (
                    (
                        [d["image_id"] for d in batch],
                        [d["image"] for d in batch],
                        [d["instances"].gt_boxes.tensor for d in batch],
                        [d["instances"].gt_classes for d in batch],
                    ),
                    loader.state_dict(),
                )
        finally:
            kill_workers()

    return open_stream


def assert_same_detection(got, want, label):
    assert len(got) == len(want), label
    for n, ((g, _), (w, _)) in enumerate(zip(got, want), 1):
        assert g[0] == w[0], (label, "images of batch", n, g[0], w[0])
        for part in (1, 2, 3):  # the augmented images (resize, flip), their boxes and classes
            assert all(torch.equal(a, b) for a, b in zip(g[part], w[part])), (label, "batch", n, part)


def test_detection_resume_at_every_batch_and_after_chains_of_kills(monkeypatch, coco_datasets_root):
    """17 real COCO images (train and val slices), 2 a batch, aspect-ratio grouping on (portrait and landscape
    images: a group can hold an image back across a checkpoint): about 8 batches an epoch of the stream."""
    from shufflenet.detection.engine import build_argument_parser, setup

    monkeypatch.setenv("DETECTRON2_DATASETS", str(coco_datasets_root))
    opts = ["MODEL.SHUFFLENET.NAME", "shufflenet_v1_x0_25_g3", "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2"]
    opts += ["DATALOADER.NUM_WORKERS", "1", "INPUT.MIN_SIZE_TRAIN", "(96, 128)", "INPUT.MAX_SIZE_TRAIN", "192"]
    opts += ["DATASETS.TRAIN", "('coco_2017_train', 'coco_2017_val')", "SEED", "3"]
    args = build_argument_parser().parse_args(["--config", "coco2017_shufflenet1x_300", *opts])
    cfg = setup(args, verify_weights=False)
    open_stream = detection_stream(cfg)
    reference = replay(open_stream, BATCHES)
    assert any(s["held"] for _, s in reference), "no image was held back in an aspect-ratio group"
    for k in range(1, PER_EPOCH * EPOCHS + 1):
        assert_same_detection(resume_from(open_stream, reference[k - 1][1], BATCHES - k), reference[k:], k)
    for chain in CHAINS:
        assert_same_detection(replay(open_stream, BATCHES, chain), reference, chain)
