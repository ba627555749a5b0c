"""timm entry points and pretrained cfgs of every registered name (``import shufflenet`` registers them).

Each ShuffleNet name gets a pretrained cfg through ``timm.models.generate_default_cfgs`` (so
``timm.list_models(pretrained=True)``, ``timm.data.resolve_data_config`` and timm's own model tests see them):
the URL where public weights exist (``shufflenet_v1_x1_0_g3.mmpretrain_in1k``, the default tag of
``shufflenet_v1_x1_0_g3``), none elsewhere. ``timm.create_model(name, pretrained=True)`` builds through
``build_model_with_cfg`` with a ``pretrained_filter_fn`` that converts an original public checkpoint (mmpretrain,
megvii) with the project's converter, so every timm weight source works:

* the cfg's URL: downloaded by :func:`shufflenet.weights.download_weights` (torch.hub's cache and hash check,
  ``SHUFFLENET_WEIGHTS_MIRROR``, one error line when offline), then loaded by timm as a file;
* ``pretrained_cfg_overlay=dict(file=PATH)``: a local file (original public checkpoint or this project's weights);
* ``pretrained_cfg_overlay=dict(hf_hub_id="user/repo")``: weights pushed to the Hugging Face Hub (e.g. with
  ``timm.models.push_to_hf_hub``), fetched by timm.
"""

from __future__ import annotations

from typing import Any, Dict

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from torch import nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ShuffleNetError
from ..weights.download import download_weights
from ..weights.io import WeightsError, convert_public, public_layout, read_checkpoint
from .pretrained import get_model_weights, timm_tag
from .shufflenet import ShuffleNetV1, network_differences

#: timm reads the cfgs of an entry point from ``default_cfgs`` of the entry point's module when it is registered.
default_cfgs: Dict[str, Any] = {}


class NoPretrainedWeightsError(ShuffleNetError, RuntimeError):
    """``pretrained=True`` for a name without published weights and no file / Hub id given."""


#: The project's input (RGB, ImageNet mean/std, 224 crop of the 256 short edge) and layer names.
TIMM_CFG: Dict[str, Any] = dict(
    url="",
    num_classes=1000,
    input_size=(3, 224, 224),
    pool_size=(7, 7),
    crop_pct=0.875,
    interpolation="bilinear",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    first_conv="conv1.0",
    classifier="fc",
)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    paper = dict(
        paper_ids="arXiv:1707.01083",
        paper_name="ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices",
    )
    return {**TIMM_CFG, **paper, **kwargs}


def pretrained_cfgs(name: str) -> Dict[str, Dict[str, Any]]:
    """``{name[.tag]: cfg}`` of one model: a tagged cfg per published weights entry, else one untagged cfg."""
    enum = get_model_weights(name)
    if enum is None:
        return {name: _cfg()}
    cfgs = {}
    for w in enum:
        cfgs[f"{name}.{timm_tag(w)}"] = _cfg(url=w.url, license=w.meta["license"].lower(), origin_url=w.meta["recipe"])
    return cfgs


def convert_filter(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, Any]:
    """timm's ``pretrained_filter_fn``: an original public checkpoint is converted to ``model``'s layout; a
    state dict of this project passes through. A checkpoint whose network differs from ``model`` (megvii's
    input shift or shuffle permutation) is refused with the way to load it."""
    layout = public_layout([str(k) for k in state_dict])
    if layout is None:
        return state_dict
    converted = convert_public(dict(state_dict))
    differ = network_differences(converted["config"], model.config(), "in the model")
    if differ:
        raise WeightsError(
            f"the {layout} checkpoint converts to another network than {type(model).__name__} "
            f"{model.config().get('groups')}g: {differ}; load it with shufflenet.create_model(None, weights=FILE)"
        )
    return converted["state_dict"]


def _pretrained_kwargs(name: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Point timm at a local file for a URL source (downloaded by the project); refuse when there is none."""
    cfg = resolve_pretrained_cfg(
        name, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay")
    ).to_dict()
    if cfg.get("file"):
        read_checkpoint(cfg["file"])  # the project's one reader refuses what is not a weights file, in one line
        return kwargs
    if cfg.get("state_dict") or cfg.get("hf_hub_id"):
        return kwargs
    if not cfg.get("url"):
        raise NoPretrainedWeightsError(
            f"{name}: no published weights (published: {', '.join(n for n in _PUBLISHED)}); pass "
            f"pretrained_cfg_overlay=dict(file=PATH) or dict(hf_hub_id=REPO), or use pretrained=False"
        )
    url = cfg["url"]
    enum = get_model_weights(name)
    if enum is not None and not (kwargs.get("pretrained_cfg_overlay") or {}).get("url"):
        # the Weights enum is the one source of each URL (the cfg carries a copy for timm's listings)
        url = next((w.url for w in enum if timm_tag(w) == cfg.get("tag")), url)
    path = download_weights(url, progress=True)
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {}, file=str(path))
    return {**kwargs, "pretrained_cfg_overlay": overlay}


_PUBLISHED: list = []


def register_timm(spec: Any) -> None:
    """Register ``spec`` (a :class:`~shufflenet.models.registry.ModelSpec`) with timm, with its cfgs."""
    if spec.builder is ShuffleNetV1:
        cfgs = pretrained_cfgs(spec.name)
        default_cfgs.update(generate_default_cfgs(cfgs))
        _PUBLISHED.extend(k for k, v in cfgs.items() if v["url"])

        def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            if pretrained:
                kwargs = _pretrained_kwargs(spec.name, kwargs)
            return build_model_with_cfg(
                ShuffleNetV1,
                spec.name,
                pretrained=pretrained,
                pretrained_filter_fn=convert_filter,
                feature_cfg=dict(out_indices=(1, 2, 3)),
                **{**spec.kwargs, **kwargs},
            )

    else:

        def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            if pretrained:
                raise NoPretrainedWeightsError(f"{spec.name}: no published weights; use pretrained=False")
            return spec.builder(**{**spec.kwargs, **kwargs})

    entrypoint.__name__ = spec.name
    entrypoint.__qualname__ = spec.name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = spec.description
    register_model(entrypoint)
