"""Constants every layer shares (core: imports nothing of the project).

Like ``timm/data/constants.py``: the input normalization of every model in this project and the way a
width multiplier is written in a model name.
"""

from __future__ import annotations

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "width_tag"]

#: The input normalization of every model in this project (RGB in 0-1, then (x - mean) / std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def width_tag(width: float) -> str:
    """The width multiplier as written in model names: 0.5 -> '0_5', 1.0 -> '1_0', 0.25 -> '0_25'."""
    text = f"{width:.2f}".rstrip("0")
    text = text + "0" if text.endswith(".") else text
    return text.replace(".", "_")
