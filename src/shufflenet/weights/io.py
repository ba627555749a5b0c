"""The package's weights file: one format for trained, converted and exported models.

A weights file is a ``torch.save`` dict, loadable with ``torch.load(weights_only=True)``::

    {"format": "shufflenet-weights/1", "arch": <registered name or None>, "config": {constructor kwargs},
     "state_dict": {...}, "meta": {free-form, JSON-able: source, converter, accuracy, ...}}

:func:`read_weights` is the one reader of every file the project accepts: the package weights file (also
what the public-checkpoint converters write), a Lightning ``.ckpt`` of the classification integration, a plain
``ShuffleNetV1`` state dict and a detectron2 checkpoint. It says what kind of file it is and hands back
the architecture, constructor config, state dict, EMA weights and metadata; ``create_model(name_or_None,
weights=FILE)`` and every integration build on it. An original public checkpoint (megvii's ShuffleNet-Series
``.pth.tar``, mmpretrain's ``.pth``) is recognised by its keys (:func:`public_layout`, the one layout detection)
and converted on read by :func:`shufflenet.convert.package_weights`, which this reader imports when it meets such
a file (the converter builds the network, so it sits above the models and this reader below them: that one call
goes up a layer, at the moment it is needed, whatever else was imported); the converted file is cached in
``torch.hub.get_dir()/checkpoints`` (:func:`converted_cache_path`), so the next read loads it directly.

``load_state_dict_strict`` is the one place that checks a state dict against a model, so every loader in
the project reports a mismatch the same way: the first mismatching key and both shapes.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import ShuffleNetError
from ..fileio import atomic_write, sha256_file
from .download import checkpoints_dir

FORMAT = "shufflenet-weights/1"
PathLike = Union[str, os.PathLike]

#: The command that turns a public checkpoint into a package weights file.
CONVERT_COMMAND = "python -m shufflenet.convert"

__all__ = [
    "FORMAT",
    "CONVERT_COMMAND",
    "WeightsError",
    "NotAWeightsFileError",
    "WeightsFile",
    "atomic_torch_save",
    "save_weights",
    "not_weights_message",
    "read_checkpoint",
    "read_weights",
    "extract_state_dict",
    "load_state_dict_strict",
    "load_weights",
    "public_layout",
    "convert_public",
    "converted_cache_path",
    "weights_dict",
]


class WeightsError(ShuffleNetError, ValueError):
    """A weights file or state dict that does not fit (message names the file/key and shapes)."""


class NotAWeightsFileError(WeightsError):
    """A file ``torch.load(weights_only=True)`` refuses (:func:`not_weights_message`); a command catches it to add
    what it takes instead."""


@dataclass
class WeightsFile:
    """What :func:`read_weights` found in a file.

    ``kind``: ``package`` (``save_weights`` / converters), ``lightning`` (classification ``.ckpt``),
    ``state_dict`` (plain ``ShuffleNetV1`` state dict) or ``detectron2`` (``{"model": ...}``).
    ``state_dict`` is the classifier's (``model.`` prefix removed; the EMA copy instead when ``use="ema"``),
    or the whole detector's for ``detectron2``.
    """

    path: Path
    kind: str
    state_dict: Dict[str, torch.Tensor]
    arch: Optional[str] = None
    config: Optional[Dict[str, Any]] = None  #: ``ShuffleNetV1`` constructor kwargs, when the file has them
    ema_state_dict: Optional[Dict[str, torch.Tensor]] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    hparams: Dict[str, Any] = field(default_factory=dict)  #: Lightning hyper-parameters (model / datamodule)
    weights: str = "stored"  #: "model", "ema" (Lightning) or "stored"
    raw: Optional[Mapping[str, Any]] = field(default=None, repr=False)

    @property
    def num_classes(self) -> Optional[int]:
        """Classes of the classifier (hyper-parameters, config, or the last 2-d ``fc``/classifier weight)."""
        if self.hparams.get("num_classes") is not None:
            return int(self.hparams["num_classes"])
        if self.config and self.config.get("num_classes") is not None:
            return int(self.config["num_classes"])
        for key in ("fc.weight", "classifier.weight", "classifier.6.weight", "head.fc.weight"):
            if key in self.state_dict and self.state_dict[key].ndim == 2:
                return int(self.state_dict[key].shape[0])
        return None

    @property
    def model_kwargs(self) -> Dict[str, Any]:
        """Extra constructor kwargs a Lightning run was trained with (``model.model_kwargs``)."""
        return dict(self.hparams.get("model_kwargs") or {})


#: The public checkpoint layouts: name -> key prefixes that must all occur (after an optional ``module.`` prefix).
PUBLIC_LAYOUTS: Dict[str, Tuple[str, ...]] = {
    "megvii": ("first_conv.", "features."),  # megvii ShuffleNet-Series
    "mmpretrain": ("backbone.conv1.", "backbone.layers."),  # OpenMMLab mmpretrain
}


def public_layout(keys: Iterable[Any]) -> Optional[str]:
    """The public checkpoint layout these state-dict keys come from (``"megvii"``, ``"mmpretrain"``), else ``None``.

    The one layout detection of the project: the reader and the converters both ask it."""
    bare = [k[len("module.") :] if k.startswith("module.") else k for k in map(str, keys)]
    for name, markers in PUBLIC_LAYOUTS.items():
        if all(any(k.startswith(m) for k in bare) for m in markers):
            return name
    return None


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` through :func:`shufflenet.fileio.atomic_write`: never a half-written file."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def weights_dict(
    model: nn.Module, arch: Optional[str] = None, meta: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """The package weights file's content for ``model`` (what :func:`save_weights` writes)."""
    return {
        "format": FORMAT,
        "arch": arch,
        "config": model.config() if hasattr(model, "config") else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }


def save_weights(
    model: nn.Module, path: PathLike, arch: Optional[str] = None, meta: Optional[Mapping[str, Any]] = None
) -> Path:
    """Write ``model`` as a package weights file (atomically)."""
    return atomic_torch_save(weights_dict(model, arch, meta), path)


_CONVERTED_SUFFIX = ".shufflenet.pth"


def convert_public(source: Union[Path, Mapping[str, Any]]) -> Dict[str, Any]:
    """The package weights dict of an original public checkpoint (a file or a loaded dict).

    The converter builds the network, so it lives above the models (:mod:`shufflenet.convert`); it is imported
    here, when a public checkpoint is met, rather than registered by an import elsewhere."""
    from ..convert.checkpoints import package_weights

    return package_weights(source)


def converted_cache_path(source: PathLike, sha256: str) -> Path:
    """Where the converted copy of the public checkpoint ``source`` (content hash ``sha256``) is cached:
    ``torch.hub.get_dir()/checkpoints/<source name>.<sha256[:8]>.shufflenet.pth``, next to the downloads."""
    name = Path(source).name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar", ".bin"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return checkpoints_dir() / f"{name}.{sha256[:8]}{_CONVERTED_SUFFIX}"


def _read_public(path: Path) -> WeightsFile:
    """Convert an original public checkpoint, or load its cached conversion; the cache is written atomically
    (a read-only cache folder only costs the conversion next time)."""
    sha = sha256_file(path)
    cache = converted_cache_path(path, sha)
    if cache.is_file():
        try:
            cached = read_weights(cache)
        except WeightsError:
            cached = None  # a cache from an older release or damaged: convert again
        if cached is not None and cached.kind == "package" and cached.meta.get("sha256") == sha:
            cached.path, cached.meta["converted_cache"] = path, str(cache)
            return cached
    converted = convert_public(path)
    try:
        atomic_torch_save(converted, cache)
        converted["meta"]["converted_cache"] = str(cache)
    except OSError:
        pass
    return WeightsFile(
        path,
        "package",
        dict(converted["state_dict"]),
        arch=converted.get("arch"),
        config=dict(converted["config"]) if converted.get("config") else None,
        meta=dict(converted["meta"]),
        raw=converted,
    )


#: What every reader says after "cannot be read as a torch weights file (...)": what a weights file is.
WEIGHTS_FILE_IS = (
    "a weights file is what torch.save writes, holding only tensors and plain values (any other object is never loaded)"
)


def not_weights_message(
    path: PathLike, error: BaseException, what: str = "a torch weights file", expected: str = WEIGHTS_FILE_IS
) -> str:
    """The one message for a file that ``torch.load(weights_only=True)`` (or another safe loader) refused, whichever
    command read it: what the file is not, in a few words of our own (torch's text advises loading the file
    unsafely; it is never passed on)."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        why = f"it holds Python objects other than tensors and plain values, e.g. {found.group(1)}"
    elif zipfile.is_zipfile(path):
        why = "a damaged or truncated torch.save archive"
    else:
        why = "another kind of file, or a truncated copy"
    return f"{path}: cannot be read as {what} ({why}); {expected}"


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)``: the one place the project opens a weights file. A missing file or
    one torch refuses (another kind of file, truncated, or holding objects that would run code) is one
    :class:`WeightsError` line (:func:`not_weights_message`)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of a file it is about to refuse; the refusal says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with code objects, not a torch file...
        raise NotAWeightsFileError(not_weights_message(path, e)) from None


def extract_state_dict(obj: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The state dict inside a package weights file, a Lightning ``.ckpt`` or a plain state dict."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: expected a dict, got {type(obj).__name__}")
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{source}: no tensor state dict found (keys: {sorted(obj)[:8]})")
    return dict(sd)


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
) -> nn.Module:
    """Load ``state_dict`` into ``model``; every key must exist on both sides with the same shape."""
    own = model.state_dict()
    for key, value in state_dict.items():
        if key not in own:
            raise WeightsError(f"{source}: unexpected key '{key}' (shape {tuple(value.shape)}) not in the model")
        if tuple(own[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"{source}: key '{key}' has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the model"
            )
    missing = [k for k in own if k not in state_dict]
    if missing:
        raise WeightsError(f"{source}: missing key '{missing[0]}' ({len(missing)} missing in all)")
    model.load_state_dict(state_dict, strict=True)
    return model


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_weights(path: PathLike, use: str = "auto") -> WeightsFile:
    """Read any file the project accepts and say what it holds (see :class:`WeightsFile`).

    ``use`` picks the weights of a Lightning checkpoint: ``"model"``, ``"ema"`` (error if it has none) or
    ``"auto"`` (the EMA copy when the run kept one: validation and export used it).
    """
    if use not in ("auto", "model", "ema"):
        raise WeightsError(f"weights must be auto, model or ema, got {use!r}")
    path = Path(path)
    obj = read_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a dict of weights, got {type(obj).__name__}")
    src = str(path)
    meta = dict(obj["meta"]) if isinstance(obj.get("meta"), Mapping) else {}
    if obj.get("format") == FORMAT or (
        isinstance(obj.get("format"), str) and obj["format"].startswith("shufflenet-weights")
    ):
        if obj.get("format") != FORMAT:
            raise WeightsError(
                f"{path}: weights format {obj['format']!r} is not {FORMAT!r} (a newer release wrote it?)"
            )
        config = dict(obj["config"]) if isinstance(obj.get("config"), Mapping) else None
        return WeightsFile(
            path, "package", extract_state_dict(obj, src), arch=obj.get("arch"), config=config, meta=meta, raw=obj
        )
    if (
        "pytorch-lightning_version" in obj
        or "hyper_parameters" in obj
        or (isinstance(obj.get("state_dict"), Mapping) and any(str(k).startswith("model.") for k in obj["state_dict"]))
    ):
        sd = extract_state_dict(obj, src)
        hp = dict(obj.get("hyper_parameters") or {})
        model_sd = {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
        ema_sd = {k[len("model_ema.module.") :]: v for k, v in sd.items() if k.startswith("model_ema.module.")} or None
        if not model_sd:
            raise WeightsError(
                f"{path}: a Lightning checkpoint without the classifier's 'model.*' weights "
                f"(first keys: {list(sd)[:4]})"
            )
        if use == "ema" and ema_sd is None:
            raise WeightsError(f"{path}: EMA weights asked for, but the checkpoint has none (model.ema was off)")
        chosen = "ema" if (use == "ema" or (use == "auto" and ema_sd is not None)) else "model"
        dm = obj.get("datamodule_hyper_parameters") or {}
        hp["datamodule"] = dict(dm) if isinstance(dm, Mapping) else {}
        return WeightsFile(
            path,
            "lightning",
            ema_sd if chosen == "ema" else model_sd,
            arch=hp.get("arch"),
            ema_state_dict=ema_sd,
            meta=meta,
            hparams=hp,
            weights=chosen,
            raw=obj,
        )
    if isinstance(obj.get("model"), Mapping) and _is_tensor_dict(obj["model"]):
        return WeightsFile(path, "detectron2", dict(obj["model"]), meta=meta, raw=obj)
    sd = obj.get("state_dict", obj)
    keys = [str(k) for k in sd] if isinstance(sd, Mapping) else []
    if public_layout(keys) is not None:
        return _read_public(path)
    if _is_tensor_dict(sd):
        return WeightsFile(path, "state_dict", dict(sd), meta=meta, raw=obj)
    raise WeightsError(
        f"{path}: not a weights file this project reads (package weights file, Lightning .ckpt, state dict, "
        f"detectron2 checkpoint); top-level keys: {sorted(map(str, obj))[:8]}"
    )


def load_weights(model: nn.Module, path: PathLike, use: str = "model") -> nn.Module:
    """Load the weights in ``path`` (any kind :func:`read_weights` reads) into ``model``, strictly.

    For a Lightning checkpoint ``use`` picks the trained weights (``"model"``) or the EMA copy (``"ema"``).
    """
    wf = read_weights(path, use=use)
    return load_state_dict_strict(model, wf.state_dict, str(path))
