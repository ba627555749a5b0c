"""Downloading public weights: torch.hub's cache and hash convention, one setting for a mirror.

* A file is downloaded once, into ``torch.hub.get_dir()/checkpoints/<the URL's file name>`` (where
  ``torch.hub.load_state_dict_from_url`` puts it; ``TORCH_HOME`` moves it). A file already there is used
  as is, so a file downloaded by hand and put there is picked up without a network.
* A file name that carries a hash prefix (``name-<hex>.pth``, torch.hub's convention, e.g. mmpretrain's
  ``..._20200804-5d6cec73.pth``) is checked against the sha256 of what arrived.
* The transfer is written to a temporary file beside the destination and renamed onto it only when it is
  complete (the size the server announced) and its hash fits: an interrupted or corrupt download leaves
  nothing under the final name (a killed process leaves at most a hidden ``.NAME.<pid>.*.tmp``, which the
  next download of that name removes).
* ``SHUFFLENET_WEIGHTS_MIRROR=<base URL>`` fetches ``<base URL>/<the URL's file name>`` instead of the
  public URL (a local or company mirror; the cache path and the hash check stay the same).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch

from ..errors import ShuffleNetError
from ..fileio import tmp_sibling

__all__ = [
    "MIRROR_ENV",
    "DownloadError",
    "checkpoints_dir",
    "url_file_name",
    "hash_prefix",
    "mirrored_url",
    "cached_path",
    "download_weights",
]

#: The setting that redirects every weights download to a mirror (a base URL).
MIRROR_ENV = "SHUFFLENET_WEIGHTS_MIRROR"
#: torch.hub's hash-prefix convention: the hex digits after the last ``-`` before the first ``.``.
_HASH_RE = re.compile(r"-([a-f0-9]+)\.")
_CHUNK = 1 << 16
_TIMEOUT_S = 30


class DownloadError(ShuffleNetError, OSError):
    """A weights download that failed (no network, refused, incomplete, wrong hash); nothing was kept."""


def checkpoints_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: where downloads and converted copies are cached."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def url_file_name(url: str) -> str:
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise DownloadError(f"{url}: the URL names no file")
    return name


def hash_prefix(file_name: str) -> Optional[str]:
    """The sha256 prefix a file name carries (torch.hub's convention), else ``None``."""
    m = _HASH_RE.search(file_name)
    return m.group(1) if m else None


def mirrored_url(url: str) -> str:
    """``url``, or ``$SHUFFLENET_WEIGHTS_MIRROR/<file name>`` when the setting is given."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{url_file_name(url)}" if mirror else url


def cached_path(url: str) -> Path:
    """Where the file of ``url`` is (or will be) cached."""
    return checkpoints_dir() / url_file_name(url)


def _progress(done: int, total: Optional[int], last: list) -> None:
    """One line on stderr, rewritten in place: MB done, of total, percent (at most every 5 %)."""
    pct = int(100 * done / total) if total else None
    if pct is not None and pct < last[0] + 5 and done != total:
        return
    last[0] = pct if pct is not None else last[0]
    text = f"{done / 1e6:.1f} MB" + (f" / {total / 1e6:.1f} MB ({pct}%)" if total else "")
    print(f"\r  {text}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _fetch(src: str, tmp: Path, progress: bool) -> str:
    """Stream ``src`` into ``tmp``; returns the sha256 hex digest. Raises on an incomplete transfer."""
    digest = hashlib.sha256()
    request = urllib.request.Request(src, headers={"User-Agent": "shufflenet"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, open(tmp, "wb") as f:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done, last = 0, [-5]
        while True:
            block = response.read(_CHUNK)
            if not block:
                break
            f.write(block)
            digest.update(block)
            done += len(block)
            if progress:
                _progress(done, total, last)
        f.flush()
        os.fsync(f.fileno())
    if total is not None and done != total:
        # http.client returns b"" when the server closes early instead of raising: check the size here.
        raise DownloadError(f"{src}: the transfer stopped after {done} of {total} bytes")
    return digest.hexdigest()


def _unreachable(url: str, src: str, dst: Path, reason: object) -> DownloadError:
    via = f" (through {MIRROR_ENV}={os.environ.get(MIRROR_ENV)})" if src != url else ""
    return DownloadError(
        f"cannot download {src}{via}: {reason}; without a network, download {url} elsewhere and put it at "
        f"{dst} (it is picked up from there), or set {MIRROR_ENV} to a server that has {dst.name}"
    )


def download_weights(url: str, progress: bool = True, check_hash: bool = True) -> Path:
    """The cached file of ``url``, downloaded first if it is not there (see the module docstring)."""
    dst = cached_path(url)
    if dst.is_file():
        return dst
    src = mirrored_url(url)
    try:
        tmp = tmp_sibling(dst)
    except OSError as e:
        raise DownloadError(f"{dst.parent}: cannot write the download there ({e.strerror or e})") from None
    try:
        if progress:
            print(f"Downloading {src} to {dst}", file=sys.stderr, flush=True)
        try:
            sha = _fetch(src, tmp, progress)
        except urllib.error.HTTPError as e:
            raise _unreachable(url, src, dst, f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise _unreachable(url, src, dst, e.reason) from None
        except (OSError, ValueError) as e:  # reset connection, timeout, bad URL
            if isinstance(e, DownloadError):
                raise
            raise _unreachable(url, src, dst, f"{type(e).__name__}: {e}") from None
        prefix = hash_prefix(dst.name)
        if check_hash and prefix is not None and not sha.startswith(prefix):
            raise DownloadError(
                f"{src}: the downloaded file's sha256 starts with {sha[: len(prefix)]}, not {prefix} as its name "
                f"says (a corrupt transfer or a different file on the server); nothing was kept"
            )
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return dst
