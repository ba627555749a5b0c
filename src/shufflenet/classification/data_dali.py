"""``data.backend dali``: decode and augment with NVIDIA DALI (the ``dali`` extra: ``nvidia-dali-cuda130``).

On a machine with a GPU the JPEGs are decoded by nvJPEG (``fn.decoders.image_slice(device="mixed")``: the crop
is decoded, not the whole photo) and resized, flipped and normalized on the GPU, so the CPU cores only read files;
without one the same pipeline runs on DALI's CPU operators (which is how its results are tested).

What stays the project's: the data order (:class:`~.data.ResumableSampler`: DDP split, exact mid-epoch resume), the
crop box and flip of every sample (drawn from the per-sample seed by the same ``transforms.v2`` objects the
``tensor`` backend uses, then handed to DALI), and the checks before decoding (a file PIL cannot identify, or with
more than ``data.max_image_pixels`` pixels, is skipped and counted as on the other backends). A file whose header
is fine but whose body DALI cannot decode fails the batch with an error naming the batch's files.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torchvision.transforms import v2 as T

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..data.stream import augmentation_seed
from .errors import DataError
from .imagefiles import DECODE_ERRORS, _open_checked

__all__ = ["require_dali", "dali_available", "DaliLoader", "crop_params"]

INSTALL = "pip install 'shufflenet[dali]' (NVIDIA DALI, nvidia-dali-cuda130)"


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def require_dali() -> None:
    """Raise a one-line :class:`DataError` unless NVIDIA DALI can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise DataError(f"data.backend dali needs NVIDIA DALI, which cannot be imported ({e}): {INSTALL}") from None


def crop_params(transform: T.Compose, height: int, width: int, seed: int) -> Tuple[int, int, int, int, bool]:
    """``(top, left, crop_h, crop_w, flip)`` that ``transform`` (:func:`~.data.train_transform`) draws for an image of
    ``height x width`` seeded by ``seed``: the same numbers the ``tensor`` backend uses for that sample."""
    rrc = next(t for t in transform.transforms if isinstance(t, T.RandomResizedCrop))
    flip = next((t for t in transform.transforms if isinstance(t, T.RandomHorizontalFlip)), None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        p = rrc.make_params([torch.empty(1, 1, 1, dtype=torch.uint8).expand(3, height, width)])
        flipped = bool(flip is not None and torch.rand(1).item() < flip.p)  # RandomHorizontalFlip's draw
    return int(p["top"]), int(p["left"]), int(p["height"]), int(p["width"]), flipped


def eval_params(height: int, width: int, resize_size: int, crop: int) -> Tuple[int, int, int, int]:
    """``(top, left, resized_h, resized_w)`` of torchvision's ``Resize(resize_size)`` + ``CenterCrop(crop)``."""
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = resize_size, int(resize_size * long / short)
    rh, rw = (new_short, new_long) if height <= width else (new_long, new_short)
    return int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0)), rh, rw


def _read(path: str, max_pixels: Optional[int]) -> Tuple[np.ndarray, int, int]:
    with open(path, "rb") as f:
        data = f.read()
    import io

    with _open_checked(io.BytesIO(data), max_pixels) as im:
        w, h = im.size
    return np.frombuffer(data, dtype=np.uint8), h, w


class DaliLoader:
    """An iterable of ``(images, targets, skipped)`` batches decoded and augmented by a DALI pipeline."""

    def __init__(
        self,
        dataset: Any,
        keys: Any,
        batch_size: int,
        train: bool,
        image_size: int,
        resize_size: int,
        num_threads: int,
        drop_last: bool,
        device_id: Optional[int] = None,
    ) -> None:
        require_dali()
        self.dataset, self.keys, self.batch_size, self.train = dataset, keys, int(batch_size), bool(train)
        self.image_size, self.resize_size = int(image_size), int(resize_size)
        self.num_threads, self.drop_last, self.device_id = max(1, int(num_threads)), drop_last, device_id
        self._pipe = None

    # --- construction from the DataModule ----------------------------------------------------------------------
    @classmethod
    def for_training(cls, dm: Any, dataset: Any, sampler: Any) -> DaliLoader:
        hp = dm.hparams
        return cls(dataset, sampler, dm.batch_size, True, hp.image_size, hp.resize_size, dm._workers(), True, _device())

    @classmethod
    def for_evaluation(cls, dm: Any, dataset: Any) -> DaliLoader:
        hp = dm.hparams
        keys = range(len(dataset))
        return cls(dataset, keys, dm.batch_size, False, hp.image_size, hp.resize_size, dm._workers(), False, _device())

    def __len__(self) -> int:
        n = len(self.keys)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # --- the pipeline ------------------------------------------------------------------------------------------
    def _build(self) -> Any:
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def

        gpu = self.device_id is not None
        mean = [255 * m for m in IMAGENET_MEAN]
        std = [255 * s for s in IMAGENET_STD]
        size = self.image_size

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=self.device_id,
            prefetch_queue_depth=1,
            exec_dynamic=True,
        )
        def pipe():
            enc = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            if self.train:
                anchor = fn.external_source(name="anchor", dtype=types.FLOAT, ndim=1)  # (x, y)
                shape = fn.external_source(name="shape", dtype=types.FLOAT, ndim=1)  # (w, h)
                mirror = fn.external_source(name="mirror", dtype=types.INT32, ndim=0)
                img = fn.decoders.image_slice(
                    enc,
                    anchor,
                    shape,
                    device="mixed" if gpu else "cpu",
                    output_type=types.RGB,
                    axis_names="WH",
                    normalized_anchor=False,
                    normalized_shape=False,
                )
                img = fn.resize(img, resize_x=size, resize_y=size, interp_type=types.INTERP_LINEAR, antialias=True)
                out = fn.crop_mirror_normalize(
                    img, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std, mirror=mirror
                )
            else:
                # torchvision's Resize(resize_size) + CenterCrop(size) sizes, computed per image in Python
                resized = fn.external_source(name="resized", dtype=types.FLOAT, ndim=1)  # (h, w)
                anchor = fn.external_source(name="anchor", dtype=types.FLOAT, ndim=1)  # (x, y)
                img = fn.decoders.image(enc, device="mixed" if gpu else "cpu", output_type=types.RGB)
                img = fn.resize(img, size=resized, interp_type=types.INTERP_LINEAR, antialias=True)
                img = fn.slice(
                    img,
                    anchor,
                    np.array([size, size], np.float32),
                    axis_names="WH",
                    normalized_anchor=False,
                    normalized_shape=False,
                )
                out = fn.crop_mirror_normalize(img, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std)
            return out

        p = pipe()
        p.build()
        return p

    def _to_torch(self, out: Any) -> torch.Tensor:
        t = out.as_tensor()
        if self.device_id is None:
            return torch.from_numpy(np.array(t))
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dst = torch.empty(t.shape(), dtype=torch.float32, device=f"cuda:{self.device_id}")
        feed_ndarray(t, dst, cuda_stream=torch.cuda.current_stream(self.device_id))
        return dst

    def _run(self, encoded: List[np.ndarray], crops: List[Tuple[int, int, int, int, bool]]) -> torch.Tensor:
        if self._pipe is None:
            self._pipe = self._build()
        n = len(encoded)
        pad = self.batch_size - n  # DALI runs fixed-size batches here: the last evaluation batch is padded
        enc = encoded + [encoded[-1]] * pad
        self._pipe.feed_input("encoded", enc)
        crops = crops + [crops[-1]] * pad
        if self.train:
            self._pipe.feed_input("anchor", [np.array([c[1], c[0]], np.float32) for c in crops])
            self._pipe.feed_input("shape", [np.array([c[3], c[2]], np.float32) for c in crops])
            self._pipe.feed_input("mirror", [np.array(int(c[4]), np.int32) for c in crops])
        else:  # (top, left, resized_h, resized_w)
            self._pipe.feed_input("resized", [np.array([c[2], c[3]], np.float32) for c in crops])
            self._pipe.feed_input("anchor", [np.array([c[1], c[0]], np.float32) for c in crops])
        (out,) = self._pipe.run()
        return self._to_torch(out)[:n]

    # --- iteration ---------------------------------------------------------------------------------------------
    def _batches(self) -> Iterator[List[Any]]:
        batch: List[Any] = []
        for key in self.keys:
            batch.append(key)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, List[str]]]:
        ds = self.dataset
        tf = ds.transform
        for keys in self._batches():
            encoded, crops, labels, skipped, paths = [], [], [], [], []
            for key in keys:
                epoch, index = key if isinstance(key, tuple) else (None, int(key))
                for attempt in range(len(ds.samples) if self.train else 1):
                    path, label = ds.samples[(index + attempt) % len(ds.samples)]
                    try:
                        data, h, w = _read(path, ds.max_image_pixels)
                        break
                    except DECODE_ERRORS as e:
                        skipped.append(f"{path}: {type(e).__name__}: {e}")
                else:
                    if self.train:
                        raise DataError(f"{ds.root}: no image of the dataset can be decoded")
                    continue
                encoded.append(data)
                labels.append(label)
                paths.append(path)
                if self.train:
                    crops.append(crop_params(tf, h, w, augmentation_seed(ds.seed, epoch or 0, index)))
                else:
                    crops.append(eval_params(h, w, self.resize_size, self.image_size))
            if not encoded:
                yield torch.empty(0), torch.empty(0, dtype=torch.long), skipped
                continue
            try:
                images = self._run(encoded, crops)
            except RuntimeError as e:
                raise DataError(f"DALI could not decode a batch of {', '.join(paths[:4])}, ...: {e}") from None
            yield images, torch.tensor(labels, dtype=torch.long), skipped


def _device() -> Optional[int]:
    """The CUDA device of this process (DALI's ``device_id``), ``None`` without a GPU (DALI's CPU operators)."""
    if not torch.cuda.is_available():
        return None
    return int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
