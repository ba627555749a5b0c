#!/usr/bin/env python3
"""Install detectron2 0.6's Python code (no C++ extension), patched for today's stack, into this environment.

No registry reachable here has a working detectron2: PyPI's ``pb1-detectron2==0.6`` is a 2022 copy of
upstream's Python code whose sdist lacks the C++ sources, so ``pip install`` fails while compiling. This
script downloads that sdist from the configured package index (checked against its SHA-256), applies the
small source patch listed in :data:`PATCHES` to the files it is about to install, packs the ``detectron2``
package (with the model-zoo configs) into a wheel without extensions and installs it with ``--no-deps``
(the project's ``detection`` extra lists the runtime dependencies). After that ``import detectron2`` and
everything the project uses work on their own, without the project; importing the project changes nothing
in detectron2.

The patch (each change is what upstream detectron2 later did, or the narrowest fix where it did not):

1. ``PIL.Image.LINEAR`` (removed in Pillow 10) -> ``Image.BILINEAR``, the same filter (upstream did this).
2. NumPy 2's removed aliases ``np.int`` / ``np.float`` / ``np.bool`` / ``np.object`` / ``np.str`` -> the builtins they
   always were (upstream did this), in the seven modules that use them.
3. The C++ extension ``detectron2._C`` is optional: the four modules that import it at import time fall back
   to a stand-in whose op lookup raises one clear ``RuntimeError`` naming the op and what needs it (rotated
   boxes, deformable convolution, the fast C++ COCO evaluation), and ``nms_rotated`` says the same.
4. ``detectron2.export`` imports its Caffe2 exporter only when caffe2 is installed (upstream did this).
5. ``engine.launch``: without CUDA, worker processes use gloo and no GPU (upstream did this).
6. ``engine.create_ddp_model``: a CPU model gets no ``device_ids`` (DDP refuses them for CPU modules).

A patched install carries ``detectron2/_shufflenet_patch.txt`` (what was changed). Run again, the script
does nothing when a patched copy or another detectron2 (e.g. upstream built from source) is importable, and
replaces an unpatched 0.6 copy; ``--force`` reinstalls. ``--list`` prints the patch and exits.
"""

from __future__ import annotations

import argparse
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
from typing import Callable, List, Optional, Tuple

NAME, VERSION = "pb1-detectron2", "0.6"
SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
MARKER = "_shufflenet_patch.txt"
SETUP_PY = """
from setuptools import find_packages, setup
setup(
    name="pb1-detectron2",
    version="0.6",
    description="detectron2 0.6 Python code without the C++ extension, patched for Pillow 10 / NumPy 2 / CPU "
    "(installed by shufflenet's scripts/install_detectron2.py)",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={"detectron2": ["_shufflenet_patch.txt"],
                  "detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.8",
)
"""

# --- the patch -------------------------------------------------------------------------------------------

MISSING_EXTENSION = '''"""Stand-in for detectron2's C++/CUDA extension ``detectron2._C`` when it is not built
(added by the install patch of shufflenet's scripts/install_detectron2.py). Looking up any op raises
``MissingExtensionError``."""

_USERS = {
    "box_iou_rotated": "rotated boxes (RotatedBoxes IoU)",
    "nms_rotated": "rotated boxes (nms_rotated)",
    "roi_align_rotated_forward": "rotated boxes (ROIAlignRotated)",
    "roi_align_rotated_backward": "rotated boxes (ROIAlignRotated)",
    "deform_conv_forward": "deformable convolution (DeformConv)",
    "deform_conv_backward_input": "deformable convolution (DeformConv)",
    "deform_conv_backward_filter": "deformable convolution (DeformConv)",
    "modulated_deform_conv_forward": "deformable convolution (ModulatedDeformConv)",
    "modulated_deform_conv_backward": "deformable convolution (ModulatedDeformConv)",
    "InstanceAnnotation": "the fast C++ COCO evaluation (COCOEvaluator(use_fast_impl=True))",
    "COCOevalEvaluateImages": "the fast C++ COCO evaluation (COCOEvaluator(use_fast_impl=True))",
    "COCOevalAccumulate": "the fast C++ COCO evaluation (COCOEvaluator(use_fast_impl=True))",
}


class MissingExtensionError(RuntimeError):
    """An op of detectron2's C++ extension, which this installation does not have."""


def message(name):
    return (
        f"detectron2 op '{name}' is unavailable: it lives in detectron2's C++/CUDA extension (detectron2._C), "
        f"which this installation (detectron2's Python code only) does not have. It is needed for "
        f"{_USERS.get(name, 'an op of the C++ extension')}; to use it, build detectron2 from source "
        f"(https://detectron2.readthedocs.io/en/latest/tutorials/install.html)."
    )


class _MissingExtension:
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise MissingExtensionError(message(name))


_C = _MissingExtension()
'''

_OPTIONAL_C = (
    "try:\n"
    "    from detectron2 import _C\n"
    "except ImportError:  # C++ extension not built (install patch)\n"
    "    from detectron2._missing_extension import _C\n"
)
_NUMPY_ALIAS = re.compile(r"\bnp\.(int|float|bool|object|str)\b(?![\w(])")


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        if text.count(old) != 1:
            raise SystemExit(f"install_detectron2: patch does not apply: expected one {old!r}")
        return text.replace(old, new)

    return edit


def _numpy_aliases(text: str) -> str:
    new, count = _NUMPY_ALIAS.subn(lambda m: m.group(1), text)
    if not count:
        raise SystemExit("install_detectron2: patch does not apply: no NumPy alias found")
    return new


_WORKER_OLD = """    assert torch.cuda.is_available(), "cuda is not available. Please check your installation."
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="NCCL","""
_WORKER_NEW = """    has_gpu = torch.cuda.is_available()  # install patch: gloo on CPU, as upstream
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="NCCL" if has_gpu else "GLOO","""
_SET_DEVICE_OLD = """    assert num_gpus_per_machine <= torch.cuda.device_count()
    torch.cuda.set_device(local_rank)
"""
_SET_DEVICE_NEW = """    if has_gpu:
        assert num_gpus_per_machine <= torch.cuda.device_count()
        torch.cuda.set_device(local_rank)
"""
_DDP_OLD = """    if "device_ids" not in kwargs:
        kwargs["device_ids"] = [comm.get_local_rank()]
"""
_DDP_NEW = """    on_cpu = all(p.device.type == "cpu" for p in model.parameters())  # install patch
    if "device_ids" not in kwargs and not on_cpu:  # DDP takes no device_ids for a CPU module
        kwargs["device_ids"] = [comm.get_local_rank()]
"""
_EXPORT_OLD = "from .api import *\n"
_EXPORT_NEW = (
    "try:  # install patch: the Caffe2 exporter only where caffe2 is installed, as upstream\n"
    "    from caffe2.proto import caffe2_pb2 as _tmp  # noqa\n"
    "except ImportError:\n"
    "    pass\n"
    "else:\n"
    "    from .api import *\n"
)
_NMS_OLD = "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)\n"
_NMS_NEW = (
    "    if not hasattr(torch.ops.detectron2, 'nms_rotated'):  # install patch: C++ extension not built\n"
    "        from detectron2._missing_extension import MissingExtensionError, message\n"
    "\n"
    "        raise MissingExtensionError(message('nms_rotated'))\n"
    "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)\n"
)

#: (file under detectron2/, what and why, edit). Applied in order; an edit that does not apply stops the install.
PATCHES: List[Tuple[str, str, Callable[[str], str]]] = [
    (
        "data/transforms/transform.py",
        "PIL.Image.LINEAR -> Image.BILINEAR (Pillow >= 10)",
        _replace("interp=Image.LINEAR", "interp=Image.BILINEAR"),
    ),
    *[
        (f, "np.int/float/bool/object/str -> builtins (NumPy 2)", _numpy_aliases)
        for f in (
            "data/build.py",
            "data/datasets/pascal_voc.py",
            "evaluation/pascal_voc_evaluation.py",
            "evaluation/sem_seg_evaluation.py",
            "structures/masks.py",
            "utils/video_visualizer.py",
            "utils/visualizer.py",
        )
    ],
    *[
        (
            f,
            "optional detectron2._C (stand-in with a clear error)",
            _replace("from detectron2 import _C\n", _OPTIONAL_C),
        )
        for f in (
            "layers/deform_conv.py",
            "layers/roi_align_rotated.py",
            "layers/rotated_boxes.py",
            "evaluation/fast_eval_api.py",
        )
    ],
    ("layers/nms.py", "nms_rotated: clear error without the C++ extension", _replace(_NMS_OLD, _NMS_NEW)),
    ("export/__init__.py", "Caffe2 exporter only with caffe2 (upstream)", _replace(_EXPORT_OLD, _EXPORT_NEW)),
    ("engine/launch.py", "launch: gloo and no GPU without CUDA (upstream)", _replace(_WORKER_OLD, _WORKER_NEW)),
    ("engine/launch.py", "launch: set the GPU only when there is one", _replace(_SET_DEVICE_OLD, _SET_DEVICE_NEW)),
    ("engine/defaults.py", "create_ddp_model: no device_ids for a CPU model", _replace(_DDP_OLD, _DDP_NEW)),
]


def apply_patch(package: Path) -> List[str]:
    """Patch the ``detectron2`` package folder ``package`` in place; returns the list written to the marker."""
    done = []
    for rel, what, edit in PATCHES:
        path = package / rel
        path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
        done.append(f"{rel}: {what}")
    (package / "_missing_extension.py").write_text(MISSING_EXTENSION, encoding="utf-8")
    done.append("_missing_extension.py: added (the stand-in for detectron2._C)")
    (package / MARKER).write_text(
        f"detectron2 {VERSION} from {NAME} {VERSION} (sha256 {SHA256}), patched by shufflenet's "
        "scripts/install_detectron2.py:\n" + "".join(f"- {line}\n" for line in done),
        encoding="utf-8",
    )
    return done


# --- install ---------------------------------------------------------------------------------------------


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


def installed() -> Optional[str]:
    """``None`` (no detectron2), ``"patched"`` (this script's copy), ``"unpatched-0.6"`` (an older install of the
    same sdist) or ``"other"`` (e.g. upstream built from source)."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    if (root / MARKER).is_file():
        return "patched"
    transform = root / "data" / "transforms" / "transform.py"
    if transform.is_file() and "interp=Image.LINEAR" in transform.read_text(encoding="utf-8"):
        return "unpatched-0.6"
    return "other"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="reinstall the patched 0.6 copy in any case")
    parser.add_argument("--list", action="store_true", help="print the source patch and exit")
    parser.add_argument("--sdist", metavar="FILE", help=f"use this {NAME}-{VERSION}.tar.gz instead of downloading")
    args = parser.parse_args(argv)
    if args.list:
        for rel, what, _ in PATCHES:
            print(f"detectron2/{rel}: {what}")
        print("detectron2/_missing_extension.py: added (the stand-in for detectron2._C)")
        return 0
    state = installed()
    if not args.force and state == "patched":
        print("install_detectron2: the patched detectron2 0.6 copy is installed; nothing to do")
        return 0
    if not args.force and state == "other":
        print("install_detectron2: a detectron2 is already importable (not the 0.6 copy); nothing to do")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = tmp / f"{NAME}-{VERSION}.tar.gz"
        if args.sdist:
            shutil.copyfile(args.sdist, archive)
        else:
            url = find_sdist_url()
            print(f"install_detectron2: downloading {url}")
            with urllib.request.urlopen(url, timeout=300) as r:
                archive.write_bytes(r.read())
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SHA256:
            raise SystemExit(f"install_detectron2: {archive.name} has SHA-256 {digest}, expected {SHA256}")
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
        src = tmp / f"{NAME}-{VERSION}"
        for line in apply_patch(src / "detectron2"):
            print(f"install_detectron2: patched {line}")
        (src / "setup.py").write_text(SETUP_PY)
        for extra in ("setup.cfg", "pyproject.toml"):
            if (src / extra).exists():
                (src / extra).unlink()
        shutil.rmtree(src / "pb1_detectron2.egg-info", ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", str(src)]
        if state is not None:
            cmd[4:4] = ["--force-reinstall"]
        subprocess.run(cmd, check=True)
    print("install_detectron2: installed detectron2 0.6 (Python code, no C++ extension, patched as listed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
