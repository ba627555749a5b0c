"""Streaming shards of an ImageNet-layout folder (Lightning's ``litdata``), for clusters and object stores.

``shufflenet-shards ROOT OUT`` (or ``python -m shufflenet.classification.shards``) writes ``ROOT/train`` and
``ROOT/val`` (ImageNet's ``<split>/<class>/<image>`` layout, the classes of :func:`~.data.find_split_dirs`) into
``OUT/train/`` and ``OUT/val/``: litdata chunks of about ``--chunk-bytes`` each holding the images' original file
bytes (no re-encoding: the pixels a run sees are the folder's), the label and the relative path, plus
``OUT/shards.json`` (classes, counts, skipped files). ``OUT`` may be a local folder or an object-store URL
(``s3://bucket/prefix``; litdata uploads the chunks). The images are written in one seeded random order, so every
chunk holds a mix of classes (litdata shuffles chunks and the samples of the chunks a worker holds, not the whole
dataset at once). A file that cannot be decoded or has more than ``--max-image-pixels`` pixels is left out and
listed in ``shards.json``.

Training reads them with ``--data.shards OUT`` (a folder or the same URL; remote chunks are downloaded to a local
cache as they are needed): :class:`litdata.StreamingDataset` splits the chunks across ranks and nodes (each rank
reads its own part of every epoch's chunk permutation) and :class:`litdata.StreamingDataLoader` across the data
workers. The augmentation is seeded per sample from ``(seed, epoch, sample index)`` as on the folder path, and the
loader's position is saved with every checkpoint (the position after the last *trained* batch, not after the
batch Lightning has prefetched), so a run killed mid-epoch and resumed with ``--ckpt_path last`` trains on exactly
the batches the uninterrupted run would have (same devices, nodes, workers and batch size).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..data.stream import augmentation_seed
from ..errors import run_cli
from ..fileio import write_json_atomic
from .errors import DataError
from .imagefiles import (
    DECODE_ERRORS,
    DEFAULT_MAX_IMAGE_PIXELS,
    _scan,
    apply_seeded,
    collate,
    decode_rgb,
    find_split_dirs,
    ignore_stop_signals,
)

log = logging.getLogger(__name__)

__all__ = ["write_shards", "read_classes", "ShardDataset", "shard_loader", "is_url", "main", "cli"]

INDEX = "shards.json"
SPLITS = ("train", "val")


def _litdata():
    try:
        import litdata
    except ImportError:
        raise DataError(
            "data.shards needs litdata: pip install 'shufflenet[shards]' (or pip install litdata)"
        ) from None
    return litdata


def is_url(location: str) -> bool:
    """``s3://...``, ``gs://...``, ``azure://...``, ``hf://...``: an object store, not a local folder."""
    return "://" in str(location) and not str(location).startswith("local:")


def _join(location: str, *parts: str) -> str:
    return "/".join([str(location).rstrip("/"), *parts]) if is_url(location) else str(Path(location, *parts))


# --- writing ------------------------------------------------------------------------------------------------------
def _encode(item: Tuple[str, int, str], max_pixels: Optional[int]):
    """One sample for ``litdata.optimize``: the file's bytes, its label and relative path; nothing if unreadable."""
    path, label, name = item
    try:
        with open(path, "rb") as f:
            data = f.read()
        decode_rgb(data, max_pixels)  # a file the reader could not decode is left out here, not at training time
    except DECODE_ERRORS as e:
        print(f"warning: leaving out {path}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return
    yield {"image": data, "label": int(label), "name": name}


def write_shards(
    root: str,
    out: str,
    chunk_bytes: str = "64MB",
    num_workers: int = 1,
    seed: int = 0,
    max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
    splits: Sequence[str] = SPLITS,
) -> Dict[str, Any]:
    """Write the ``splits`` of the ImageNet-layout folder ``root`` into shards under ``out``; returns the index.

    A local ``out`` is written into a temporary sibling and renamed at the end (an interrupted run leaves no
    half-written ``out``); ``out`` must not exist yet.
    """
    litdata = _litdata()
    train_dir, val_dir = find_split_dirs(root)
    dirs = {"train": train_dir, "val": val_dir}
    classes, _ = _scan(train_dir)
    remote = is_url(out)
    if not remote and Path(out).exists():
        raise DataError(f"{out} exists already: give a new folder for the shards (or remove it)")
    target = out if remote else tempfile.mkdtemp(prefix=f".{Path(out).name}.", dir=Path(out).parent or ".")
    index: Dict[str, Any] = {"format": "shufflenet-shards-1", "classes": classes, "splits": {}, "skipped": {}}
    try:
        for split in splits:
            split_classes, samples = _scan(dirs[split])
            if split_classes != classes:
                raise DataError(f"{dirs[split]}: class folders differ from {train_dir}'s")
            items = [(p, label, os.path.relpath(p, dirs[split])) for p, label in samples]
            random.Random(seed).shuffle(items)  # every chunk a mix of classes
            print(f"{split}: {len(items)} images -> {_join(out, split)}", flush=True)
            litdata.optimize(
                fn=functools.partial(_encode, max_pixels=max_image_pixels),
                inputs=items,
                output_dir=_join(target, split),
                chunk_bytes=chunk_bytes,
                num_workers=max(1, int(num_workers)),
                reorder_files=False,
                mode=None,  # litdata refuses an output folder or prefix that holds data: nothing is overwritten
                start_method="fork",
                verbose=True,
            )
            written = len(litdata.StreamingDataset(_join(target, split)))
            index["splits"][split] = {"images": written, "files": len(items)}
            if written != len(items):
                index["skipped"][split] = len(items) - written
        if remote:
            with tempfile.TemporaryDirectory() as tmp:
                write_json_atomic(index, Path(tmp) / INDEX)
                _upload(Path(tmp) / INDEX, _join(out, INDEX))
        else:
            write_json_atomic(index, Path(target) / INDEX)
            os.replace(target, out)
    except BaseException as e:
        if not remote:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(e, OSError):  # a full disk, a quota: one error line, and no folder was left
            raise DataError(f"cannot write the shards to {out}: {e.strerror or e}; nothing was kept") from None
        raise
    return index


def _upload(local: Path, url: str) -> None:
    from litdata.streaming.client import S3Client

    if not url.startswith("s3://"):
        raise DataError(f"writing {INDEX} to {url}: only s3:// is supported for the index file")
    bucket, _, key = url[len("s3://") :].partition("/")
    S3Client().client.upload_file(str(local), bucket, key)


# --- reading ------------------------------------------------------------------------------------------------------
def read_classes(location: str) -> List[str]:
    """The class names stored in ``location/shards.json`` (a folder or an object-store URL)."""
    if is_url(location):
        _litdata()
        from litdata.streaming.downloader import get_downloader

        cache = Path(tempfile.mkdtemp(prefix="shufflenet-shards-"))
        get_downloader(str(location).rstrip("/"), str(cache), []).download_file(
            _join(location, INDEX), str(cache / INDEX)
        )
        path = cache / INDEX
    else:
        path = Path(location).expanduser() / INDEX
        if not path.is_file():
            raise DataError(
                f"data.shards {location} has no {INDEX} (expected a folder written by shufflenet-shards, "
                f"with train/, val/ and {INDEX})"
            )
    try:
        index = json.loads(Path(path).read_text())
        return list(index["classes"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a shards index ({type(e).__name__}: {e})") from None


def _dataset_class():
    litdata = _litdata()

    class _ShardStream(litdata.StreamingDataset):
        """A split of the shards: ``(image_tensor, label, skipped)`` samples, augmentation seeded per sample."""

        def _read(self, index: Any) -> Any:
            try:
                return super().__getitem__(index)
            except (OSError, ValueError, RuntimeError) as e:  # litdata: ChunkWaitTimeoutError (an OSError), ...
                first = str(e).splitlines()[0] if str(e) else ""
                raise DataError(
                    f"{self.location}: a shard chunk cannot be read ({type(e).__name__}: {first}); the shards are "
                    f"damaged or incomplete: write them again with shufflenet-shards"
                ) from None

        def __getitem__(self, index: Any) -> Any:
            sample = self._read(index)
            i = int(getattr(index, "index", index))
            skipped: List[str] = []
            for attempt in range(len(self) if self.train else 1):
                try:
                    img = decode_rgb(sample["image"], self.max_image_pixels)
                    break
                except DECODE_ERRORS as e:
                    skipped.append(f"{self.location}:{sample['name']}: {type(e).__name__}: {e}")
                    if not self.train:
                        return None, int(sample["label"]), tuple(skipped)
                    sample = self._read((i + attempt + 1) % len(self))
            seed = augmentation_seed(self.seed_, self.current_epoch, i) if self.train else None
            img = apply_seeded(self.tf, img, seed)
            return img, int(sample["label"]), tuple(skipped)

    return _ShardStream


class ShardDataset:
    """Opens one split of the shards as a litdata ``StreamingDataset`` (see :meth:`open`)."""

    @staticmethod
    def open(
        location: str,
        split: str,
        transform: Any,
        seed: int = 0,
        shuffle: bool = True,
        max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
        cache_dir: Optional[str] = None,
    ) -> Any:
        if not is_url(location) and not (Path(location).expanduser() / split / "index.json").is_file():
            raise DataError(
                f"data.shards {location} has no {split}/index.json (expected a folder written by shufflenet-shards)"
            )
        cls = _dataset_class()
        loc = location if is_url(location) else str(Path(location).expanduser().resolve())
        ds = cls(_join(loc, split), cache_dir=cache_dir, shuffle=shuffle, drop_last=shuffle, seed=int(seed))
        ds.tf, ds.seed_, ds.train = transform, int(seed), bool(shuffle)
        ds.max_image_pixels, ds.location = max_image_pixels, _join(location, split)
        ds.noted_state = None
        ds.root = ds.location  # named in the DataModule's messages
        return ds


def _loader_class():
    litdata = _litdata()

    class _ShardLoader(litdata.StreamingDataLoader):
        """A ``StreamingDataLoader`` whose training batches carry the loader's position after them, and whose
        ``state_dict`` (which Lightning saves with each checkpoint) is the position after the last trained batch."""

        def __iter__(self):
            for batch in super().__iter__():
                if self.dataset.train:
                    yield (*batch, self._position())
                else:
                    yield batch

        def _position(self) -> Dict[str, Any]:
            """litdata's loader state now (a copy: the dataset returns its own dict, which it updates later)."""
            state = copy.deepcopy(super().state_dict())
            # litdata 0.2.76: StreamingDataset.set_epoch ignores the new epoch while a restored state is set
            # (dataset.py, set_epoch: "If the state dict has been reloaded, don't override the current epoch"), so
            # after a resume the main process's dataset keeps the epoch it was created with, and
            # StreamingDataLoader.state_dict writes that stale epoch into state["dataset"]["current_epoch"]. A
            # second resume in the same epoch would then replay another epoch's chunk order and augmentation
            # seeds. The loader's own epoch is the right one; remove this when litdata keeps the two equal.
            state["dataset"]["current_epoch"] = state["current_epoch"]
            return state

        def note_state(self, state: Dict[str, Any]) -> None:
            """The loader's position after the batch that is being trained (saved with the next checkpoint)."""
            self.dataset.noted_state = state

        def state_dict(self) -> Dict[str, Any]:
            noted = getattr(self.dataset, "noted_state", None)
            return noted if noted is not None else self._position()

        def load_state_dict(self, obj: Dict[str, Any]) -> None:
            super().load_state_dict(obj)
            self.dataset.noted_state = obj

    return _ShardLoader


def shard_loader(dm: Any, dataset: Any, batch_size: int, num_workers: int, world: int, train: bool) -> Any:
    """The training (``train=True``) or evaluation loader of a split opened by :meth:`ShardDataset.open`."""
    per_rank = len(dataset)
    if train and per_rank < batch_size:
        raise DataError(
            f"{dataset.location} has {per_rank} images per process, fewer than one batch ({batch_size} x {world} "
            f"processes); lower data.batch_size"
        )
    return _loader_class()(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=train,
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
        pin_memory=bool(dm.hparams.pin_memory and torch.cuda.is_available()),
    )


def batches_per_epoch(dataset: Any, batch_size: int, num_workers: int, world: int) -> int:
    """Training batches per epoch and rank (litdata drops each worker's incomplete batch)."""
    workers = max(1, num_workers)
    per_rank = dataset.get_len(workers, batch_size)
    return max(1, per_rank // batch_size)


# --- command ------------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="shufflenet-shards",
        description="Write an ImageNet-layout folder (train/<class>/*, val/<class>/*) into litdata streaming shards "
        "for `--data.shards` (a local folder or an s3:// URL).",
    )
    p.add_argument("root", help="ImageNet-layout folder (train/ and val/, or test/)")
    p.add_argument("out", help="new folder or s3://bucket/prefix for the shards")
    p.add_argument("--chunk-bytes", default="64MB", help="target size of one chunk (default 64MB)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="writer processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the order the images are written in")
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="images with more pixels are left out (default 100 million)",
    )
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to write")
    args = p.parse_args(argv)
    if args.workers < 1:
        raise DataError(f"--workers must be >= 1, got {args.workers}")
    index = write_shards(
        args.root, args.out, args.chunk_bytes, args.workers, args.seed, args.max_image_pixels, args.splits
    )
    for split, info in index["splits"].items():
        print(f"{split}: {info['images']} images written ({info['files'] - info['images']} left out)")
    print(f"shards: {args.out} (train with --data.shards {args.out})")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
