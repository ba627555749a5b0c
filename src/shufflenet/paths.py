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
    "DataNotFoundError",
    "package_path",
    "configs_dir",
    "paper_tables",
    "sample_images_dir",
    "sample_images",
    "cache_dir",
    "data_dir",
]

#: The one setting that points the project at the optional larger data slices.
DATA_ENV = "SHUFFLENET_DATA"
CACHE_ENV = "SHUFFLENET_CACHE"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataNotFoundError(ShuffleNetError, FileNotFoundError):
    """Optional data that was asked for and is not there (the message names the setting)."""


def package_path(*parts: str) -> Path:
    """A file or folder inside the installed ``shufflenet`` package (a real path: the package is not zipped)."""
    return Path(os.fspath(resources.files("shufflenet").joinpath(*parts)))


def configs_dir(kind: str) -> Path:
    """``configs/<kind>`` (``classification`` or ``detection``) shipped inside the package."""
    path = package_path("configs", kind)
    if not path.is_dir():
        raise DataNotFoundError(f"{path}: the package's {kind} configs are missing (a broken install?)")
    return path


@lru_cache(maxsize=1)
def paper_tables() -> Dict[str, Any]:
    """The paper's tables (``shufflenet/resources/paper_tables.json``)."""
    return json.loads(package_path("resources", "paper_tables.json").read_text())


def sample_images_dir() -> Path:
    """A few real photos shipped with the package (COCO 2017, redistributable licenses; see ATTRIBUTION.md)."""
    return package_path("resources", "images")


def sample_images() -> List[Path]:
    """The package's sample photos, sorted (so runs are repeatable)."""
    folder = sample_images_dir()
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise DataNotFoundError(f"{folder}: the package's sample photos are missing (a broken install?)")
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

    ``required=True`` raises :class:`DataNotFoundError` instead of returning ``None``, naming the setting.
    """
    env = os.environ.get(DATA_ENV)
    want = "/".join(parts) or "."
    if not env:
        if required:
            raise DataNotFoundError(
                f"this needs the optional data folder ({want} inside it): set {DATA_ENV}=/path/to/data"
            )
        return None
    path = Path(env).expanduser().joinpath(*parts)
    if not path.is_dir():
        if required:
            raise DataNotFoundError(f"{path}: not found ({DATA_ENV}={env} has no {want})")
        return None
    return path
