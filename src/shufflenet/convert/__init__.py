"""Converters of public ShuffleNet v1 checkpoints (megvii ShuffleNet-Series, mmpretrain) into the package
weights file. They sit above the models (they build ``ShuffleNetV1``); nothing below imports them.

    python -m shufflenet.convert snetv1_group3_1.0x.pth.tar --out weights/megvii_g3_1.0x.pth
"""

from .checkpoints import (
    LAYOUTS,
    convert_checkpoint,
    convert_megvii,
    convert_mmpretrain,
    count_matrix,
    detect_layout,
    load_converted,
    match_shuffle,
    package_weights,
)

__all__ = [
    "LAYOUTS",
    "convert_checkpoint",
    "convert_megvii",
    "convert_mmpretrain",
    "count_matrix",
    "detect_layout",
    "load_converted",
    "match_shuffle",
    "package_weights",
]
