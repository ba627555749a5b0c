"""Small compatibility layer between detectron2 0.6's Python code and this environment.

Applied once, when :mod:`shufflenet.detection` is imported (``apply()`` is idempotent). Every shim is
only installed where the environment needs it, so the same project code runs unchanged on an upstream
detectron2 built from source (where most of these shims are no-ops).

What is shimmed, and why
------------------------
1. ``detectron2._C`` (the C++/CUDA extension) is absent when detectron2 is installed from its Python code
   (``scripts/install_detectron2.py``). Three detectron2 modules do ``from detectron2 import _C`` at import
   time, so ``import detectron2.layers`` fails. We set ``detectron2._C`` to a stub whose attribute access
   raises :class:`MissingCompiledOpError` naming the op and what needs it (rotated boxes, deformable
   convolution, the fast C++ COCO evaluation). This project uses none of them. The stub is an attribute
   only (not in ``sys.modules``), so ``import detectron2._C`` still fails and ``collect_env`` still reports
   "not compiled". ``nms_rotated`` goes through ``torch.ops.detectron2`` instead and gets the same message.
2. Pillow >= 10 removed ``PIL.Image.LINEAR``; detectron2 0.6 uses it as a default argument in
   ``data/transforms/transform.py`` (upstream later switched to ``BILINEAR``). Only when the installed
   detectron2's source uses ``Image.LINEAR`` *and* Pillow lacks it is it aliased to
   ``Image.Resampling.BILINEAR`` (the same filter); an upstream install gets no global side effect.
3. NumPy 2 removed ``np.int``/``np.float``/``np.object``; detectron2 0.6 uses them in
   ``data/build.py`` (class histogram printed for every training set) and the semantic-segmentation /
   VOC evaluators. Only the modules whose installed source still uses a removed alias (and only when
   NumPy lacks it) get a numpy proxy that maps the aliases to the builtins; numpy itself is left untouched.
4. ``detectron2.export``'s package ``__init__`` imports the Caffe2 exporter (``caffe2``, ``onnx``) that
   torch no longer ships; upstream later made that import optional. Without caffe2 we import the package
   the way upstream does now: ``TracingAdapter``, ``scripting_with_instances`` and ``dump_torchscript_IR``
   (the TorchScript support), no Caffe2 exporter.
5. ``detectron2.engine.launch`` 0.6 asserts CUDA and hard-codes NCCL; upstream later falls back to gloo on
   CPU. Without CUDA, the per-process worker below does the same (``--num-gpus N`` then means N CPU
   processes), and ``create_ddp_model`` does not pass ``device_ids`` for a CPU model (DDP rejects them).
6. torch >= 2.6 loads with ``weights_only=True`` by default; fvcore's ``Checkpointer._load_file`` relies on
   the default. detectron2's own checkpoints (model, optimizer, scheduler, iteration) load fine that way,
   so nothing is changed; the detection wing reads foreign files itself (``checkpoint.py``).

``HAS_COMPILED_OPS`` tells the rest of the wing whether the real extension is present (the evaluator then
uses ``COCOEvaluator(use_fast_impl=HAS_COMPILED_OPS)``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
import types
from datetime import timedelta
from typing import Any, List

from ..errors import ShuffleNetError

__all__ = ["apply", "HAS_COMPILED_OPS", "MissingCompiledOpError", "applied_shims"]

logger = logging.getLogger(__name__)

HAS_COMPILED_OPS: bool = False
_APPLIED: List[str] = []
_DONE = False

# What needs each op of detectron2._C (for the error message).
_OP_USERS = {
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


class MissingCompiledOpError(ShuffleNetError, RuntimeError):
    """A detectron2 op that lives in the C++ extension ``detectron2._C``, which is not installed (a request
    this installation cannot serve: one ``error:`` line from the CLIs, like every project error)."""


def _missing_op_message(name: str) -> str:
    used_by = _OP_USERS.get(name, "an op of detectron2's C++ extension")
    return (
        f"detectron2 op '{name}' is unavailable: it lives in detectron2's C++/CUDA extension "
        f"(detectron2._C), which this installation does not have (scripts/install_detectron2.py installs "
        f"detectron2's Python code only). It is needed for {used_by}; rotated boxes, deformable convolution "
        f"and the fast C++ COCO evaluation all need that extension, and ShuffleNet detection uses none of "
        f"them. To use them, build detectron2 from source "
        f"(https://detectron2.readthedocs.io/en/latest/tutorials/install.html)."
    )


class _MissingExtension(types.ModuleType):
    """Stands in for ``detectron2._C``: any op lookup raises :class:`MissingCompiledOpError`."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # introspection (copy, pickle, inspect) sees a plain module
        raise MissingCompiledOpError(_missing_op_message(name))


class _NumpyWithRemovedAliases(types.ModuleType):
    """numpy, plus the aliases NumPy 2 removed (``np.int`` -> ``int`` ...), for detectron2 0.6 modules."""

    _ALIASES = {"int": int, "float": float, "object": object, "bool": bool, "complex": complex, "str": str}

    def __init__(self, np_module: types.ModuleType) -> None:
        super().__init__("numpy")
        self._np = np_module

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._np, name)
        except AttributeError:
            if name in self._ALIASES:
                return self._ALIASES[name]
            raise


def _shim_missing_extension() -> None:
    global HAS_COMPILED_OPS
    import detectron2

    try:
        importlib.import_module("detectron2._C")
        HAS_COMPILED_OPS = True
        return
    except ImportError:
        HAS_COMPILED_OPS = False
    if not isinstance(getattr(detectron2, "_C", None), _MissingExtension):
        detectron2._C = _MissingExtension("detectron2._C")  # attribute only: see module docstring
    _APPLIED.append("detectron2._C stub (C++ extension not installed)")


def module_source(name: str) -> str:
    """The installed source text of ``detectron2.<...>`` module ``name``, read without importing it (a
    ``find_spec`` of a submodule would import its parent packages, which is what fails); "" if absent."""
    top, _, rest = name.partition(".")
    spec = importlib.util.find_spec(top)
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        base = os.path.join(root, *rest.split(".")) if rest else root
        for path in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return f.read()
    return ""


#: detectron2 modules that (in 0.6) use ``PIL.Image.LINEAR`` / NumPy's removed aliases.
PILLOW_USERS = ("detectron2.data.transforms.transform",)
NUMPY_ALIAS_USERS = (
    "detectron2.data.build",
    "detectron2.evaluation.sem_seg_evaluation",
    "detectron2.evaluation.pascal_voc_evaluation",
)
_NUMPY_ALIAS_USE = re.compile(r"\bnp\.(int|float|object|bool|complex|str)\b(?![\w(])")


def needs_pillow_alias() -> bool:
    """Whether the installed detectron2 uses ``Image.LINEAR`` and the installed Pillow lacks it."""
    from PIL import Image

    return not hasattr(Image, "LINEAR") and any("Image.LINEAR" in module_source(m) for m in PILLOW_USERS)


def modules_needing_numpy_aliases() -> List[str]:
    """The detectron2 modules whose installed source uses an alias the installed NumPy removed."""
    import numpy as np

    out = []
    for name in NUMPY_ALIAS_USERS:
        used = {m.group(1) for m in _NUMPY_ALIAS_USE.finditer(module_source(name))}
        if any(not hasattr(np, alias) for alias in used):
            out.append(name)
    return out


def _shim_pillow() -> None:
    if needs_pillow_alias():
        from PIL import Image

        Image.LINEAR = Image.Resampling.BILINEAR
        _APPLIED.append("PIL.Image.LINEAR -> Image.Resampling.BILINEAR (detectron2 0.6 uses it; Pillow >= 10)")


def _shim_numpy_aliases() -> None:
    import numpy as np

    names = modules_needing_numpy_aliases()
    if not names:
        return
    proxy = _NumpyWithRemovedAliases(np)
    for name in names:
        module = importlib.import_module(name)
        if getattr(module, "np", None) is np:
            module.np = proxy
    _APPLIED.append(f"np.int/np.float/np.object inside {', '.join(names)} (detectron2 0.6 uses them; NumPy 2)")


def _unavailable_nms_rotated(*args: Any, **kwargs: Any) -> Any:
    raise MissingCompiledOpError(_missing_op_message("nms_rotated"))


def _shim_nms_rotated() -> None:
    if HAS_COMPILED_OPS:
        return
    import torch

    try:
        torch.ops.detectron2.nms_rotated  # noqa: B018 (registered by the C++ extension only)
        return
    except (AttributeError, RuntimeError):
        pass
    layers = importlib.import_module("detectron2.layers")
    # Not `import detectron2.layers.nms as nms`: that binds the package attribute `nms`, which is
    # the nms *function* detectron2.layers re-exports, not the module.
    nms_module = importlib.import_module("detectron2.layers.nms")
    nms_module.nms_rotated = _unavailable_nms_rotated  # batched_nms_rotated looks it up here
    layers.nms_rotated = _unavailable_nms_rotated
    _APPLIED.append("detectron2.layers.nms_rotated: clear error (C++ op not installed)")


def _shim_export_package() -> None:
    """Import ``detectron2.export`` without its optional Caffe2 exporter (as upstream does today)."""
    if "detectron2.export" in sys.modules:
        return
    try:
        importlib.import_module("detectron2.export")
        return
    except ImportError as e:
        missing = (getattr(e, "name", None) or "").split(".")[0]
        if missing not in ("caffe2", "onnx"):
            raise
    for name in [n for n in sys.modules if n == "detectron2.export" or n.startswith("detectron2.export.")]:
        del sys.modules[name]  # drop the half-imported package
    spec = importlib.util.find_spec("detectron2.export")
    package = importlib.util.module_from_spec(spec)  # a package module whose __init__ is not run
    sys.modules["detectron2.export"] = package
    import detectron2

    detectron2.export = package
    flatten = importlib.import_module("detectron2.export.flatten")
    torchscript = importlib.import_module("detectron2.export.torchscript")
    package.TracingAdapter = flatten.TracingAdapter
    package.scripting_with_instances = torchscript.scripting_with_instances
    package.dump_torchscript_IR = torchscript.dump_torchscript_IR
    package.__all__ = ["TracingAdapter", "scripting_with_instances", "dump_torchscript_IR"]
    _APPLIED.append("detectron2.export without the Caffe2 exporter (caffe2/onnx not installed)")


def _distributed_worker(
    local_rank: int,
    main_func: Any,
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta = timedelta(minutes=30),
) -> None:
    """detectron2's per-process launch worker, with upstream's later CPU fallback (gloo, no CUDA)."""
    import torch
    import torch.distributed as dist
    from detectron2.utils import comm

    apply()  # a spawned process starts from a fresh interpreter
    has_gpu = torch.cuda.is_available()
    if has_gpu:
        assert num_gpus_per_machine <= torch.cuda.device_count()
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="NCCL" if has_gpu else "GLOO",
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logging.getLogger("detectron2").error(f"Process group URL: {dist_url}")
        raise
    assert comm._LOCAL_PROCESS_GROUP is None  # detectron2 0.6 keeps the local group here
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        ranks_on_i = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        pg = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = pg
    if has_gpu:
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def _shim_launch_on_cpu() -> None:
    import torch

    launch_module = importlib.import_module("detectron2.engine.launch")
    if torch.cuda.is_available() or launch_module._distributed_worker is _distributed_worker:
        return
    source = getattr(launch_module._distributed_worker, "__code__", None)
    if source is not None and "GLOO" in source.co_consts:  # upstream already falls back to gloo
        return
    launch_module._distributed_worker = _distributed_worker
    _APPLIED.append("detectron2.engine.launch: gloo on CPU (no CUDA)")


def _shim_cpu_ddp() -> None:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    defaults = importlib.import_module("detectron2.engine.defaults")
    original = defaults.create_ddp_model
    if getattr(original, "_shufflenet_cpu_ddp", False):
        return

    def create_ddp_model(model: torch.nn.Module, *, fp16_compression: bool = False, **kwargs: Any):
        from detectron2.utils import comm

        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        if comm.get_world_size() == 1 or not on_cpu or "device_ids" in kwargs:
            return original(model, fp16_compression=fp16_compression, **kwargs)
        return DistributedDataParallel(model, **kwargs)  # CPU module: DDP takes no device_ids

    create_ddp_model._shufflenet_cpu_ddp = True
    create_ddp_model.__doc__ = original.__doc__
    defaults.create_ddp_model = create_ddp_model
    engine = importlib.import_module("detectron2.engine")
    if getattr(engine, "create_ddp_model", None) is original:
        engine.create_ddp_model = create_ddp_model
    _APPLIED.append("detectron2.engine.create_ddp_model: no device_ids for a CPU model")


def apply() -> List[str]:
    """Install the shims this environment needs (once); returns their descriptions."""
    global _DONE
    if _DONE:
        return list(_APPLIED)
    _shim_missing_extension()
    _shim_pillow()
    _shim_export_package()
    _shim_nms_rotated()
    _shim_numpy_aliases()
    _shim_launch_on_cpu()
    _shim_cpu_ddp()
    _DONE = True
    if _APPLIED:
        logger.debug("shufflenet.detection.compat: %s", "; ".join(_APPLIED))
    return list(_APPLIED)


def applied_shims() -> List[str]:
    return list(_APPLIED)
