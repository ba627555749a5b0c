"""Downloading public weights: torch.hub's cache and hash convention, one setting for a mirror.

* A file is downloaded once, into ``torch.hub.get_dir()/checkpoints/<the URL's file name>`` (where
  ``torch.hub.load_state_dict_from_url`` puts it; ``TORCH_HOME`` moves it). A file already there is used
  as is, so a file downloaded by hand and put there is picked up without a network.
* A file name that carries a hash prefix (``name-<hex>.pth``, torch.hub's convention, e.g. mmpretrain's
  ``..._20200804-5d6cec73.pth``) is checked against the sha256 of what arrived.
* The transfer is written to a temporary file beside the destination and renamed onto it only when it is
  complete (the size the server announced) and its hash fits: an interrupted or corrupt download leaves
  nothing under the final name (a killed process leaves at most a hidden ``.NAME.<pid>.*.tmp``, which the
  next download of that name removes). A server that sends nothing for :data:`TIMEOUT_S` seconds, an HTTP
  error and a local write that fails (a full disk) each end the download with one message that says which.
* ``SHUFFLENET_WEIGHTS_MIRROR=<base URL>`` fetches ``<base URL>/<the URL's file name>`` instead of the
  public URL (a local or company mirror; the cache path and the hash check stay the same).
"""

from __future__ import annotations

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
from ..fileio import atomic_write

__all__ = [
    "MIRROR_ENV",
    "TIMEOUT_S",
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
#: Seconds without a byte from the server (connecting or mid-transfer) before a download is given up.
TIMEOUT_S = 30.0


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
    """One line on stderr, rewritten in place: MB done, of total, percent (at most every 5 %). ``last``:
    [the percent shown last, whether that line is still open (not ended by a newline)]."""
    pct = int(100 * done / total) if total else None
    if pct is not None and pct < last[0] + 5 and done != total:
        return
    last[0] = pct if pct is not None else last[0]
    text = f"{done / 1e6:.1f} MB" + (f" / {total / 1e6:.1f} MB ({pct}%)" if total else "")
    print(f"\r  {text}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    last[1] = done != total


class _LocalWriteError(Exception):
    """A write to the local file failed (kept apart from the network's errors, which are OSErrors too)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _fetch(src: str, f, progress: bool, last: list) -> str:
    """Stream ``src`` into the file ``f``; returns the sha256 hex digest. Raises on an incomplete transfer."""
    digest = hashlib.sha256()
    request = urllib.request.Request(src, headers={"User-Agent": "shufflenet"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        while True:
            block = response.read(_CHUNK)
            if not block:
                break
            try:
                f.write(block)
            except OSError as e:
                raise _LocalWriteError(e) from None
            digest.update(block)
            done += len(block)
            if progress:
                _progress(done, total, last)
    if total is not None and done != total:
        # http.client returns b"" when the server closes early instead of raising: check the size here.
        raise DownloadError(f"{src}: the transfer stopped after {done} of {total} bytes")
    return digest.hexdigest()


def _unreachable(url: str, src: str, dst: Path, reason: object, answered: bool = False) -> DownloadError:
    via = f" (through {MIRROR_ENV}={os.environ.get(MIRROR_ENV)})" if src != url else ""
    where = "the server answered" if answered else "without a network"
    return DownloadError(
        f"cannot download {src}{via}: {reason}; {where}, download {url} elsewhere and put it at "
        f"{dst} (it is picked up from there), or set {MIRROR_ENV} to a server that has {dst.name}"
    )


def _is_timeout(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError)


def download_weights(url: str, progress: bool = True, check_hash: bool = True) -> Path:
    """The cached file of ``url``, downloaded first if it is not there (see the module docstring)."""
    dst = cached_path(url)
    if dst.is_file():
        return dst
    src = mirrored_url(url)
    if progress:
        print(f"Downloading {src} to {dst}", file=sys.stderr, flush=True)
    last = [-5, False]
    try:
        _download(url, src, dst, progress, check_hash, last)
    except BaseException:
        if last[1]:  # end the progress line: the error message gets a line of its own
            print(file=sys.stderr, flush=True)
        raise
    return dst


def _download(url: str, src: str, dst: Path, progress: bool, check_hash: bool, last: list) -> None:
    try:
        # atomic_write: a temporary file beside dst (leftovers of killed earlier downloads removed first),
        # renamed onto dst only when the block below ends without an exception.
        with atomic_write(dst, "wb") as f:
            try:
                sha = _fetch(src, f, progress, last)
            except urllib.error.HTTPError as e:
                raise _unreachable(url, src, dst, f"HTTP {e.code} {e.reason}", answered=True) from None
            except (OSError, ValueError) as e:  # refused, reset connection, timeout, bad URL
                if isinstance(e, DownloadError):
                    raise
                if _is_timeout(e):
                    reason = f"the server sent nothing for {TIMEOUT_S:g} s (timed out)"
                elif isinstance(e, urllib.error.URLError):
                    reason = e.reason
                else:
                    reason = f"{type(e).__name__}: {e}"
                raise _unreachable(url, src, dst, reason) from None
            prefix = hash_prefix(dst.name)
            if check_hash and prefix is not None and not sha.startswith(prefix):
                raise DownloadError(
                    f"{src}: the downloaded file's sha256 starts with {sha[: len(prefix)]}, not {prefix} as its "
                    f"name says (a corrupt transfer or a different file on the server); nothing was kept"
                )
    except _LocalWriteError as e:
        raise DownloadError(
            f"{dst}: cannot write the download ({e.error.strerror or e.error}); nothing was kept"
        ) from None
    except DownloadError:
        raise
    except OSError as e:  # creating, syncing or renaming the local file (a full disk, no permission)
        raise DownloadError(f"{dst}: cannot write the download ({e.strerror or e}); nothing was kept") from None
