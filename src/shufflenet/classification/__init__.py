"""ImageNet classification with PyTorch Lightning: the paper's recipe around the package's one backbone.

    python classification/train.py                       # demo: generated shapes, ~2 min on 2 CPU cores
    python classification/train.py --config configs/classification/shufflenet_v1_x1_0_g3.yaml \\
        --data.root /data/imagenet --trainer.devices 8 --trainer.strategy ddp
    python classification/evaluate.py --checkpoint RUN/checkpoints/best.ckpt --data.root /data/imagenet

Imports Lightning, timm and torchmetrics; wraps models from :mod:`shufflenet.models` (never a copy).
See docs/classification.md.
"""

from .callbacks import FinishTraining, RunSummary, StopOnSignal, recalibrate_bn
from .data import (
    DEFAULT_CROP_SCALE,
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataModule,
    ImageFolderDataset,
    ResumableSampler,
    eval_transform,
    find_split_dirs,
    load_rgb,
    train_transform,
)
from .errors import CheckpointMismatchError, ClassificationError, DataError, TrainingInterrupted
from .module import ImageClassifier

__all__ = [
    "DEFAULT_CROP_SCALE",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CheckpointMismatchError",
    "ClassificationError",
    "DataError",
    "FinishTraining",
    "RunSummary",
    "StopOnSignal",
    "TrainingInterrupted",
    "ImageClassifier",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "ResumableSampler",
    "eval_transform",
    "find_split_dirs",
    "load_rgb",
    "recalibrate_bn",
    "train_transform",
]
