"""Models: ShuffleNet v1 (the one backbone), the paper's comparison models, and the name registry."""

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from . import baselines  # noqa: E402,F401  registers the paper's comparison models (Tables 4-8)
from .names import parse_shufflenet_v1_name, shufflenet_v1_name
from .paper import PaperEntry, paper_entries
from .registry import (
    ModelSpec,
    UnknownModelError,
    create_model,
    get_spec,
    list_models,
    model_from_weights,
    paper_tables,
    register,
)
from .shufflenet import (
    PAPER_GROUPS,
    TABLE1_STAGE_WIDTHS,
    ChannelShuffle,
    InvalidConfigError,
    ShuffleNetV1,
    ShuffleUnit,
    SqueezeExcite,
    channel_shuffle,
    shuffle_permutation,
    shufflenet_v1,
    stage_widths,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PAPER_GROUPS",
    "TABLE1_STAGE_WIDTHS",
    "ChannelShuffle",
    "InvalidConfigError",
    "ModelSpec",
    "PaperEntry",
    "ShuffleNetV1",
    "ShuffleUnit",
    "SqueezeExcite",
    "UnknownModelError",
    "channel_shuffle",
    "create_model",
    "get_spec",
    "list_models",
    "model_from_weights",
    "paper_entries",
    "paper_tables",
    "register",
    "shuffle_permutation",
    "shufflenet_v1_name",
    "parse_shufflenet_v1_name",
    "shufflenet_v1",
    "stage_widths",
]
