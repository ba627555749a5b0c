"""Image files of the classification data: the ImageNet folder layout, decoding to RGB, the per-sample seeding.

The primitives every input path shares (folders, prediction folders, shards, DALI): :func:`find_split_dirs`
(``root/train/<class>``, ``root/val/<class>``), :func:`decode_rgb` (uint8 tensor; torchvision.io for JPEGs, PIL
for the rest) and :func:`load_rgb` (PIL), the pixel limit checked from the header before decoding, and the batch
collation that drops or lists unreadable images (a sample's augmentation seed is
:func:`shufflenet.data.stream.augmentation_seed`).
:mod:`shufflenet.classification.data` builds the datasets and the DataModule on them.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from ..paths import IMAGE_SUFFIXES, image_files
from .errors import DataError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DECODE_ERRORS",
    "ImageTooLargeError",
    "jpeg_frame",
    "decode_rgb",
    "load_rgb",
    "find_split_dirs",
    "list_images",
    "apply_seeded",
    "collate",
    "collate_predict",
    "ignore_stop_signals",
]


#: Images with more pixels are skipped before decoding (``data.max_image_pixels``). 100 M pixels is a
#: 10000 x 10000 photo, ~300 MB decoded as RGB; ImageNet's largest image has ~ 30 M. PIL's own
#: decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS`` x 2, ~179 M) also applies: such files are skipped too.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


#: What a failed decode raises: PIL (OSError, UnidentifiedImageError, SyntaxError, ValueError) and
#: torchvision.io (RuntimeError).
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, RuntimeError)


class ImageTooLargeError(ValueError):
    """An image whose header declares more pixels than the limit (it is skipped, never decoded)."""


def _open_checked(source: Any, max_pixels: Optional[int]) -> Image.Image:
    """``Image.open`` (header only) with the pixel limit and PIL's bomb limit as :class:`ImageTooLargeError`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
        try:
            im = Image.open(source)
        except Image.DecompressionBombError as e:
            raise ImageTooLargeError(str(e)) from None
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise ImageTooLargeError(f"{w}x{h} = {w * h} pixels, more than data.max_image_pixels={max_pixels}")
    return im


def _pil_to_rgb(im: Image.Image) -> Image.Image:
    """Fully decode an opened image and convert it to RGB (16-bit scaled to 8 bits)."""
    im.load()  # force the full decode here: a truncated file fails now, not inside a transform
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.int64)
        top = 65535 if im.mode.startswith("I;16") or arr.max() > 255 else 255
        arr = np.clip(arr * 255 // max(top, 1), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "RGB":
        return im.copy()
    return im.convert("RGB")


#: Start-of-frame markers of the JPEG processes libjpeg decodes (baseline, extended, progressive, lossless; Huffman
#: or arithmetic); C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_frame(buf: Union[bytes, bytearray, memoryview]) -> Optional[Tuple[int, int, int, int]]:
    """``(height, width, components, bits)`` from a JPEG's start-of-frame segment, ``None`` if ``buf`` is not a
    JPEG whose frame header can be found (the caller then asks PIL). Reads only the marker segments' headers."""
    n = len(buf)
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 10 > n:
                return None
            bits, h, w, comps = buf[i + 4], (buf[i + 5] << 8) | buf[i + 6], (buf[i + 7] << 8) | buf[i + 8], buf[i + 9]
            return h, w, comps, bits
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame
            return None
        i += 2 + ((buf[i + 2] << 8) | buf[i + 3])
    return None


def decode_rgb(path: Union[str, Path, bytes], max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Decode an image file (a path, or its bytes) to an RGB ``uint8`` tensor of shape ``(3, H, W)``.

    The file is read once. An 8-bit grayscale or YCbCr/RGB JPEG (the frame header gives its size before any pixel
    is decoded: the pixel limit and PIL's bomb limit are checked first) is decoded by
    ``torchvision.io.decode_jpeg`` (libjpeg-turbo); anything else (PNG, CMYK JPEG, 16-bit, palette, ...) by PIL,
    converted as :func:`load_rgb` does. Raises what :func:`load_rgb` raises (``OSError`` for a corrupt JPEG).
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        data = bytearray(path)
    else:
        with open(path, "rb") as f:
            data = bytearray(os.fstat(f.fileno()).st_size)
            got = f.readinto(data)
            if got != len(data):
                data = data[:got]
    frame = jpeg_frame(data)
    if frame is not None and frame[2] in (1, 3) and frame[3] == 8 and frame[0] > 0:
        h, w = frame[0], frame[1]
        bomb = Image.MAX_IMAGE_PIXELS
        if (max_pixels is not None and w * h > max_pixels) or (bomb and w * h > 2 * bomb):
            with _open_checked(io.BytesIO(data), max_pixels):  # the same error (and message) as the PIL path
                pass
        with warnings.catch_warnings():
            # libjpeg's warnings ("premature end of data segment") are errors here: PIL refuses those files too
            warnings.simplefilter("error")
            try:
                return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
            except (UserWarning, RuntimeError) as e:  # "decode_jpeg, <source file>:<line>, <reason>"
                raise OSError(f"corrupt JPEG: {str(e).rsplit(', ', 1)[-1]}") from None
    with _open_checked(io.BytesIO(data), max_pixels) as im:
        rgb = _pil_to_rgb(im)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


def load_rgb(path: Union[str, Path], max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``path`` fully and return an RGB image (grayscale/palette/RGBA/CMYK/16-bit converted).

    Raises ``OSError``/``UnidentifiedImageError``/``ValueError`` for a file PIL cannot decode, and
    :class:`ImageTooLargeError` (a ``ValueError``) for an image of more than ``max_pixels`` pixels, read from
    the header before any pixel is decoded (``None``: no limit of ours; PIL's bomb limit still applies).
    """
    with _open_checked(path, max_pixels) as im:
        return _pil_to_rgb(im)


def find_split_dirs(root: Union[str, Path]) -> Tuple[Path, Path]:
    """``(train_dir, val_dir)`` of an ImageNet-layout root, or a :class:`DataError` saying what is wrong."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder (expected ImageNet layout: train/<class>/*, val/<class>/*)")
    train = root / "train"
    val = root / "val" if (root / "val").is_dir() else root / "test"
    missing = [p.name + "/" for p in (train, val) if not p.is_dir()]
    missing = ["val/" if m == "test/" else m for m in missing]
    if missing:
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:8]
        raise DataError(
            f"data root {root} is not in ImageNet layout: missing {' and '.join(missing)} (expected "
            f"train/<class>/*.JPEG and val/<class>/*.JPEG, or test/ instead of val/); found {found or 'nothing'}"
        )
    return train, val


def _scan(split_dir: Path) -> Tuple[List[str], List[Tuple[str, int]]]:
    """Classes (sorted subfolder names) and ``(path, label)`` samples of one split folder."""
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = [e.name for e in os.scandir(split_dir) if e.is_file()][:3]
        hint = f" (it holds files directly, e.g. {loose}; put each class in its own subfolder)" if loose else ""
        raise DataError(f"{split_dir} has no class subfolders{hint}: expected {split_dir}/<class>/<image>")
    samples: List[Tuple[str, int]] = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        files = [str(f) for f in image_files(folder)]
        if not files:
            raise DataError(
                f"class folder {folder} has no images (looked for {', '.join(IMAGE_SUFFIXES)}); "
                f"remove the folder or add images"
            )
        samples.extend((f, label) for f in files)
    return classes, samples


def apply_seeded(transform: Any, img: Any, seed: Optional[int]) -> Any:
    """``transform(img)``, with torch's global generator seeded by ``seed`` (and restored after) unless ``None``."""
    if seed is None:
        return transform(img)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(img)


def list_images(root: Union[str, Path]) -> List[str]:
    """The image files under ``root`` (:func:`shufflenet.paths.image_files`' rule), or ``[root]`` for one image."""
    root = Path(root).expanduser()
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        raise DataError(f"data.predict_root {root} does not exist (expected a folder of images or one image file)")
    files = [str(f) for f in image_files(root)]
    if not files:
        raise DataError(f"data.predict_root {root} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def collate_predict(
    batch: Sequence[Tuple[Optional[torch.Tensor], str, Tuple[str, ...]]],
) -> Tuple[torch.Tensor, List[str], List[str]]:
    """``(images, paths, skipped)``; unreadable images are dropped (their paths are in ``skipped``)."""
    kept = [b for b in batch if b[0] is not None]
    skipped = [s for b in batch for s in b[2]]
    images = torch.stack([b[0] for b in kept]) if kept else torch.empty(0)
    return images, [b[1] for b in kept], skipped


def collate(
    batch: Sequence[Tuple[Optional[torch.Tensor], int, Tuple[str, ...]]],
) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Stack a batch; samples without an image (skipped in evaluation) are dropped."""
    kept = [b for b in batch if b[0] is not None]
    skipped = [s for b in batch for s in b[2]]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([b[0] for b in kept])
    targets = torch.tensor([b[1] for b in kept], dtype=torch.long)
    return images, targets, skipped


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGTERM / SIGINT / SIGUSR1.

    SLURM signals every process of a job and Ctrl-C the whole process group; a worker that died of the signal
    would make the main process fail at once, before it can save the current step. The main process decides
    when to stop (:class:`~shufflenet.classification.callbacks.StopOnSignal`); its workers end with it.
    """
    import signal

    for name in ("SIGTERM", "SIGINT", "SIGUSR1"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)
