"""One name for every model, one lookup for all of them.

Naming scheme (torchvision's ``shufflenet_v2_x1_0`` style, extended by the paper's options)::

    shufflenet_v1_x{width}_g{groups}[_se|_shallow|_noshuffle]     e.g. shufflenet_v1_x1_0_g3
    mobilenet_v1_x{width}                                           e.g. mobilenet_v1_x1_0
    alexnet
    skeleton_{unit}_{mflops}m                                       e.g. skeleton_resnext_38m (Table 4)

``{width}`` writes the multiplier with ``_`` for the decimal point (0_25, 0_5, 1_0, 1_5, 2_0); the ShuffleNet
pattern is spelled once, in :mod:`.names`. The same names work in :func:`create_model`,
``timm.create_model`` (all names are registered with timm when ``shufflenet`` is imported) and
``torch.hub.load(..., name)`` (``hubconf.py``).

The paper's figures live on the specs: :func:`.paper.paper_entries` reads ``paper_tables.json`` once and maps every
entry of Tables 1-6 and 8 to the name it describes; :func:`register` puts a model's entries on its
:class:`ModelSpec` (``spec.paper``) with the headline ``paper_mflops`` / ``paper_err``.
The complexity report, the baselines and the ablation runner read them from there.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from torch import nn

from ..errors import ShuffleNetError
from ..paths import paper_tables
from ..weights.io import WeightsError, WeightsFile, load_state_dict_strict
from .names import shufflenet_v1_name
from .paper import PaperEntry, headline, paper_entries
from .pretrained import weights_file
from .shufflenet import PAPER_GROUPS, InvalidConfigError, ShuffleNetV1, network_differences
from .timm_models import TIMM_CFG as _TIMM_CFG  # noqa: F401  (the baselines' timm cfg)
from .timm_models import register_timm

__all__ = [
    "ModelSpec",
    "register",
    "list_models",
    "get_spec",
    "create_model",
    "model_from_weights",
    "UnknownModelError",
    "paper_tables",
]


class UnknownModelError(ShuffleNetError, KeyError):
    """A model name that is not registered (the message lists close matches and the valid names)."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what the paper says about it.

    ``paper`` holds the model's entries in the paper's tables; ``paper_mflops`` / ``paper_err`` are the headline
    figures taken from them (per-model tables first: MFLOPs from Tables 5, 1, 6, 8, then the rows of Tables 2, 3,
    4; the error likewise, Table 1 having none). :func:`register` fills all three in."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    kwargs: Dict[str, Any] = field(default_factory=dict)
    paper_mflops: Optional[float] = None
    paper_err: Optional[float] = None
    description: str = ""
    paper: Tuple[PaperEntry, ...] = ()


_REGISTRY: Dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (and to timm's) with the paper's entries for its name."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model name {spec.name!r} is registered twice")
    entries = spec.paper or tuple(e for e in paper_entries() if e.name == spec.name)
    spec = dataclasses.replace(
        spec,
        paper=entries,
        paper_mflops=spec.paper_mflops if spec.paper_mflops is not None else headline(entries, "mflops"),
        paper_err=spec.paper_err if spec.paper_err is not None else headline(entries, "err"),
    )
    _REGISTRY[spec.name] = spec
    register_timm(spec)
    return spec


def list_models(pattern: str = "*", family: Optional[str] = None) -> List[str]:
    """Registered names matching a glob ``pattern`` (and ``family``: shufflenet, mobilenet_v1, ...)."""
    return sorted(n for n, s in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and family in (None, s.family))


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model name {name!r}.{hint} Valid names: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(
    name: Optional[str] = None,
    weights: Union[None, str, os.PathLike, WeightsFile, Any] = None,
    progress: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally with weights: a file :func:`~shufflenet.weights.read_weights` reads
    (package weights file, original or converted public checkpoint, Lightning ``.ckpt``, plain state dict) or
    published weights (``"DEFAULT"``, ``"IMAGENET1K_MMPRETRAIN"``, a ``Weights`` enum member or its full name;
    downloaded once, see :mod:`shufflenet.models.pretrained`).

    ``name=None`` takes the architecture from the file (its stored config or registered name). A file whose
    network differs from ``name`` is refused with both descriptions. ``features_only=True`` (with optional
    ``out_indices``) returns timm's feature extractor over the same network, as ``timm.create_model`` does.
    """
    if weights is not None:
        if kwargs.get("features_only"):
            raise InvalidConfigError("create_model: load weights into the full model, then wrap it for features")
        if name is not None:
            get_spec(name)  # a misspelled name is "unknown model" (with close matches), not "no published weights"
        return model_from_weights(weights_file(weights, name, progress=progress), name, **kwargs)
    if name is None:
        raise InvalidConfigError("create_model: give a model name or a weights file")
    spec = get_spec(name)
    if kwargs.get("features_only"):
        import timm

        return timm.create_model(name, **kwargs)
    return spec.builder(**{**spec.kwargs, **kwargs})


def model_from_weights(wf: WeightsFile, name: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """The network a :class:`~shufflenet.weights.WeightsFile` holds, with its weights loaded strictly.

    The file's stored config (package weights files: exact, e.g. a converted checkpoint's ``input_shift``)
    wins over a registered name's defaults; otherwise the network is ``name`` (or the file's ``arch``) with
    the file's class count.
    """
    src = str(wf.path)
    if wf.kind == "detectron2":
        raise WeightsError(
            f"{src}: a detectron2 checkpoint holds a detector, not a classifier; "
            f"load it with detectron2 (MODEL.WEIGHTS) or export it with mobile/export.py --detector"
        )
    arch = name or wf.arch
    if wf.config is not None and "groups" in wf.config:
        config = {**wf.config, **kwargs}
        try:
            model = ShuffleNetV1(**config)
        except TypeError as e:
            raise WeightsError(f"{src}: its stored config does not build a ShuffleNetV1 ({e})") from None
        if name is not None:
            spec = get_spec(name)
            differ = network_differences(wf.config, spec.kwargs, f"for {name}")
            if spec.builder is not ShuffleNetV1 or differ:
                raise WeightsError(
                    f"{src}: holds a different network than {name!r} ({differ or spec.family}); "
                    f"pass no name to build the file's own network"
                )
    else:
        if arch is None:
            raise WeightsError(
                f"{src}: the file does not say its architecture ({wf.kind}); pass a model name "
                f"(one of: {', '.join(list_models('shufflenet_v1_*'))}, ...)"
            )
        merged = {**wf.model_kwargs, **kwargs}
        if "num_classes" not in merged and wf.num_classes is not None:
            merged["num_classes"] = wf.num_classes
        model = create_model(arch, **merged)
    return load_state_dict_strict(model, wf.state_dict, src)


def _register_shufflenets() -> None:
    """Every width x group count the width rule builds, Table 3's models without shuffle and Table 5's two other
    variants; the paper's figures come from :func:`paper_entries` (in :func:`register`)."""
    for g in PAPER_GROUPS:
        for width in (0.25, 0.5, 1.0, 1.5, 2.0):
            register(
                ModelSpec(
                    name=shufflenet_v1_name(g, width),
                    family="shufflenet",
                    builder=ShuffleNetV1,
                    kwargs=dict(groups=g, width_mult=width),
                    description=f"ShuffleNet {width:g}x (g={g})",
                )
            )
    for r in paper_tables()["table3_shuffle_ablation"]:
        width = float(r["model"].rstrip("x"))
        register(
            ModelSpec(
                name=shufflenet_v1_name(r["g"], width, "noshuffle"),
                family="shufflenet",
                builder=ShuffleNetV1,
                kwargs=dict(groups=r["g"], width_mult=width, shuffle=False),
                description=f"ShuffleNet {r['model']} (g={r['g']}) without channel shuffle (Table 3)",
            )
        )
    register(
        ModelSpec(
            name=shufflenet_v1_name(3, 2.0, "se"),
            family="shufflenet",
            builder=ShuffleNetV1,
            kwargs=dict(groups=3, width_mult=2.0, se=True),
            description="ShuffleNet 2x (g=3) with Squeeze-and-Excitation (Table 5)",
        )
    )
    register(
        ModelSpec(
            name=shufflenet_v1_name(3, 0.5, "shallow"),
            family="shufflenet",
            # Half the units per stage; widened (0.73x widths, 12-channel stem) to the paper's 40 MFLOPs.
            builder=ShuffleNetV1,
            kwargs=dict(groups=3, width_mult=0.73, stage_repeats=(2, 4, 2), stem_channels=12),
            description="ShuffleNet 0.5x shallow (g=3): stage repeats [2, 4, 2], widened to 40 MFLOPs (Table 5)",
        )
    )


_register_shufflenets()
