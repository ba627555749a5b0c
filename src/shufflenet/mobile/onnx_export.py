"""ONNX export (``--format onnx``, extra ``shufflenet[onnx]``): ``torch.onnx.export`` -> ``onnx.checker`` -> ONNX
Runtime. One file for every batch and resolution (dynamic axes). The channel shuffle becomes
Reshape/Transpose/Reshape. The TorchScript-based exporter (``dynamo=False``) writes dynamic axes directly and
takes seconds; the ``torch.export``-based one gives the same graph but needs ``onnxscript`` and a minute.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .artifact import Staged, filtered_stderr
from .quantize import ort_int8_for_onnx
from .rewrite import CameraInput, for_runtime
from .runtime import Job, Runtime, register
from .source import MobileError
from .verify import INT8_ATOL, INT8_FIDELITY_RTOL

__all__ = ["OPSET", "OnnxRuntime", "onnx_runner", "write_onnx"]

#: ONNX opset of the written files: supported by ONNX Runtime 1.14+ (desktop and mobile builds).
OPSET = 17


def onnx_runner(path: os.PathLike, threads: Optional[int] = None, optimize: bool = True) -> Callable[[Tensor], Any]:
    """An ONNX Runtime CPU session over ``path`` as a callable on torch tensors (``threads``: intra-op).
    ``optimize=False``: no graph optimization, so a QDQ (int8) file runs node by node in fp32 as the ONNX spec
    defines it (its own reference) instead of through the fused int8 kernels."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    else:  # a verification session: its idle pool threads must not spin while torch computes the reference
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: Tensor) -> Any:
        outs = session.run(None, {name: x.contiguous().numpy()})
        ts = [torch.from_numpy(o) for o in outs]
        return ts[0] if len(ts) == 1 else ts

    return run


FIDELITY = {"against": "eager fp32 model, real photos", "atol": INT8_ATOL, "rtol": INT8_FIDELITY_RTOL}
#: Dynamic input axes per input layout.
AXES = {
    "NCHW": {0: "batch", 2: "height", 3: "width"},
    "NHWC": {0: "batch", 1: "height", 2: "width"},  # camera frames
    "CHW": {1: "height", 2: "width"},  # one detector image
}


def write_onnx(
    form: nn.Module,
    example: Tensor,
    path: Path,
    output_names: Sequence[str],
    layout: str = "NCHW",
    shapes: str = "dynamic",
) -> None:
    """``torch.onnx.export`` of ``form`` (a module or a traced ScriptModule) into ``path`` with the ``layout``'s
    dynamic axes (``shapes="static"``: the batch only; ``"dynamo"``: the ``torch.export``-based exporter,
    static), then ``onnx.checker``."""
    import onnx

    outputs = list(output_names)
    spatial, dynamo = shapes == "dynamic", shapes == "dynamo"
    axes = AXES[layout] if spatial else {k: v for k, v in AXES[layout].items() if v == "batch"}
    dynamic_axes = {"input": axes}
    # the exporter's own output: tracer warnings on shape arithmetic, its deprecation notice, and (native, fd 1)
    # the "Torch IR graph at exception" dump of a failed dynamic-shape attempt, which the caller retries
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), filtered_stderr([""], fd=1):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                form,
                (example,),
                str(path),
                input_names=["input"],
                output_names=outputs,
                dynamic_axes=None if dynamo else dynamic_axes,
                opset_version=18 if dynamo else OPSET,
                do_constant_folding=True,
                dynamo=dynamo,
                **({"external_data": False} if dynamo else {}),  # one self-contained file (< 2 GB)
            )
        except Exception as e:  # the exporter raises several classes (SymbolicValueError, RuntimeError, ...)
            raise MobileError(f"torch.onnx.export failed: {str(e).splitlines()[0]}") from None
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise MobileError(f"onnx.checker refused the exported graph: {str(e).splitlines()[0]}") from None


class OnnxRuntime(Runtime):
    name = "onnx"
    title = f"ONNX Runtime (onnxruntime.InferenceSession; any ONNX runtime with opset {OPSET})"
    label = "ONNX Runtime"
    summary = "ONNX Runtime; extra 'onnx'"
    suffix = ".onnx"
    packages = ("onnx", "onnxruntime")
    extra = "onnx"
    layout = "nchw"
    int8 = "ONNX Runtime QDQ, quantize_static"
    int8_reference = "its QDQ graph in fp32 + fp32 model (fidelity)"
    int8_fidelity = True
    detector = True
    shuffle = "reshape"  #: ONNX has no channel-shuffle operator

    def write(self, job: Job, staged: Staged, work: Path) -> Tuple[Path, Dict[str, Any]]:
        """One file for every size (dynamic axes where the model allows). int8: the fp32 graph quantized (QDQ),
        checked against itself run node by node in fp32 and against the fp32 model (fidelity bound)."""
        spec, source, log = job.spec, job.source, job.log
        quantize_fn = job.quantizer(ort_int8_for_onnx)
        model = source.model.eval()
        form = job.form
        net = for_runtime(model, "onnx") if spec.rewrite and form is None else model
        if form is None:
            form = CameraInput(net, source.mean, source.std) if spec.camera else net
        outputs = job.outputs()
        layout = "CHW" if source.task == "detection" else ("NHWC" if spec.camera else "NCHW")
        output_names = job.extra.get("output_names")
        if output_names is None:
            output_names = ["logits"] if len(outputs) == 1 else [f"output{i}" for i in range(len(outputs))]
        name = f"{job.stem}.onnx"
        log(f"[export] {source.name}: torch.onnx.export (opset {OPSET}) of {type(form).__name__} ...")
        tmp = staged.tmp(name)
        graph = work / "fp32.onnx" if quantize_fn is not None else tmp
        spatial = _write_any(job, form, graph, output_names, layout)
        quantization = None
        fidelity: List[Dict[str, Any]] = []
        if quantize_fn is None:
            rows = job.verify(onnx_runner(tmp), self.label)
        else:
            log(f"[export] {source.name}: onnxruntime.quantization.quantize_static (QDQ int8) ...")
            quantization = quantize_fn(graph, tmp)
            int8 = onnx_runner(tmp)
            rows = job.verify(
                int8, "ONNX Runtime int8 kernels vs QDQ graph", reference=onnx_runner(tmp, optimize=False)
            )
            fidelity = job.verify_fidelity(int8, quantization, "ONNX Runtime int8 file")
        shape = "N x H x W x 3 (camera frame, RGB)" if spec.camera else "N x 3 x H x W"
        shape = "3 x H x W (one image)" if source.task == "detection" else shape
        axes = sorted(v for v in AXES[layout].values() if spatial or v == "batch")
        side = job.sidecar(
            self,
            job.input(shape, dynamic_axes=axes),
            outputs,
            rows,
            net is not model,
            **staged.entry(name),
            opset=OPSET,
            output_names=list(output_names),
            operators=_operators(tmp),
            quantization=quantization,
            **({"fidelity": {**FIDELITY, "checks": fidelity}} if quantization else {}),
        )
        if quantization:
            side["verification"]["reference"] = "the same QDQ file in ONNX Runtime with graph optimizations off"
        return staged.out_dir / name, side

    def load(self, files: Any, sidecar: Dict[str, Any], threads: Optional[int] = 1) -> Callable[[Tensor], Any]:
        return onnx_runner(files, threads=threads)

    def kernels(self) -> Dict[str, Any]:
        import onnxruntime as ort

        return {
            "kernels": "MLAS (CPUExecutionProvider)",
            "version": ort.__version__,
            "device": ort.get_device(),
            "providers": list(ort.get_available_providers()),
            "build_info": ort.get_build_info() if hasattr(ort, "get_build_info") else "not reported",
            "mlas_isa": "not reported",
        }


register(OnnxRuntime())


def _write_any(job: Job, form, path: Path, output_names, layout: str) -> bool:
    """:func:`write_onnx` with dynamic height/width, else (one size only) static; whether spatial axes are dynamic."""
    example, sizes, name, log = job.inputs[0].tensor, job.sizes, job.source.name, job.log
    try:
        write_onnx(form, example, path, output_names, layout)
        return True
    except MobileError as e:
        # e.g. torchvision's AlexNet: adaptive_avg_pool2d needs static sizes in this exporter
        if len(sizes) > 1:
            raise MobileError(f"{e}; with dynamic height and width -- export one --input-size per file") from None
        log(f"[export] {name}: no dynamic height/width ({str(e)[:80]}...); fixed {sizes[0][0]}x{sizes[0][1]}")
        try:
            write_onnx(form, example, path, output_names, layout, "static")
        except MobileError:  # e.g. an adaptive pool whose output size does not divide the input's
            log(f"[export] {name}: TorchScript-based exporter failed; torch.export-based one (static)")
            write_onnx(form, example, path, output_names, layout, "dynamo")
        return False


def _operators(path: Path) -> List[str]:
    import onnx

    return sorted({n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node})
