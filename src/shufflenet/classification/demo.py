"""The embedded demo dataset: 10 classes of rendered shapes and textures, generated on first use.

No dataset can be downloaded here, so ``python classification/train.py`` trains on images drawn with
PIL. Each class is a shape or a texture (circle, ring, square, triangle, star, cross, hexagon, stripes,
checkerboard, dots); every image varies the size, position, rotation and colour of the figure, the
background colour, and adds pixel noise and a distractor line, so the classes have to be learned (a
linear model on pixels does not solve it; the tiny ShuffleNet 0.25x of ``configs/classification/demo.yaml``
reaches ~40 % top-1 (4x chance; top-5 ~97 %) after 500 steps, about two minutes on two CPU cores).

The images are written once as PNG files in the ImageNet/ImageFolder layout (``train/<class>/*.png``,
``val/<class>/*.png``) under ``$SHUFFLENET_CACHE/demo_shapes_v2`` (default ``~/.cache/shufflenet``, see
:func:`shufflenet.paths.cache_dir`), so
training runs through the same data pipeline as ImageNet. Generation is deterministic (a fixed seed per
image), takes a few seconds, and is atomic: the folder is built under a temporary name and renamed, so an
interrupted generation never leaves a half-filled dataset behind.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..paths import cache_dir
from .errors import DataError

__all__ = ["DEMO_CLASSES", "demo_root", "ensure_demo_dataset", "render", "cache_dir"]

NAME = "demo_shapes_v2"
IMAGE_SIZE = 48
TRAIN_PER_CLASS = 200
VAL_PER_CLASS = 50
DEMO_CLASSES = (
    "circle",
    "ring",
    "square",
    "triangle",
    "star",
    "cross",
    "hexagon",
    "stripes",
    "checkerboard",
    "dots",
)


def demo_root() -> Path:
    """``<cache>/demo_shapes_v2`` (:func:`shufflenet.paths.cache_dir`: ``$SHUFFLENET_CACHE``, else the XDG cache)."""
    return cache_dir(NAME)


Color = Tuple[int, int, int]


def _color(rng: random.Random) -> Color:
    return tuple(rng.randint(0, 255) for _ in range(3))  # type: ignore[return-value]


def _contrasting(rng: random.Random, bg: Color) -> Color:
    while True:
        c = _color(rng)
        if sum(abs(a - b) for a, b in zip(c, bg)) > 180:
            return c


def _polygon(cx: float, cy: float, r: float, n: int, angle: float, inner: Optional[float] = None):
    pts = []
    steps = n * 2 if inner else n
    for k in range(steps):
        rad = (inner if inner and k % 2 else 1.0) * r
        a = angle + 2 * math.pi * k / steps
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _texture_mask(size: int, kind: str, rng: random.Random) -> Image.Image:
    """A full-image texture as an L mask (255 = foreground), rotated by a random angle."""
    big = size * 2
    mask = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(mask)
    period = rng.uniform(5, 10)
    if kind == "stripes":
        width = period * rng.uniform(0.35, 0.6)
        y = rng.uniform(0, period)
        while y < big:
            d.rectangle([0, y, big, y + width], fill=255)
            y += period
    elif kind == "checkerboard":
        n = int(big / period) + 1
        for i in range(n):
            for j in range(n):
                if (i + j) % 2 == 0:
                    d.rectangle([i * period, j * period, (i + 1) * period, (j + 1) * period], fill=255)
    else:  # dots
        r = rng.uniform(1.2, 2.5)
        for _ in range(int(big * big / (period * period) * 0.8)):
            x, y = rng.uniform(0, big), rng.uniform(0, big)
            d.ellipse([x - r, y - r, x + r, y + r], fill=255)
    mask = mask.rotate(rng.uniform(0, 180), resample=Image.BILINEAR)
    off = size // 2
    return mask.crop((off, off, off + size, off + size))


def render(label: int, seed: int, size: int = IMAGE_SIZE) -> Image.Image:
    """One RGB demo image of class ``label`` (index into :data:`DEMO_CLASSES`); same seed, same image."""
    rng = random.Random(seed)
    kind = DEMO_CLASSES[label]
    bg = _color(rng)
    fg = _contrasting(rng, bg)
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    if kind in ("stripes", "checkerboard", "dots"):
        # A texture patch covering a random rectangle of 55-100 % of the image.
        w, h = (int(size * rng.uniform(0.55, 1.0)) for _ in range(2))
        x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
        mask = Image.new("L", (size, size), 0)
        mask.paste(_texture_mask(size, kind, rng).crop((0, 0, w, h)), (x0, y0))
        img.paste(Image.new("RGB", (size, size), fg), (0, 0), mask)
    else:
        r = size * rng.uniform(0.18, 0.34)
        cx, cy = (rng.uniform(r + 1, size - r - 1) for _ in range(2))
        angle = rng.uniform(0, 2 * math.pi)
        if kind == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
        elif kind == "ring":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=max(2, int(r * rng.uniform(0.2, 0.35))))
        elif kind == "square":
            d.polygon(_polygon(cx, cy, r * 1.2, 4, angle), fill=fg)
        elif kind == "triangle":
            d.polygon(_polygon(cx, cy, r * 1.2, 3, angle), fill=fg)
        elif kind == "star":
            d.polygon(_polygon(cx, cy, r * 1.3, 5, angle, inner=0.45), fill=fg)
        elif kind == "hexagon":
            d.polygon(_polygon(cx, cy, r * 1.1, 6, angle), fill=fg)
        elif kind == "cross":
            t = r * rng.uniform(0.25, 0.4)
            arm = [(-r, -t), (r, -t), (r, t), (-r, t)]
            for rot in (angle, angle + math.pi / 2):
                c, s = math.cos(rot), math.sin(rot)
                d.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in arm], fill=fg)
    # Distractor: a thin line in a third colour, then blur and pixel noise.
    d.line([tuple(rng.uniform(0, size) for _ in range(2)) for _ in range(2)], fill=_color(rng), width=1)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    sigma = rng.uniform(4, 16)
    noise = np.random.default_rng(seed).normal(0.0, sigma, (size, size, 1))
    arr = np.asarray(img, dtype=np.float32) + noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _generate(
    root: Path, train_per_class: int, val_per_class: int, size: int, progress: Optional[Callable[[str], None]] = None
) -> None:
    for split, count, offset in (("train", train_per_class, 0), ("val", val_per_class, 1_000_000)):
        for label, name in enumerate(DEMO_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed = offset + label * 100_000 + i
                render(label, seed, size).save(folder / f"{name}_{i:04d}.png")
        if progress:
            progress(f"  {split}: {count * len(DEMO_CLASSES)} images")


def ensure_demo_dataset(
    root: Optional[Path] = None,
    train_per_class: int = TRAIN_PER_CLASS,
    val_per_class: int = VAL_PER_CLASS,
    size: int = IMAGE_SIZE,
    progress: Optional[Callable[[str], None]] = print,
) -> Path:
    """Generate the demo dataset into ``root`` (default :func:`demo_root`) unless it is already there."""
    root = Path(root) if root is not None else demo_root()
    marker = root / "DONE"
    if marker.is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"generating the demo dataset (10 classes of shapes/textures) into {root} ...")
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _generate(tmp, train_per_class, val_per_class, size, progress)
        (tmp / "DONE").write_text(f"{NAME} {train_per_class} {val_per_class} {size}\n")
        if root.exists():  # a half-built folder from an older layout: replace it
            shutil.rmtree(root)
        os.replace(tmp, root)
    except FileExistsError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):  # a full disk, a quota: one error line, and nothing half-generated is left
            raise DataError(
                f"cannot generate the demo dataset in {root}: {e.strerror or e}; nothing was kept"
            ) from None
        raise
    return root
