"""Public ImageNet weights, torchvision-style: one ``Weights`` enum per model that has them.

    >>> from shufflenet.models import ShuffleNet_V1_X1_0_G3_Weights, get_weight
    >>> w = ShuffleNet_V1_X1_0_G3_Weights.DEFAULT            # == .IMAGENET1K_MMPRETRAIN
    >>> w = get_weight("ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN")
    >>> model = shufflenet_v1(groups=3, weights=w)            # or weights="DEFAULT"
    >>> preprocess = w.transforms()                            # the source's own eval preprocessing
    >>> w.meta["categories"][0], w.meta["_metrics"]           # ('tench', {'ImageNet-1K': {...}})

A member has torchvision's fields (``url``, ``transforms``, ``meta``) and ``get_state_dict(progress=True)``:
the file is downloaded once into ``torch.hub.get_dir()/checkpoints`` with its hash checked
(:mod:`shufflenet.weights.download`; ``SHUFFLENET_WEIGHTS_MIRROR`` redirects it), converted to this project's
layout by the registered converter (exact: same logits as the source network) and the conversion cached
next to it. ``meta["_metrics"]`` are the source's published figures, not measured here (no ImageNet run is part
of this project); ``num_params`` and ``_ops`` (GFLOPs: conv + FC multiply-adds at 224x224, counted by
``shufflenet.complexity``) are measured and checked by the tests.

Only OpenMMLab mmpretrain publishes a ShuffleNet v1 at a stable URL (1x, g=3). megvii's ShuffleNet-Series
checkpoints sit behind share links; download them by hand and pass the file (``weights="snetv1_...pth.tar"``):
it is recognised, converted and cached the same way (docs/weights.md lists them).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Type, Union

from torchvision.models import ShuffleNet_V2_X1_0_Weights, Weights, WeightsEnum
from torchvision.transforms._presets import ImageClassification, InterpolationMode

from ..errors import ShuffleNetError
from ..weights.download import download_weights
from ..weights.io import WeightsFile, read_weights
from .names import parse_shufflenet_v1_name

__all__ = [
    "URI_SCHEME",
    "IMAGENET_CATEGORIES",
    "ShuffleNetWeights",
    "ShuffleNet_V1_X1_0_G3_Weights",
    "UnknownWeightsError",
    "get_weight",
    "get_model_weights",
    "list_pretrained",
    "weights_file",
    "resolve_weights_uri",
    "timm_tag",
]

#: The scheme of ``MODEL.WEIGHTS`` values that name public weights: ``shufflenet://<model>[/<WEIGHTS>]``.
URI_SCHEME = "shufflenet://"

#: The 1000 ImageNet-1k class names in the standard (sorted WordNet id) order, as torchvision ships them.
IMAGENET_CATEGORIES: List[str] = list(ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1.meta["categories"])


class UnknownWeightsError(ShuffleNetError, KeyError):
    """A weights name that is neither a file nor a published weights entry (the message lists them)."""


class ShuffleNetWeights(WeightsEnum):
    """torchvision's ``WeightsEnum`` whose ``get_state_dict`` downloads, converts and caches (see module)."""

    def weights_file(self, progress: bool = True) -> WeightsFile:
        """The converted weights (a :class:`~shufflenet.weights.WeightsFile`), downloaded first if needed."""
        return read_weights(download_weights(self.url, progress=progress))

    def get_state_dict(self, progress: bool = True, check_hash: bool = True) -> Dict[str, Any]:
        """The state dict of this project's model (converted from the published file)."""
        return self.weights_file(progress=progress).state_dict


_MMPRETRAIN_URL = (
    "https://download.openmmlab.com/mmclassification/v0/shufflenet_v1/"
    "shufflenet_v1_batch1024_imagenet_20200804-5d6cec73.pth"
)


class ShuffleNet_V1_X1_0_G3_Weights(ShuffleNetWeights):
    IMAGENET1K_MMPRETRAIN = Weights(
        url=_MMPRETRAIN_URL,
        # mmpretrain's test pipeline: ResizeEdge(256, short edge, pillow bilinear), CenterCrop(224), RGB,
        # mean/std (123.675, 116.28, 103.53) / (58.395, 57.12, 57.375) on 0-255 = ImageNet mean/std on 0-1.
        transforms=partial(
            ImageClassification, crop_size=224, resize_size=256, interpolation=InterpolationMode.BILINEAR
        ),
        meta={
            "categories": IMAGENET_CATEGORIES,
            "min_size": (1, 1),
            "num_params": 1865728,
            "_ops": 0.137,
            "_metrics": {"ImageNet-1K": {"acc@1": 68.13, "acc@5": 87.81}},
            "_metrics_source": "published by OpenMMLab mmpretrain (model zoo), not measured by this project",
            "source": "OpenMMLab mmpretrain, ShuffleNetV1 1.0x g=3 (layout: mmpretrain)",
            "recipe": "https://github.com/open-mmlab/mmpretrain/tree/main/configs/shufflenet_v1",
            "license": "Apache-2.0",
            "_docs": (
                "OpenMMLab's ImageNet-1k training (batch 1024, 300 epochs), converted exactly to this project's "
                "layout (the converted model gives the original network's logits) and input (RGB, ImageNet mean/std)."
            ),
        },
    )
    DEFAULT = IMAGENET1K_MMPRETRAIN


#: model name -> its weights enum (the models with published weights).
_MODEL_WEIGHTS: Dict[str, Type[ShuffleNetWeights]] = {"shufflenet_v1_x1_0_g3": ShuffleNet_V1_X1_0_G3_Weights}
#: weights entry -> timm pretrained tag (``shufflenet_v1_x1_0_g3.mmpretrain_in1k``).
_TIMM_TAGS = {"IMAGENET1K_MMPRETRAIN": "mmpretrain_in1k"}


def timm_tag(weights: ShuffleNetWeights) -> str:
    return _TIMM_TAGS[weights.name]


def list_pretrained() -> Dict[str, List[str]]:
    """``{model name: [weights names]}`` of every model with published weights."""
    return {m: [w.name for w in enum] for m, enum in _MODEL_WEIGHTS.items()}


def _all_names() -> List[str]:
    return [f"{enum.__name__}.{w.name}" for enum in _MODEL_WEIGHTS.values() for w in enum]


def get_model_weights(name: str) -> Optional[Type[ShuffleNetWeights]]:
    """The weights enum of a model name (``None`` when it has no published weights)."""
    return _MODEL_WEIGHTS.get(name)


def get_weight(name: str) -> ShuffleNetWeights:
    """The weights entry of a full name, as ``torchvision.models.get_weight``:
    ``get_weight("ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN")`` (``.DEFAULT`` works too)."""
    enum_name, _, member = name.partition(".")
    for enum in _MODEL_WEIGHTS.values():
        if enum.__name__ == enum_name and member in enum.__members__:
            return enum[member]
    raise UnknownWeightsError(f"unknown weights {name!r}; published weights: {', '.join(_all_names())}")


def _for_model(name: Optional[str], what: str) -> ShuffleNetWeights:
    """``what`` ("DEFAULT", "IMAGENET1K_MMPRETRAIN", a full name) for the model ``name``."""
    if "." in what:
        w = get_weight(what)
        if name is not None and get_model_weights(name) is not type(w):
            raise UnknownWeightsError(f"weights {what!r} belong to another model than {name!r}")
        return w
    enum = get_model_weights(name) if name else None
    if enum is None:
        have = ", ".join(f"{m} ({', '.join(ws)})" for m, ws in list_pretrained().items())
        raise UnknownWeightsError(
            f"{what}: no such weights file, and {name or 'this model'} has no published weights (published: "
            f"{have}); pass a weights file (a trained model.pth, a converted or original public checkpoint)"
        )
    if what not in enum.__members__:
        raise UnknownWeightsError(
            f"{what}: no such weights file, and not a weights name of {name} (one of: DEFAULT, "
            f"{', '.join(w.name for w in enum)})"
        )
    return enum[what]


def resolve_weights(
    weights: Union[str, os.PathLike, WeightsFile, WeightsEnum], model_name: Optional[str] = None
) -> Union[WeightsFile, ShuffleNetWeights, Path]:
    """What ``weights=`` names: a weights entry (an enum member, ``"DEFAULT"``, a member name, a full name),
    a :class:`WeightsFile`, or a file path (an existing file wins over a weights name)."""
    if isinstance(weights, (WeightsFile, ShuffleNetWeights)):
        return weights
    if isinstance(weights, WeightsEnum):
        raise UnknownWeightsError(f"{weights!r} are torchvision weights, not weights of a ShuffleNet v1 model")
    path = Path(weights)
    if path.is_file():
        return path
    text = str(weights)
    if text.startswith(URI_SCHEME):
        return _from_uri(text)
    if os.sep in text or text.endswith((".pth", ".pt", ".ckpt", ".tar", ".bin", ".safetensors")):
        raise UnknownWeightsError(f"{text}: no such weights file")
    return _for_model(model_name, text)


def weights_file(
    weights: Union[str, os.PathLike, WeightsFile, WeightsEnum],
    model_name: Optional[str] = None,
    progress: bool = True,
    use: str = "model",
) -> WeightsFile:
    """The :class:`WeightsFile` that ``weights=`` names (see :func:`resolve_weights`), read or downloaded."""
    found = resolve_weights(weights, model_name)
    if isinstance(found, WeightsFile):
        return found
    if isinstance(found, ShuffleNetWeights):
        wf = found.weights_file(progress=progress)
        wf.meta.setdefault("categories", found.meta["categories"])
        return wf
    return read_weights(found, use=use)


def _from_uri(uri: str) -> ShuffleNetWeights:
    """``shufflenet://<model name>[/<weights name>]``, e.g. ``shufflenet://shufflenet_v1_x1_0_g3/IMAGENET1K_MMPRETRAIN``
    (without a weights name: the model's DEFAULT)."""
    rest = uri[len(URI_SCHEME) :].strip("/")
    model, _, what = rest.partition("/")
    if parse_shufflenet_v1_name(model) is None and "." in model and not what:
        return get_weight(model)  # shufflenet://ShuffleNet_V1_X1_0_G3_Weights.IMAGENET1K_MMPRETRAIN
    if get_model_weights(model) is None:
        raise UnknownWeightsError(
            f"{uri}: {model!r} has no published weights; spell it {URI_SCHEME}<model>[/<weights>] with one of: "
            + ", ".join(f"{URI_SCHEME}{m}/{w}" for m, ws in list_pretrained().items() for w in ws)
        )
    return _for_model(model, what or "DEFAULT")


def resolve_weights_uri(value: str, progress: bool = True) -> str:
    """A ``shufflenet://`` value or the URL of published weights -> the local converted file (downloaded and
    converted first if needed); any other value unchanged. A URL query (``?...``) is kept."""
    base, sep, query = value.partition("?")
    entry: Optional[ShuffleNetWeights] = None
    if base.startswith(URI_SCHEME):
        entry = _from_uri(base)
    else:
        entry = next((w for enum in _MODEL_WEIGHTS.values() for w in enum if w.url == base), None)
    if entry is None:
        return value
    wf = entry.weights_file(progress=progress)
    local = wf.meta.get("converted_cache") or str(wf.path)
    return local + sep + query
