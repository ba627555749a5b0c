#!/usr/bin/env python3
"""Install detectron2's Python code (no C++ extension) into the current environment.

No registry reachable here has a working detectron2: PyPI's ``pb1-detectron2==0.6`` is a 2022 copy of
upstream's Python code whose sdist lacks the C++ sources, so ``pip install`` fails while compiling. This
script downloads that sdist from the configured package index (checked against its SHA-256), packs its
``detectron2`` package (with the model-zoo configs) into a wheel without extensions, and installs it with
``--no-deps`` (the project's ``detection`` extra lists the runtime dependencies). The project's
``shufflenet.detection.compat`` makes the missing ``detectron2._C`` and Pillow >= 10 harmless.

If a detectron2 is already importable (e.g. upstream built from source), nothing is done.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

NAME, VERSION = "pb1-detectron2", "0.6"
SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
SETUP_PY = """
from setuptools import find_packages, setup
setup(
    name="pb1-detectron2",
    version="0.6",
    description="detectron2 0.6 Python code without the C++ extension (installed by shufflenet's setup)",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.8",
)
"""


def index_url() -> str:
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
        )
        url = out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "https://pypi.org/simple"
    return url.rstrip("/")


def find_sdist_url() -> str:
    page_url = f"{index_url()}/{NAME}/"
    with urllib.request.urlopen(page_url, timeout=120) as r:
        html = r.read().decode()
    for href in re.findall(r'href="([^"]+)"', html):
        if href.split("#")[0].endswith(f"{NAME}-{VERSION}.tar.gz"):
            return urllib.parse.urljoin(page_url, href.split("#")[0])
    raise SystemExit(f"install_detectron2: {NAME}-{VERSION}.tar.gz not listed at {page_url}")


def main() -> int:
    if importlib.util.find_spec("detectron2") is not None:
        print("install_detectron2: detectron2 is already importable; nothing to do")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        url = find_sdist_url()
        archive = tmp / f"{NAME}-{VERSION}.tar.gz"
        print(f"install_detectron2: downloading {url}")
        with urllib.request.urlopen(url, timeout=300) as r:
            archive.write_bytes(r.read())
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SHA256:
            raise SystemExit(f"install_detectron2: {archive.name} has SHA-256 {digest}, expected {SHA256}")
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
        src = tmp / f"{NAME}-{VERSION}"
        (src / "setup.py").write_text(SETUP_PY)
        for extra in ("setup.cfg", "pyproject.toml"):
            if (src / extra).exists():
                (src / extra).unlink()
        shutil.rmtree(src / "pb1_detectron2.egg-info", ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", str(src)]
        subprocess.run(cmd, check=True)
    print("install_detectron2: installed detectron2 0.6 (Python code, no C++ extension)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
