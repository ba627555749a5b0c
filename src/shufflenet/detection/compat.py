"""What the installed detectron2 can do, read without changing it.

Importing this package changes nothing in detectron2, Pillow, NumPy or torch. What detectron2 0.6's Python
code needs on today's stack (Pillow >= 10, NumPy 2, no C++ extension, CPU ``launch`` / DDP, no Caffe2) is
fixed when the project installs it: ``scripts/install_detectron2.py`` applies a small, listed source patch
to the files it installs, so ``import detectron2`` works on its own. An upstream detectron2 built from
source needs none of it.

What is left is done by the entry points, never at import:

* :func:`cpu_ddp` (used by the training entry point while it builds the trainer): upstream detectron2's
  ``create_ddp_model`` passes ``device_ids`` for a CPU model, which DDP refuses; for ``--num-gpus N``
  without CUDA the trainer is built with a ``create_ddp_model`` that omits them, and the original is put
  back as soon as the trainer exists.

:data:`HAS_COMPILED_OPS` tells whether the C++ extension is installed (``COCOEvaluator(use_fast_impl=...)``);
:func:`install_kind` says which detectron2 this is.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["HAS_COMPILED_OPS", "install_kind", "unpatched_reason", "cpu_ddp"]

#: The file the project's installer writes into the detectron2 package it patched.
PATCH_MARKER = "_shufflenet_patch.txt"
INSTALL_HINT = "run `python scripts/install_detectron2.py --force` (or install detectron2 from source)"


def _package_root() -> Path:
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("detectron2 is not installed: " + INSTALL_HINT)
    return Path(list(spec.submodule_search_locations)[0])


def _has_compiled_ops() -> bool:
    root = _package_root()
    return any(root.glob("_C.*.so")) or any(root.glob("_C.*.pyd")) or (root / "_C.so").is_file()


#: Whether detectron2's C++ extension is installed (found as a file: nothing is imported to find out).
HAS_COMPILED_OPS: bool = _has_compiled_ops()


def install_kind() -> str:
    """``"patched-0.6"`` (the project's installer), ``"unpatched-0.6"`` (the 0.6 copy installed without the
    patch: it fails on today's Pillow/NumPy), or ``"upstream"`` (any other detectron2, e.g. built from source)."""
    root = _package_root()
    if (root / PATCH_MARKER).is_file():
        return "patched-0.6"
    transform = root / "data" / "transforms" / "transform.py"
    if transform.is_file() and "interp=Image.LINEAR" in transform.read_text(encoding="utf-8"):
        return "unpatched-0.6"
    return "upstream"


def unpatched_reason() -> str:
    """Why an import of detectron2 failed when it is the unpatched 0.6 copy ("" otherwise)."""
    if install_kind() != "unpatched-0.6":
        return ""
    return (
        "the installed detectron2 is the 0.6 Python copy without the project's install patch (it needs "
        f"PIL.Image.LINEAR, NumPy's np.int and its C++ extension): {INSTALL_HINT}"
    )


@contextmanager
def cpu_ddp() -> Iterator[None]:
    """While the trainer is built: ``create_ddp_model`` leaves out ``device_ids`` for a CPU model in a
    multi-process run (DDP refuses them for CPU modules). Only where the installed detectron2 would pass them
    (upstream; the patched 0.6 copy already omits them), only when there is more than one process, and undone
    on exit."""
    import torch
    from detectron2.engine import defaults
    from detectron2.utils import comm

    original = defaults.create_ddp_model
    source = getattr(original, "__code__", None)
    already = source is not None and "on_cpu" in source.co_varnames
    if already or comm.get_world_size() == 1 or torch.cuda.is_available():
        yield
        return

    def create_ddp_model(model: torch.nn.Module, *, fp16_compression: bool = False, **kwargs: Any):
        if "device_ids" not in kwargs and all(p.device.type == "cpu" for p in model.parameters()):
            kwargs["device_ids"] = None  # DDP's own default for a CPU module
        return original(model, fp16_compression=fp16_compression, **kwargs)

    defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = original
