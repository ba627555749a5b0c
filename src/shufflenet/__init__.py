"""ShuffleNet v1 (Zhang et al., 2017): one backbone for classification, detection and mobile export.

    >>> from shufflenet import shufflenet_v1, create_model, list_models
    >>> model = shufflenet_v1(groups=3, width_mult=1.0)          # torchvision-style builder
    >>> model = create_model("shufflenet_v1_x0_5_g3")             # by name (also timm.create_model)
    >>> model = shufflenet_v1(groups=3, weights="DEFAULT")        # mmpretrain's ImageNet weights, converted

Layers (each imports only from its own layer or a lower one; see README "Layout"):
the core ``constants``, ``paths``, ``errors``, ``fileio``; ``weights`` (the one reader/writer of weight
files, downloads); ``models`` (unit, network, baselines, registry, published weights); ``convert`` and
``complexity`` above the models; the integrations ``classification`` (Lightning), ``detection`` (detectron2) and
``mobile`` (export APIs). Importing the package registers the model names with timm.
"""

from .errors import ShuffleNetError
from .models import (
    ChannelShuffle,
    InvalidConfigError,
    ShuffleNet_V1_X1_0_G3_Weights,
    ShuffleNetV1,
    ShuffleUnit,
    SqueezeExcite,
    UnknownModelError,
    channel_shuffle,
    create_model,
    get_model_weights,
    get_spec,
    get_weight,
    list_models,
    shufflenet_v1,
    shufflenet_v1_name,
    stage_widths,
)
from .weights import WeightsError, WeightsFile, load_weights, read_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "ChannelShuffle",
    "InvalidConfigError",
    "ShuffleNetV1",
    "ShuffleNet_V1_X1_0_G3_Weights",
    "ShuffleUnit",
    "SqueezeExcite",
    "ShuffleNetError",
    "UnknownModelError",
    "WeightsError",
    "WeightsFile",
    "channel_shuffle",
    "create_model",
    "get_model_weights",
    "get_spec",
    "get_weight",
    "list_models",
    "load_weights",
    "read_weights",
    "save_weights",
    "shufflenet_v1",
    "shufflenet_v1_name",
    "stage_widths",
    "__version__",
]
