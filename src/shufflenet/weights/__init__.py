"""Weights: the package's weights file and the one reader of every file the project accepts.

This layer sits below the models (it imports no network); the converters of public checkpoints sit above
them, in :mod:`shufflenet.convert`: the reader imports the converter when it meets an original public checkpoint
and converts it on read (:func:`~shufflenet.weights.io.convert_public`). :mod:`.download` fetches public weights into
torch.hub's cache with its hash check (``SHUFFLENET_WEIGHTS_MIRROR`` redirects downloads to a mirror).
"""

from .download import MIRROR_ENV, DownloadError, checkpoints_dir, download_weights, mirrored_url
from .io import (
    CONVERT_COMMAND,
    FORMAT,
    NotAWeightsFileError,
    WeightsError,
    WeightsFile,
    atomic_torch_save,
    convert_public,
    converted_cache_path,
    extract_state_dict,
    load_state_dict_strict,
    load_weights,
    not_weights_message,
    public_layout,
    read_checkpoint,
    read_weights,
    save_weights,
    weights_dict,
)

__all__ = [
    "CONVERT_COMMAND",
    "FORMAT",
    "NotAWeightsFileError",
    "MIRROR_ENV",
    "DownloadError",
    "checkpoints_dir",
    "converted_cache_path",
    "download_weights",
    "mirrored_url",
    "convert_public",
    "weights_dict",
    "WeightsError",
    "WeightsFile",
    "atomic_torch_save",
    "extract_state_dict",
    "load_state_dict_strict",
    "load_weights",
    "not_weights_message",
    "public_layout",
    "read_checkpoint",
    "read_weights",
    "save_weights",
]
