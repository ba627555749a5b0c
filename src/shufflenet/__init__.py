"""ShuffleNet v1 (Zhang et al., 2017): one backbone for classification, detection and mobile export.

    >>> from shufflenet import shufflenet_v1, create_model, list_models
    >>> model = shufflenet_v1(groups=3, width_mult=1.0)          # torchvision-style builder
    >>> model = create_model("shufflenet_v1_x0_5_g3")             # by name (also timm.create_model)

Layers (each imports only from its own layer or a lower one; see README "Layout"):
the core ``constants``, ``paths``, ``errors``, ``fileio``; ``weights`` (the one reader/writer of weight
files); ``models`` (unit, network, baselines, registry); ``convert`` and ``complexity`` above the models;
the integrations ``classification`` (Lightning), ``detection`` (detectron2) and ``mobile`` (export APIs).
"""

from .errors import ShuffleNetError
from .models import (
    ChannelShuffle,
    InvalidConfigError,
    ShuffleNetV1,
    ShuffleUnit,
    SqueezeExcite,
    UnknownModelError,
    channel_shuffle,
    create_model,
    get_spec,
    list_models,
    shufflenet_v1,
    stage_widths,
)
from .weights import WeightsError, WeightsFile, load_weights, read_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "ChannelShuffle",
    "InvalidConfigError",
    "ShuffleNetV1",
    "ShuffleUnit",
    "SqueezeExcite",
    "ShuffleNetError",
    "UnknownModelError",
    "WeightsError",
    "WeightsFile",
    "channel_shuffle",
    "create_model",
    "get_spec",
    "list_models",
    "load_weights",
    "read_weights",
    "save_weights",
    "shufflenet_v1",
    "stage_widths",
    "__version__",
]
