"""ImageNet classification with PyTorch Lightning: the paper's recipe around the package's one backbone.

    shufflenet-train                                     # demo: generated shapes, ~2 min on 2 CPU cores
    shufflenet-train --config shufflenet_v1_x1_0_g3 --data.root /data/imagenet \\
        --trainer.devices 8 --trainer.strategy ddp
    shufflenet-eval RUN_FOLDER                           # the run's own data and image size
    shufflenet-train predict --ckpt_path RUN/checkpoints/best.ckpt --data.predict_root PHOTOS

Imports Lightning, timm and torchmetrics; wraps models from :mod:`shufflenet.models` (never a copy).
See docs/classification.md.
"""

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .callbacks import (
    RecalibrateBN,
    RunSummary,
    StopOnNonFiniteLoss,
    StopOnSignal,
    ValidateFinalWeights,
    end_of_run_callbacks,
    recalibrate_bn,
)
from .data import (
    DEFAULT_CROP_SCALE,
    ImageFolderDataModule,
    ImageFolderDataset,
    ResumableSampler,
    eval_transform,
    train_transform,
)
from .errors import ClassificationError, DataError, TrainingInterrupted
from .imagefiles import DEFAULT_MAX_IMAGE_PIXELS, find_split_dirs, load_rgb
from .module import ImageClassifier

__all__ = [
    "DEFAULT_CROP_SCALE",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassificationError",
    "DataError",
    "RecalibrateBN",
    "RunSummary",
    "StopOnSignal",
    "StopOnNonFiniteLoss",
    "ValidateFinalWeights",
    "end_of_run_callbacks",
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
