"""Data: ImageNet-layout folders, the paper's transforms, resumable sampling, bad-image handling.

Layout (torchvision ``ImageFolder`` / ImageNet): ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*``;
``root/test/`` is accepted as the validation folder when ``root/val/`` is absent (CIFAR-style exports).
Class indices are the sorted folder names (torchvision's ``find_classes``), so a wnid folder tree gives the
standard ImageNet label order.

Decoding (``data.backend``): ``tensor`` (the default) reads the file's bytes once, checks the header with PIL
(no pixel decoded) and decodes an RGB or grayscale JPEG with ``torchvision.io.decode_jpeg`` into a uint8 tensor;
``transforms.v2`` then crops, resizes and flips the uint8 tensor, and converts to float only at the end (the
224x224 crop, not the whole photo). Every other file (PNG, CMYK JPEG, GIF, 16-bit, ...) falls back to PIL's
decoder. The crop box and flip of a sample are those torchvision's transforms draw for a PIL image of
the same size with the same seed; the pixels differ from a PIL resize only by the resampling arithmetic (a few
levels out of 255). ``dali`` (:mod:`shufflenet.classification.data_dali`, the ``dali`` extra) decodes and
augments with NVIDIA DALI, on the GPU where there is one. ``data.shards`` reads the training set from
streaming shards instead of a folder (:mod:`shufflenet.classification.shards`).

Images are converted to RGB: grayscale (L/LA), palette (P), RGBA (alpha dropped),
CMYK and 16-bit (I;16, I) images are *converted*, 16-bit ones by scaling to 8 bits. A file that cannot be
decoded (corrupt or truncated, not an image) and an image of more than ``max_image_pixels`` pixels
(:data:`DEFAULT_MAX_IMAGE_PIXELS`, 100 million; checked from the file header *before* decoding, so a
decompression bomb never allocates its pixels) is *skipped*. In training the sample is replaced by the next
readable image of the dataset (so every batch keeps its size, which DDP and exact resumption need); in
validation and evaluation it is dropped (no image is counted twice). A warning names the file once, and the
run's summary (``metrics.json: skipped_images``) counts and lists them.

Augmentation is seeded per sample from ``(seed, epoch, index)``: the same image gets the same crop in
the same epoch whatever the number of workers, and a run resumed mid-epoch sees exactly the crops the
uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..data.stream import SampleStream, augmentation_seed
from ..data.workers import available_cpus
from .errors import DataError
from .imagefiles import (
    DECODE_ERRORS,
    DEFAULT_MAX_IMAGE_PIXELS,
    _scan,
    apply_seeded,
    collate,
    collate_predict,
    decode_rgb,
    find_split_dirs,
    ignore_stop_signals,
    list_images,
    load_rgb,  # noqa: F401 (re-exported: the PIL decoder, next to decode_rgb)
)

log = logging.getLogger(__name__)

__all__ = [
    "train_transform",
    "eval_transform",
    "BACKENDS",
    "ImageFolderDataset",
    "ImageListDataset",
    "ResumableSampler",
    "ImageFolderDataModule",
    "ToNormalizedFloat",
]

#: The crop-area range of RandomResizedCrop. ResNeXt/Inception use (0.08, 1); the paper uses "slightly
#: less aggressive scale augmentation" because small networks underfit rather than overfit (Sec. 4).
#: We raise the lower bound to 25 % of the image area: a crop then keeps at least half the side length,
#: so the object usually stays in view, while scale jitter of 4x in area remains.
DEFAULT_CROP_SCALE = (0.25, 1.0)

Key = Union[int, Tuple[int, int]]


#: ``data.backend`` values: torchvision.io + transforms.v2 on uint8 tensors, NVIDIA DALI.
BACKENDS = ("tensor", "dali")


class ToNormalizedFloat(torch.nn.Module):
    """A uint8 RGB image (a ``(3, H, W)`` tensor or a PIL image) -> float32 ``(x / 255 - mean) / std``.

    The same numbers as ``v2.ToImage() + v2.ToDtype(float32, scale=True) + v2.Normalize(mean, std)`` (to float
    rounding) in two passes over the crop instead of four: ``x * (1 / (255 std)) + (-mean / std)``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(v) for v in std)
        std_t = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1) / std_t

    def forward(self, img: Any) -> torch.Tensor:
        if isinstance(img, Image.Image):
            img = torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
        if img.dtype != torch.uint8:
            raise TypeError(f"ToNormalizedFloat expects a uint8 image, got {img.dtype}")
        return torch.addcmul(self.shift, img.as_subclass(torch.Tensor).to(torch.float32), self.scale)

    def extra_repr(self) -> str:
        return f"mean={list(self.mean)}, std={list(self.std)}"


def train_transform(
    image_size: int = 224, crop_scale: Sequence[float] = DEFAULT_CROP_SCALE, hflip: float = 0.5
) -> T.Compose:
    """RandomResizedCrop(image_size, crop_scale) + horizontal flip + ImageNet normalization."""
    return T.Compose(
        [
            T.RandomResizedCrop(
                image_size, scale=tuple(crop_scale), interpolation=InterpolationMode.BILINEAR, antialias=True
            ),
            T.RandomHorizontalFlip(hflip),
            ToNormalizedFloat(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int = 224, resize_size: int = 256) -> T.Compose:
    """The paper's single-crop protocol: resize the short side to ``resize_size``, center crop ``image_size``."""
    return T.Compose(
        [
            T.Resize(resize_size, interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(image_size),
            ToNormalizedFloat(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class ImageFolderDataset(Dataset):
    """``ImageFolder``-compatible dataset (same class order and samples) with bad-image skipping.

    ``dataset[i]`` or ``dataset[(epoch, i)]`` returns ``(image_tensor, label, skipped_paths)``; with an
    ``(epoch, i)`` key the random transform is seeded by ``(seed, epoch, i)``. An unreadable or oversized
    image is replaced by the next readable one (``replace_unreadable=True``, training) or returned as
    ``(None, label, skipped_paths)`` (evaluation: :func:`collate` drops it, so no image counts twice).
    Images are decoded with :func:`decode_rgb`: a uint8 ``(3, H, W)`` tensor goes into ``transform``.
    """

    def __init__(
        self,
        split_dir: Union[str, Path],
        transform: Any = None,
        seed: int = 0,
        classes: Optional[Sequence[str]] = None,
        max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
        replace_unreadable: bool = True,
    ) -> None:
        self.root = Path(split_dir)
        self.classes, self.samples = _scan(self.root)
        if classes is not None and list(classes) != self.classes:
            extra = sorted(set(self.classes) - set(classes))
            lacking = sorted(set(classes) - set(self.classes))
            raise DataError(
                f"{self.root}: class folders differ from the training set's: "
                f"{len(self.classes)} here vs {len(classes)} in train"
                + (f"; not in train: {extra[:5]}" if extra else "")
                + (f"; missing here: {lacking[:5]}" if lacking else "")
            )
        self.targets = [s[1] for s in self.samples]
        self.transform = transform
        self.seed = int(seed)
        self.max_image_pixels = max_image_pixels
        self.replace_unreadable = replace_unreadable

    def __len__(self) -> int:
        return len(self.samples)

    def _seed_for(self, epoch: int, index: int) -> int:
        return augmentation_seed(self.seed, epoch, index)

    def decode(self, path: str) -> torch.Tensor:
        """The image at ``path``: a uint8 ``(3, H, W)`` RGB tensor."""
        return decode_rgb(path, self.max_image_pixels)

    def __getitem__(self, key: Key) -> Tuple[Optional[torch.Tensor], int, Tuple[str, ...]]:
        epoch, index = key if isinstance(key, tuple) else (None, int(key))
        skipped: List[str] = []
        for attempt in range(len(self.samples) if self.replace_unreadable else 1):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                img = self.decode(path)
                break
            except DECODE_ERRORS as e:
                skipped.append(f"{path}: {type(e).__name__}: {e}")
        else:
            if not self.replace_unreadable:
                return None, self.samples[index % len(self.samples)][1], tuple(skipped)
            raise DataError(f"{self.root}: no image of the dataset can be decoded")
        if self.transform is not None:
            img = apply_seeded(self.transform, img, None if epoch is None else self._seed_for(epoch, index))
        return img, label, tuple(skipped)


class ImageListDataset(Dataset):
    """The images under a folder (recursive, or flat) for prediction: ``dataset[i]`` is
    ``(image_tensor or None, path, skipped)``; an unreadable or oversized image gives ``None`` and is listed in
    ``skipped`` (:func:`collate_predict` drops it)."""

    def __init__(
        self,
        root: Union[str, Path],
        transform: Any = None,
        max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.root = Path(root).expanduser()
        self.files = list_images(self.root)
        self.transform = transform
        self.max_image_pixels = max_image_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[Optional[torch.Tensor], str, Tuple[str, ...]]:
        path = self.files[int(index)]
        try:
            img = decode_rgb(path, self.max_image_pixels)
        except DECODE_ERRORS as e:
            return None, path, (f"{path}: {type(e).__name__}: {e}",)
        return (self.transform(img) if self.transform is not None else img), path, ()


class ResumableSampler(DistributedSampler):
    """The training order of an image folder: this process's :class:`~shufflenet.data.stream.SampleStream`, as
    ``(epoch, index)`` keys, ``samples_per_epoch`` of them a pass, from :attr:`position` on.

    A subclass of ``DistributedSampler``, so Lightning keeps it under DDP instead of replacing it. The stream's
    epoch (which permutation, which augmentation seeds) is a function of the position, not of Lightning's epoch
    counter; a pass that starts mid-epoch (a resumed run) ends where the uninterrupted pass would have ended.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        samples_per_epoch: Optional[int] = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.stream = SampleStream(len(dataset), seed, rank, num_replicas)
        self.samples_per_epoch = int(samples_per_epoch or self.num_samples)
        #: Local stream position of the next pass's first sample.
        self.position = 0

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self) -> Iterator[Tuple[int, int]]:  # type: ignore[override]
        start = self.position
        end = (start // self.samples_per_epoch + 1) * self.samples_per_epoch
        self.position = end
        return ((epoch, index) for _, epoch, index in self.stream.samples(iter(range(start, end))))


class StreamPosition:
    """The stateful-loader protocol of a training loader over a :class:`ResumableSampler` (``self.sampler``).

    Each training batch carries the stream position after it as a last element; the DataModule notes the one of
    the batch being trained (:meth:`note_state`), and :meth:`state_dict`, which Lightning saves with every
    checkpoint, is that position (not the one after the batch Lightning has prefetched). Lightning gives it back
    to a new loader's :meth:`load_state_dict` before the first batch of a resumed run.
    """

    sampler: ResumableSampler
    batch_size: int
    _noted: Optional[Dict[str, Any]] = None

    def _positioned(self, iterate: Any) -> Iterator[Any]:
        """``iterate()``'s batches, each with the position after it (read before ``iterate`` takes the sampler's
        keys: a DataLoader with workers takes them as its iterator is made)."""
        position = self.sampler.position
        for batch in iterate():
            position += self.batch_size
            yield (*batch, {"position": position})

    def note_state(self, state: Dict[str, Any]) -> None:
        self._noted = dict(state)

    def state_dict(self) -> Dict[str, Any]:
        s = self.sampler
        position = self._noted["position"] if self._noted is not None else s.position
        return {"position": position, "samples_per_epoch": s.samples_per_epoch, "world_size": s.num_replicas}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        s = self.sampler
        if (state.get("samples_per_epoch"), state.get("world_size")) != (s.samples_per_epoch, s.num_replicas):
            log.warning(
                "the checkpoint was written with %s samples an epoch in each of %s processes, this run has %d in "
                "each of %d: the data order after resuming differs from an uninterrupted run",
                state.get("samples_per_epoch"),
                state.get("world_size"),
                s.samples_per_epoch,
                s.num_replicas,
            )
        s.position = int(state["position"])
        self._noted = None


class _TrainLoader(StreamPosition, DataLoader):
    """The folder path's training ``DataLoader``, a stateful loader (:class:`StreamPosition`)."""

    def __iter__(self) -> Iterator[Any]:
        return self._positioned(super().__iter__)


class ImageFolderDataModule(pl.LightningDataModule):
    """ImageNet-layout data for :class:`~shufflenet.classification.module.ImageClassifier`.

    Args:
        root: folder with ``train/<class>/*`` and ``val/<class>/*`` (or ``test/``). ``None``: the embedded
            demo dataset (generated on first use, see :mod:`shufflenet.classification.demo`).
        batch_size: per process (Lightning's convention); the global batch is
            ``batch_size * devices * num_nodes * accumulate_grad_batches``.
        num_workers: DataLoader worker processes per device (capped at the CPU cores this process may use).
        image_size: training crop and evaluation crop (224 in the paper).
        resize_size: evaluation resize of the short side before the center crop (256 in the paper).
        crop_scale: area range of RandomResizedCrop (see ``DEFAULT_CROP_SCALE``).
        hflip: probability of a horizontal flip.
        seed: seed of the epoch permutations and of the per-sample augmentation.
        persistent_workers, pin_memory: DataLoader options.
        max_image_pixels: images with more pixels (read from the file header, before decoding) are skipped
            and counted like unreadable ones (default 100 million; see ``DEFAULT_MAX_IMAGE_PIXELS``).
        backend: ``tensor`` (torchvision.io + transforms.v2 on uint8 tensors, PIL's decoder for what
            torchvision.io does not decode; the default) or ``dali`` (NVIDIA DALI; the ``dali`` extra).
        shards: a folder or object-store URL (``s3://bucket/prefix``, ``gs://``, ``azure://``) written by
            ``shufflenet-shards``: training and validation stream from its ``train/`` and ``val/`` shards
            instead of ``root`` (split across ranks and nodes; resumes mid-epoch exactly).
        predict_root: a folder of images (searched recursively) or one image, for ``predict``: batches of
            ``(images, paths)`` with the evaluation transform; unreadable images are dropped and listed in
            :attr:`skipped`.
    """

    def __init__(
        self,
        root: Optional[str] = None,
        batch_size: int = 128,
        num_workers: int = 8,
        image_size: int = 224,
        resize_size: int = 256,
        crop_scale: Tuple[float, float] = DEFAULT_CROP_SCALE,
        hflip: float = 0.5,
        seed: int = 0,
        persistent_workers: bool = True,
        pin_memory: bool = True,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        backend: str = "tensor",
        shards: Optional[str] = None,
        predict_root: Optional[str] = None,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise DataError(f"data.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "dali":
            from .data_dali import require_dali

            require_dali()
        if shards is not None and backend == "dali":
            raise DataError("data.shards works with data.backend tensor, not dali")
        if max_image_pixels < 1:
            raise DataError(f"data.max_image_pixels must be >= 1, got {max_image_pixels}")
        if batch_size < 1:
            raise DataError(f"data.batch_size must be >= 1, got {batch_size}")
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise DataError(f"data.crop_scale must satisfy 0 < min <= max <= 1, got {list(crop_scale)}")
        if image_size > resize_size:
            raise DataError(f"data.image_size ({image_size}) must not exceed data.resize_size ({resize_size})")
        self.save_hyperparameters()
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._classes: Optional[List[str]] = None
        self.train_set: Optional[Any] = None
        self.val_set: Optional[Any] = None
        self.predict_set: Optional[ImageListDataset] = None
        self._train_loader: Optional[Any] = None
        self.skipped: Dict[str, str] = {}

    # --- layout --------------------------------------------------------------------------------------
    def resolved_root(self) -> Union[Path, str]:
        """The data folder (the demo dataset's when ``root`` is unset), or ``data.shards`` when set."""
        if self.hparams.shards is not None:
            return self.hparams.shards
        if self.root is None:
            from .demo import ensure_demo_dataset

            return ensure_demo_dataset()
        return Path(self.root).expanduser()

    @property
    def classes(self) -> List[str]:
        if self._classes is None and self.hparams.shards is not None:
            from .shards import read_classes

            self._classes = read_classes(self.hparams.shards)
        if self._classes is None:
            train, _ = find_split_dirs(self.resolved_root())
            self._classes = sorted(e.name for e in os.scandir(train) if e.is_dir() and not e.name.startswith("."))
            if not self._classes:
                _scan(train)  # raises the layout message
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def setup(self, stage: Optional[str] = None) -> None:
        hp = self.hparams
        if stage == "predict":
            if hp.predict_root is None:
                raise DataError("data.predict_root is not set: give a folder of images (or one image) to predict")
            if self.predict_set is None:
                self.predict_set = ImageListDataset(
                    hp.predict_root,
                    eval_transform(hp.image_size, hp.resize_size),
                    max_image_pixels=hp.max_image_pixels,
                )
            return
        if hp.shards is not None:
            from .shards import ShardDataset

            if stage in (None, "fit") and self.train_set is None:
                self.train_set = ShardDataset.open(
                    hp.shards,
                    "train",
                    train_transform(hp.image_size, hp.crop_scale, hp.hflip),
                    seed=hp.seed,
                    shuffle=True,
                    max_image_pixels=hp.max_image_pixels,
                )
            if self.val_set is None:
                self.val_set = ShardDataset.open(
                    hp.shards,
                    "val",
                    eval_transform(hp.image_size, hp.resize_size),
                    seed=hp.seed,
                    shuffle=False,
                    max_image_pixels=hp.max_image_pixels,
                )
            return
        train_dir, val_dir = find_split_dirs(self.resolved_root())
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = ImageFolderDataset(
                train_dir,
                train_transform(hp.image_size, hp.crop_scale, hp.hflip),
                seed=hp.seed,
                max_image_pixels=hp.max_image_pixels,
            )
            self._classes = self.train_set.classes
        if self.val_set is None:
            self.val_set = ImageFolderDataset(
                val_dir,
                eval_transform(hp.image_size, hp.resize_size),
                classes=self.classes,
                max_image_pixels=hp.max_image_pixels,
                replace_unreadable=False,
            )

    # --- loaders -------------------------------------------------------------------------------------
    def _loader(
        self,
        dataset: Dataset,
        sampler: Any = None,
        shuffle: bool = False,
        drop_last: bool = False,
        collate_fn=None,
        loader_class: Any = DataLoader,
    ) -> DataLoader:
        workers = min(int(self.num_workers), available_cpus())
        if workers < self.num_workers and not getattr(self, "_capped_logged", False):
            log.info("data.num_workers=%d capped at %d (the CPU cores available)", self.num_workers, workers)
            self._capped_logged = True
        return loader_class(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=shuffle if sampler is None else None,
            drop_last=drop_last,
            num_workers=workers,
            collate_fn=collate_fn or collate,
            worker_init_fn=ignore_stop_signals if workers > 0 else None,
            persistent_workers=bool(self.hparams.persistent_workers and workers > 0),
            pin_memory=bool(self.hparams.pin_memory and torch.cuda.is_available()),
        )

    def _workers(self) -> int:
        return min(int(self.num_workers), available_cpus())

    def train_dataloader(self) -> Any:
        """The training loader: a stateful loader (``state_dict`` / ``load_state_dict``) whose state, saved by
        Lightning with each checkpoint, is the data stream's position after the last trained batch; a run resumed
        from the checkpoint continues the stream there (see :mod:`shufflenet.data.stream`)."""
        assert self.train_set is not None, "call setup('fit') first"
        world, rank = 1, 0
        if self.trainer is not None:
            world, rank = self.trainer.world_size, self.trainer.global_rank
        if self.hparams.shards is not None:
            from .shards import shard_loader

            self._train_loader = shard_loader(self, self.train_set, self.batch_size, self._workers(), world, train=True)
            return self._train_loader
        if len(self.train_set) < self.batch_size * world:
            raise DataError(
                f"{self.train_set.root} has {len(self.train_set)} images, fewer than one global batch "
                f"({self.batch_size} x {world} processes); lower data.batch_size"
            )
        sampler = ResumableSampler(
            self.train_set,
            num_replicas=world,
            rank=rank,
            seed=self.hparams.seed,
            samples_per_epoch=self.batches_per_epoch() * self.batch_size,
        )
        if self.hparams.backend == "dali":
            from .data_dali import DaliLoader

            class _DaliTrainLoader(StreamPosition, DaliLoader):
                def __iter__(self) -> Iterator[Any]:
                    return self._positioned(super().__iter__)

            self._train_loader = _DaliTrainLoader.for_training(self, self.train_set, sampler)
            self._train_loader.sampler = sampler
        else:
            self._train_loader = self._loader(
                self.train_set, sampler=sampler, drop_last=True, loader_class=_TrainLoader
            )
        return self._train_loader

    def batches_per_epoch(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.hparams.shards is not None:
            from .shards import batches_per_epoch

            return batches_per_epoch(self.train_set, self.batch_size, self._workers(), world)
        return len(self.train_set) // world // self.batch_size

    def val_dataloader(self) -> Any:
        assert self.val_set is not None, "call setup() first"
        if self.hparams.shards is not None:
            from .shards import shard_loader

            world = self.trainer.world_size if self.trainer is not None else 1
            return shard_loader(self, self.val_set, self.batch_size, self._workers(), world, train=False)
        if self.hparams.backend == "dali":
            from .data_dali import DaliLoader

            return DaliLoader.for_evaluation(self, self.val_set)
        return self._loader(self.val_set)

    def test_dataloader(self) -> Any:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Batches of ``(images, paths)`` over :attr:`predict_set` (``data.predict_root``), evaluation transform,
        in the sorted order of the paths; unreadable images are dropped and counted in :attr:`skipped`."""
        if self.predict_set is None:
            self.setup("predict")
        return self._loader(self.predict_set, collate_fn=collate_predict)

    # --- per-batch bookkeeping -------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``(images, targets, skipped)`` -> ``(images, targets)`` (``(images, paths)`` in prediction); the
        skipped files are warned about once each and kept in :attr:`skipped` (path -> reason)."""
        images, targets, skipped = batch[:3]
        if len(batch) > 3 and self._train_loader is not None:  # a training batch: the stream position after it
            self._train_loader.note_state(batch[3])
        training = self.trainer is not None and self.trainer.training
        for entry in skipped:
            path, _, reason = entry.partition(": ")
            if path not in self.skipped:
                self.skipped[path] = reason
                instead = "; using the next image instead" if training else ""
                log.warning("skipping unreadable image %s (%s)%s", path, reason, instead)
        return images, targets

    # --- state saved with each checkpoint ------------------------------------------------------------------------
    # (the data position is the training loader's own state, which Lightning saves and restores itself)
    def state_dict(self) -> Dict[str, Any]:
        return {"skipped": dict(self.skipped)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.skipped.update(state_dict.get("skipped", {}))
