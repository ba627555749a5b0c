"""Real images for export verification, int8 calibration and accuracy checks.

The project's shared data (``../shared/data`` beside the repository: a CIFAR-10 ImageFolder slice and
100 COCO photos) is found automatically from a source checkout; ``SHUFFLENET_DATA`` or an explicit folder
overrides it. Images are resized (bilinear, no crop) to the exported size and normalized like training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .source import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["shared_data_dir", "default_image_dir", "list_images", "load_images", "parse_size", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def shared_data_dir() -> Optional[Path]:
    """``$SHUFFLENET_DATA``, else ``<repo>/../shared/data`` for a source checkout, else ``None``."""
    env = os.environ.get("SHUFFLENET_DATA")
    if env:
        return Path(env)
    cand = Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return cand if cand.is_dir() else None


def default_image_dir() -> Optional[Path]:
    """Real photos for verification: the COCO slice (natural images at ~640x480), else the CIFAR slice."""
    root = shared_data_dir()
    if root is None:
        return None
    for sub in ("tiny_coco/val2017", "tiny_coco/train2017", "cifar10/test"):
        if (root / sub).is_dir():
            return root / sub
    return None


def list_images(folder: os.PathLike, limit: Optional[int] = None) -> List[Path]:
    """Image files under ``folder`` (recursively, sorted, so runs are repeatable)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such image folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:limit] if limit else files


def load_images(
    files: Sequence[os.PathLike],
    size: Tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Stack ``files`` into a normalized ``(N, 3, H, W)`` float batch resized to ``size = (H, W)``."""
    from PIL import Image
    from torchvision.transforms.functional import normalize, pil_to_tensor, resize

    out = []
    for f in files:
        with Image.open(f) as im:
            t = pil_to_tensor(im.convert("RGB")).float() / 255.0
        t = resize(t, list(size), antialias=True)
        out.append(normalize(t, list(mean), list(std)))
    return torch.stack(out)


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
        raise ValueError(
            f"input size {text!r} is not valid: expected S or HxW with integers between 32 and 8192 "
            f"(e.g. 224 or 480x640)"
        )
    return vals[0], vals[1]
