"""Where things are (core: imports nothing of the project).

* package data, found through :mod:`importlib.resources` so a plain ``pip install .`` works:
  ``configs/{classification,detection}/*.yaml`` (:func:`configs_dir`), the paper's tables
  (:func:`paper_tables`) and a few real sample photos (:func:`sample_images_dir`);
* the cache folder (generated demo data, prepared datasets): ``$SHUFFLENET_CACHE``, else
  ``$XDG_CACHE_HOME/shufflenet``, else ``~/.cache/shufflenet`` (:func:`cache_dir`);
* the optional folder of larger real data slices (``cifar10/``, ``tiny_coco/``): ``$SHUFFLENET_DATA`` and
  nothing else (:func:`data_dir`). Nothing in the package needs it; tests and tools that can use more
  data say so and name the setting.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import ShuffleNetError

__all__ = [
    "DATA_ENV",
    "CACHE_ENV",
    "package_path",
    "configs_dir",
    "paper_tables",
    "sample_images_dir",
    "sample_images",
    "IMAGE_SUFFIXES",
    "image_files",
    "cache_dir",
    "data_dir",
]

#: The one setting that points the project at the optional larger data slices.
DATA_ENV = "SHUFFLENET_DATA"
CACHE_ENV = "SHUFFLENET_CACHE"
#: The image files the project reads: the suffixes torchvision's ``ImageFolder`` takes (case does not matter), so a
#: folder trains, evaluates, predicts and calibrates on the same files.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def package_path(*parts: str) -> Path:
    """A file or folder inside the installed ``shufflenet`` package (a real path: the package is not zipped)."""
    return Path(os.fspath(resources.files("shufflenet").joinpath(*parts)))


def configs_dir(kind: str) -> Path:
    """``configs/<kind>`` (``classification`` or ``detection``) shipped inside the package."""
    path = package_path("configs", kind)
    if not path.is_dir():
        raise ShuffleNetError(f"{path}: the package's {kind} configs are missing (a broken install?)")
    return path


@lru_cache(maxsize=1)
def paper_tables() -> Dict[str, Any]:
    """The paper's tables (``shufflenet/resources/paper_tables.json``)."""
    return json.loads(package_path("resources", "paper_tables.json").read_text())


def sample_images_dir() -> Path:
    """A few real photos shipped with the package (COCO 2017, redistributable licenses; see ATTRIBUTION.md)."""
    return package_path("resources", "images")


def image_files(folder: os.PathLike) -> List[Path]:
    """The image files under ``folder``: the one listing rule of the project (prediction, ``data.predict_root``,
    export verification and int8 calibration folders).

    * a file is an image when its suffix is one of :data:`IMAGE_SUFFIXES`, in any case (``.JPG`` too);
    * the search is recursive, following symbolic links to folders (each real folder is visited once, so a link
      loop ends) and counting links to files like the files;
    * hidden names are skipped, files and folders alike (``.DS_Store``, macOS ``._photo.jpg`` copies, ``.git``);
    * the result is sorted by path (the same order on every machine, so runs are repeatable);
    * ``[]`` when the folder holds no image or does not exist (the caller says which folder and why it needed one).
    """
    root = Path(folder)
    files: List[Path] = []
    seen = set()
    for dirpath, dirnames, names in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files += [
            Path(dirpath, n)
            for n in names
            if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(dirpath, n))
        ]
    return sorted(files)


def sample_images() -> List[Path]:
    """The package's sample photos, sorted (so runs are repeatable)."""
    folder = sample_images_dir()
    files = image_files(folder)
    if not files:
        raise ShuffleNetError(f"{folder}: the package's sample photos are missing (a broken install?)")
    return files


def cache_dir(*parts: str) -> Path:
    """``$SHUFFLENET_CACHE``, else ``$XDG_CACHE_HOME/shufflenet``, else ``~/.cache/shufflenet`` (not created)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        base = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "shufflenet"
    return base.joinpath(*parts)


def data_dir(*parts: str, required: bool = False) -> Optional[Path]:
    """``$SHUFFLENET_DATA/<parts>`` if the setting is given and the folder exists, else ``None``.

    ``required=True`` raises :class:`~shufflenet.errors.ShuffleNetError` instead of returning ``None``, naming
    the setting.
    """
    env = os.environ.get(DATA_ENV)
    want = "/".join(parts) or "."
    if not env:
        if required:
            raise ShuffleNetError(
                f"this needs the optional data folder ({want} inside it): set {DATA_ENV}=/path/to/data"
            )
        return None
    path = Path(env).expanduser().joinpath(*parts)
    if not path.is_dir():
        if required:
            raise ShuffleNetError(f"{path}: not found ({DATA_ENV}={env} has no {want})")
        return None
    return path
