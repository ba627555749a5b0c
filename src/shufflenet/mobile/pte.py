"""ExecuTorch export (``--format pte``): ``torch.export`` -> XNNPACK partitioner -> ``.pte``; extra
``pip install executorch==1.3.1`` (pairs with torch 2.12). Static shapes: one ``<stem>_<H>x<W>.pte`` per
``--input-size``, one sidecar ``<stem>.pte.json``.

A ShuffleNet is lowered in its XNNPACK-friendly form (:mod:`.rewrite`) so the partitioner takes the *whole*
network as one delegate, with an NHWC input (``dim_order`` channels_last) so the delegate needs no layout
conversion. ExecuTorch reads an input buffer in the program's dim order whatever the tensor's strides:
:func:`pte_runner` converts the input to that layout. The ``flatc`` console script of the wheel is found next
to ``sys.executable`` when the venv's ``bin`` is not on ``PATH`` (or set ``FLATC_EXECUTABLE``).
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .artifact import PYTREE_NOTICE, Staged, filtered_stderr, without_log_records
from .quantize import pt2e_int8_for_pte
from .rewrite import CameraInput, for_runtime
from .runtime import ExportSpec, Job, Runtime, per_sample, register, versions
from .source import MobileError

__all__ = ["PteRuntime", "executorch_available", "executorch_version", "pte_runner", "lower_to_pte", "DELEGATE_OPS"]

EXECUTORCH_PIN = "executorch==1.3.1"


#: ExecuTorch's harmless start-up chatter: its cpuinfo probe of ARM identification files (``midr``) that an
#: x86 host or a container does not have, and torch's deprecation notice for an Enum that torchao registers.
CPUINFO_CHATTER = (r"^\[cpuinfo_utils\.cpp:\d+\] ",)
THREADPOOL_NOTICE = (r"^\[threadpool\.cpp:\d+\] Resetting threadpool",)


def executorch_available() -> bool:
    try:
        with without_log_records(*PYTREE_NOTICE):
            import executorch.exir  # noqa: F401
            import executorch.runtime  # noqa: F401

        return True
    except Exception:
        return False


def executorch_version() -> Optional[str]:
    return versions("executorch")["executorch"]


def lower_to_pte(model: torch.nn.Module, example: Tensor) -> Tuple[bytes, List[str]]:
    """``torch.export`` at the example's static shape and layout, XNNPACK-lower, serialize; (bytes, op list)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(model, (example,))
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        program = edge.to_executorch()
    ops = sorted(
        {
            getattr(n.target, "__name__", None) or str(n.target)
            for n in program.exported_program().graph.nodes
            if n.op == "call_function"
        }
    )
    return bytes(program.buffer), ops


def _load_method(path: Path):
    from executorch.runtime import Runtime

    with filtered_stderr(CPUINFO_CHATTER):
        program = Runtime.get().load_program(str(path))
        return program.load_method("forward")


def set_threads(threads: int) -> None:
    """Size ExecuTorch's XNNPACK thread pool (its own, separate from torch's)."""
    try:
        with without_log_records(*PYTREE_NOTICE), filtered_stderr(CPUINFO_CHATTER + THREADPOOL_NOTICE):
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(int(threads))
    except Exception:  # pragma: no cover - older/newer runtimes without the hook
        pass


MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
#: Operators of a program that XNNPACK runs entirely.
DELEGATE_OPS = {"executorch_call_delegate", "getitem"}


def pte_runner(
    paths: Dict[Tuple[int, int], os.PathLike],
    threads: Optional[int] = None,
    memory_format: Any = "channels_last",
    camera: bool = False,
) -> Callable[[Tensor], Any]:
    """The static-shape (batch 1) programs of one model as a callable: picks the program by H x W, loops over
    N, and hands ExecuTorch the input in the layout it was exported with (``memory_format``: one name or
    ``{(H, W): name}``). ``camera``: inputs are ``N x H x W x 3`` frames."""
    if threads is not None:
        set_threads(threads)
    methods = {tuple(k): _load_method(Path(p)) for k, p in paths.items()}
    fmts = {k: MEMORY_FORMATS[memory_format[k] if isinstance(memory_format, dict) else memory_format] for k in methods}

    def run(x: Tensor) -> Any:
        key = tuple(x.shape[1:3] if camera else x.shape[-2:])
        if key not in methods:
            raise MobileError(f"no .pte program for input size {key[0]}x{key[1]} (have {sorted(methods)})")
        method, fmt = methods[key], fmts[key]
        prep = (lambda xi: xi.contiguous()) if camera else (lambda xi: xi.contiguous(memory_format=fmt))
        return per_sample(lambda xi: method.execute([prep(xi)]))(x)

    return run


class PteRuntime(Runtime):
    name = "pte"
    title = "ExecuTorch (executorch.runtime / Module API) with the XNNPACK backend"
    label = "ExecuTorch runtime"
    summary = "ExecuTorch + XNNPACK, the successor of the lite interpreter"
    suffix = ".pte"
    packages = ("executorch",)
    int8 = "PT2E, XNNPACKQuantizer"
    int8_reference = "PT2E int8 reference"

    def missing(self, spec: Optional[ExportSpec] = None) -> Optional[str]:
        if not executorch_available():
            return (
                f"--format pte needs ExecuTorch, which is optional and not installed: pip install {EXECUTORCH_PIN} "
                f"(pairs with torch {torch.__version__.split('+')[0]}; everything else works without it)"
            )
        if os.environ.get("FLATC_EXECUTABLE") or shutil.which("flatc"):
            return None
        beside = Path(sys.executable).parent / "flatc"
        if beside.is_file():
            os.environ["FLATC_EXECUTABLE"] = str(beside)
            return None
        return (
            "ExecuTorch needs its 'flatc' program to write XNNPACK programs, and none was found on PATH or beside "
            f"{sys.executable}: reinstall {EXECUTORCH_PIN} into this environment or set FLATC_EXECUTABLE=/path/to/flatc"
        )

    def refuse(self, spec: ExportSpec, task: str = "classification") -> Optional[str]:
        if spec.memory_format not in (*MEMORY_FORMATS, "auto", None):
            return f"--memory-format must be auto or one of {sorted(MEMORY_FORMATS)}, got {spec.memory_format!r}"
        return super().refuse(spec, task)

    def write(self, job: Job, staged: Staged, work: Path) -> Tuple[Dict[Tuple[int, int], Path], Dict[str, Any]]:
        """One verified ``.pte`` per size (batch 1, static shapes); int8: a PT2E module per size that the program
        must reproduce. NHWC input when XNNPACK takes the whole program, else NCHW (``spec.memory_format``)."""
        spec, source, log = job.spec, job.source, job.log
        quantize_fn = job.quantizer(pt2e_int8_for_pte)
        model = source.model.eval()
        net = for_runtime(model, "pte") if spec.rewrite and quantize_fn is None else model
        form = CameraInput(net, source.mean, source.std) if spec.camera else net
        checks: List[Dict[str, Any]] = []
        files_out: Dict[str, Dict[str, Any]] = {}
        ops: set = set()
        outputs: Optional[List[List[int]]] = None
        for size in job.sizes:
            tag = f"{size[0]}x{size[1]}"
            log(f"[export] {source.name} @ {tag}: torch.export -> XNNPACK partitioner -> .pte ...")
            inputs = [i for i in job.inputs if i.size == size]
            ref_fn = job.reference
            if spec.camera:
                fmt_name, data, size_ops = "contiguous", *lower_to_pte(form, inputs[0].tensor)
            else:
                fmt_name, ref_fn, data, size_ops = _lower_classifier(
                    model, form, size, spec.memory_format or "auto", quantize_fn
                )
            name = f"{job.stem}_{tag}.pte"
            tmp = staged.tmp(name)
            tmp.write_bytes(data)
            run = pte_runner({size: tmp}, memory_format=fmt_name, camera=spec.camera)
            checks += job.verify(run, self.label, reference=per_sample(ref_fn), inputs=inputs)
            if outputs is None:  # output shapes at the first size, from that size's reference (static shapes)
                outputs = job.outputs(ref_fn, inputs[0].tensor[:1])
            ops |= set(size_ops)
            files_out[tag] = {
                **staged.entry(name),
                "memory_format": fmt_name,
                "outside_delegate": sorted(set(size_ops) - DELEGATE_OPS),
            }
        formats = sorted({f["memory_format"] for f in files_out.values()})
        shape = (
            "1 x H x W x 3 camera frame, RGB (static per file)" if spec.camera else "1 x 3 x H x W (static per file)"
        )
        side = job.sidecar(
            self,
            job.input(shape, memory_format=formats[0] if len(formats) == 1 else "per file"),
            outputs,
            checks,
            net is not model,
            files=files_out,
            operators=sorted(ops),
            quantization="int8 PT2E XNNPACKQuantizer (static, per-channel weights)" if quantize_fn else None,
        )
        log(f"[export] ops outside XNNPACK: {sorted(ops - DELEGATE_OPS)}")
        return {s: staged.out_dir / f"{job.stem}_{s[0]}x{s[1]}.pte" for s in job.sizes}, side

    def load(self, files: Any, sidecar: Dict[str, Any], threads: Optional[int] = 1) -> Callable[[Tensor], Any]:
        formats = {tuple(int(v) for v in tag.split("x")): f["memory_format"] for tag, f in sidecar["files"].items()}
        return pte_runner(files, threads=threads, memory_format=formats)

    def kernels(self) -> Dict[str, Any]:
        from executorch.extension.pybindings import portable_lib

        return {
            "kernels": "XNNPACK delegate + ExecuTorch portable kernels",
            "registered_backends": list(portable_lib._get_registered_backend_names()),
            "xnnpack_isa": "not reported",
        }


register(PteRuntime())


def _lower_classifier(model, form, size, memory_format: str, quantize_fn):
    """Lower at ``size`` in the requested layout; ``auto`` falls back to NCHW when kernels outside the
    XNNPACK delegate remain (the portable kernels want NCHW). (layout, reference, program bytes, operators)."""
    fmt_name = memory_format if memory_format != "auto" else ("channels_last" if quantize_fn is None else "contiguous")
    for _ in range(2):
        example = torch.randn(1, 3, *size).contiguous(memory_format=MEMORY_FORMATS[fmt_name])
        ref_fn = quantize_fn(model, example) if quantize_fn is not None else model
        data, size_ops = lower_to_pte(ref_fn if quantize_fn is not None else form, example)
        if memory_format != "auto" or fmt_name == "contiguous" or not set(size_ops) - DELEGATE_OPS:
            break
        fmt_name = "contiguous"
    return fmt_name, ref_fn, data, size_ops
