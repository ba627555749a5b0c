"""Real images for export verification, int8 calibration and accuracy checks.

The default everywhere is the package's own sample photos (:func:`shufflenet.paths.sample_images`: real COCO
photos shipped as package data), so verification on real pixels works on any machine; a folder given by the
user replaces them. Images are resized (bilinear, no crop) to the exported size and normalized like training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..paths import IMAGE_SUFFIXES, image_files, sample_images
from .source import MobileError

__all__ = ["resolve_images", "list_images", "load_images", "load_frames", "parse_size", "IMAGE_SUFFIXES"]


def list_images(folder: os.PathLike, limit: Optional[int] = None) -> List[Path]:
    """Image files under ``folder`` (:func:`shufflenet.paths.image_files`' rule: recursive, sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MobileError(f"{folder}: no such image folder")
    files = image_files(folder)
    return files[:limit] if limit else files


def resolve_images(spec: object = "auto", what: str = "--images") -> Optional[List[Path]]:
    """The real images a flag asks for: ``"auto"`` = the package's sample photos, ``"none"``/``None`` = none
    (random inputs only, said in the sidecar), else a folder that must hold images (an error otherwise:
    asking for real images never silently degrades to random ones)."""
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return None
    if isinstance(spec, str) and spec == "auto":
        return sample_images()
    files = list_images(Path(spec))
    if not files:
        raise MobileError(f"{what} {spec}: no images ({', '.join(IMAGE_SUFFIXES)}) in that folder")
    return files


def _read_rgb(f: os.PathLike, size: Tuple[int, int]) -> Tensor:
    """``3 x H x W`` float RGB in [0, 255] resized (bilinear, antialiased) to ``size``."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor, resize

    try:
        with Image.open(f) as im:
            t = pil_to_tensor(im.convert("RGB")).float()
    except OSError as e:
        raise MobileError(f"{f}: not a readable image ({e})") from None
    return resize(t, list(size), antialias=True)


def load_images(
    files: Sequence[os.PathLike],
    size: Tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Stack ``files`` into a normalized ``(N, 3, H, W)`` float batch resized to ``size = (H, W)``."""
    from torchvision.transforms.functional import normalize

    return torch.stack([normalize(_read_rgb(f, size) / 255.0, list(mean), list(std)) for f in files])


def load_frames(files: Sequence[os.PathLike], size: Tuple[int, int]) -> Tensor:
    """``files`` as camera frames: ``(N, H, W, 3)`` ``uint8`` RGB resized to ``size``."""
    return torch.stack([_read_rgb(f, size).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0) for f in files])


def parse_size(text: str) -> Tuple[int, int]:
    """``"224"`` -> (224, 224); ``"480x640"`` -> (480, 640) (height x width)."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 32 or max(vals) > 8192:
        raise MobileError(
            f"input size {text!r} is not valid: expected S or HxW with integers between 32 and 8192 "
            f"(e.g. 224 or 480x640)"
        )
    return vals[0], vals[1]
