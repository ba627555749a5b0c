"""LiteRT export (``--format tflite``, extra ``shufflenet[litert]``): ``litert-torch`` -> ``.tflite``, verified in
``ai_edge_litert``'s ``Interpreter`` (one thread, default XNNPACK delegate).

Input ``1 x H x W x 3`` float32 (NHWC, normalized) through ``litert_torch.to_channel_last_io``, which the
converter folds into its layout pass. Static shapes: one ``<stem>_<H>x<W>.tflite`` per size, one sidecar.
int8 (:func:`tflite_int8`): full integer through litert-torch's PT2E path; the file takes and returns int8
(scale/zero point in the sidecar, applied by :func:`tflite_runner`) and is verified against its converted
PT2E module.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import platform
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from unittest import mock

import torch
from torch import Tensor, nn

from .artifact import PYTREE_NOTICE, Staged, filtered_stderr, without_log_records
from .quantize import calibration_batch, resolve_calib_dir
from .rewrite import for_runtime
from .runtime import ExportSpec, Job, Runtime, per_sample, register
from .source import MobileError, ModelSource

__all__ = ["TfliteRuntime", "LITERT_EXTRA", "tflite_runner", "convert_to_tflite", "tflite_int8"]

LITERT_EXTRA = 'pip install "shufflenet[litert]"'

#: What the converter and the runtime write to file descriptor 2 on every call and that says nothing to the
#: user: absl's "before InitializeLog" notice, its INFO/WARNING lines (the MAC estimate, the MLIR quantizer's
#: "missing quantization parameter" notes on the reshapes of the shuffle), the XNNPACK delegate's creation.
LITERT_CHATTER = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
    r"^[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\]",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate",
    r"^\s*$",
)


def _missing_litert() -> Optional[str]:
    """One error line naming the extra when ``litert-torch`` or ``ai-edge-litert`` is missing."""
    missing = []
    for mod, pkg in (("litert_torch", "litert-torch"), ("ai_edge_litert.interpreter", "ai-edge-litert")):
        try:
            with _quiet_import():
                __import__(mod)
        except ImportError:
            missing.append(pkg)
    if missing:
        return (
            f"--format tflite needs {' and '.join(missing)} (optional, not installed): "
            f"{LITERT_EXTRA} (litert-torch, ai-edge-litert)"
        )
    if importlib.util.find_spec("litert_converter") is None:  # imported by litert-torch only when converting
        return (
            "--format tflite needs litert-converter (litert-torch's converter, not installed; it has x86-64 Linux "
            f"and arm64 macOS wheels only, none for {platform.machine()} Linux): {LITERT_EXTRA} on an x86-64 machine, "
            "and run the .tflite files here with ai-edge-litert"
        )
    return None


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    with without_log_records(*PYTREE_NOTICE), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _interpreter(path: os.PathLike, threads: Optional[int] = 1, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with filtered_stderr(LITERT_CHATTER):
        it = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=kind)
        it.allocate_tensors()
    return it


def _one_file_runner(path: os.PathLike, threads: Optional[int]) -> Callable[[Tensor], Any]:
    """A batch-1 NHWC interpreter as a callable on ``1 x H x W x 3`` float tensors (int8 files: quantized in,
    dequantized out with the file's own scale and zero point)."""
    import numpy as np

    it = _interpreter(path, threads)
    inp = it.get_input_details()[0]
    outs = it.get_output_details()

    def run(x: Tensor) -> Any:
        a = x.detach().contiguous().numpy()
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            a = np.clip(np.round(a / scale) + zero, info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], a)
        it.invoke()
        res = []
        for o in outs:
            v = it.get_tensor(o["index"])
            if o["dtype"] != np.float32:
                scale, zero = o["quantization"]
                v = (v.astype(np.float32) - zero) * scale
            res.append(torch.from_numpy(np.array(v, dtype=np.float32)))
        return res[0] if len(res) == 1 else tuple(res)

    return run


def tflite_runner(
    paths: Dict[Tuple[int, int], os.PathLike] | os.PathLike, threads: Optional[int] = 1, layout: str = "nchw"
) -> Callable[[Tensor], Any]:
    """LiteRT interpreters over the static-shape, batch-1 ``.tflite`` files of one model (``{(H, W): path}``
    or one path) as a callable: picks the file by H x W, loops over N. ``layout="nchw"`` takes ``N x 3 x H x W``
    and hands LiteRT its NHWC view (free for a channels_last tensor); ``"nhwc"`` takes ``N x H x W x 3``."""
    if layout not in ("nchw", "nhwc"):
        raise MobileError(f"tflite_runner: layout must be 'nchw' or 'nhwc', got {layout!r}")
    if not isinstance(paths, dict):
        paths = {None: paths}
    runs = {k: _one_file_runner(p, threads) for k, p in paths.items()}

    def run(x: Tensor) -> Any:
        nhwc = x.permute(0, 2, 3, 1) if layout == "nchw" else x
        key = tuple(int(v) for v in nhwc.shape[1:3])
        fn = runs.get(key, runs.get(None))
        if fn is None:
            raise MobileError(f"no .tflite file for input size {key[0]}x{key[1]} (have {sorted(runs)})")
        return per_sample(fn)(nhwc)

    return run


@contextlib.contextmanager
def _converter_quiet() -> Iterator[None]:
    """litert-torch's progress lines off (its own switch, restored after), warnings and C++ chatter filtered."""
    with mock.patch.dict(os.environ, {"LITERT_TORCH_SHOW_PROGRESS": "n"}), _quiet_import():
        with filtered_stderr(LITERT_CHATTER):
            yield


def nhwc_form(net: nn.Module) -> nn.Module:
    """``net`` behind litert-torch's channel-last input wrapper (takes ``N x H x W x 3``)."""
    import litert_torch

    return litert_torch.to_channel_last_io(net, args=[0]).eval()


def convert_to_tflite(form: nn.Module, example: Tensor, quantizer: Any = None) -> bytes:
    """``litert_torch.convert`` of ``form`` at ``example``'s static shape; the flatbuffer's bytes.
    ``quantizer``: the PT2EQuantizer a PT2E-converted ``form`` was quantized with (static int8)."""
    import litert_torch

    kw: Dict[str, Any] = {}
    if quantizer is not None:
        from litert_torch.quantize.quant_config import QuantConfig

        kw["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
    # the PT2E module was captured in eval mode (BatchNorm with running statistics); an exported module keeps
    # training=True, which litert-torch warns about
    with _converter_quiet(), without_log_records("root", r"is converted in training mode"):
        try:
            edge = litert_torch.convert(form, (example,), **kw)
            return bytes(edge.model_content())
        except Exception as e:  # the converter raises many classes (lowering, MLIR, torch.export errors)
            first = (str(e).strip().splitlines() or [""])[0]
            raise MobileError(f"litert-torch could not convert the model: {type(e).__name__}: {first}") from None


def _export_for_quantization(model: nn.Module, example: Tensor) -> nn.Module:
    """``torch.export`` for PT2E, strict (TorchDynamo) first: the quantizer finds ``add`` + ``relu`` by the source
    partitions only strict export records; without them the residual ``relu(x + branch)`` and the head's mean
    stayed float between DEQUANTIZE and QUANTIZE (measured: 13 float ADDs in ShuffleNet 0.25x g3)."""
    try:
        return torch.export.export(model, (example,), strict=True).module()
    except Exception:  # a model TorchDynamo cannot trace: non-strict export (then some ops may stay float)
        return torch.export.export(model, (example,)).module()


def tflite_int8(
    source: ModelSource, calib_images: Any = "auto", count: int = 64, size: Optional[Tuple[int, int]] = None
) -> Callable[[nn.Module, Tensor], Tuple[nn.Module, Any]]:
    """A ``quantize_fn(nhwc_model, example) -> (converted PT2E module, quantizer)`` for :func:`export_tflite`:
    full-integer static int8 (symmetric per-channel weights, per-tensor activations), calibrated on ``count``
    real images of ``calib_images`` (default: the package's sample photos), resized to each exported size."""
    calib_dir = resolve_calib_dir(calib_images)
    calibration_batch(calib_dir, 1, size or (32, 32), source.mean, source.std)  # fail early on a bad folder

    def quantize_fn(model: nn.Module, example: Tensor) -> Tuple[nn.Module, Any]:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        hw = tuple(int(v) for v in example.shape[1:3])
        batch = calibration_batch(calib_dir, count, hw, source.mean, source.std).permute(0, 2, 3, 1)
        with _quiet_import():
            gm = _export_for_quantization(copy.deepcopy(model).eval(), example)
            quantizer = PT2EQuantizer().set_global(
                get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
            )
            prepared = prepare_pt2e(gm, quantizer)
            with torch.no_grad():
                for i in range(batch.shape[0]):  # static batch-1 graph
                    prepared(batch[i : i + 1].contiguous())
            converted = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
        quantize_fn.calibration = {"dir": str(calib_dir), "images": int(batch.shape[0]), "size": list(hw)}
        return converted, quantizer

    quantize_fn.calibration = None  # type: ignore[attr-defined]  # set by each call: what was calibrated on
    return quantize_fn


def _describe(path: Path) -> Tuple[List[str], List[str], Dict[str, Any]]:
    """Read without delegates: every builtin operator (what a LiteRT build must provide), those that still
    compute in float32 (between DEQUANTIZE and QUANTIZE), and the input/output dtypes and quantization."""
    it = _interpreter(path, 1, delegates=False)
    dtypes = {d["index"]: d["dtype"].__name__ for d in it.get_tensor_details()}
    ops = it._get_ops_details()
    floats = {
        d["op_name"]
        for d in ops
        if d["op_name"] not in ("DEQUANTIZE", "QUANTIZE") and any(dtypes.get(i) == "float32" for i in d["outputs"])
    }

    def desc(d: Dict[str, Any]) -> Dict[str, Any]:
        scale, zero = d["quantization"]
        out: Dict[str, Any] = {"dtype": d["dtype"].__name__, "shape": [int(v) for v in d["shape"]]}
        if scale:
            out.update(scale=float(scale), zero_point=int(zero))
        return out

    io = {"input": desc(it.get_input_details()[0]), "outputs": [desc(d) for d in it.get_output_details()]}
    return sorted({d["op_name"] for d in ops}), sorted(floats), io


class TfliteRuntime(Runtime):
    name = "tflite"
    title = "LiteRT / TensorFlow Lite (ai_edge_litert Interpreter or the LiteRT CompiledModel API; XNNPACK on CPU)"
    label = "LiteRT interpreter"
    summary = "LiteRT, NHWC input; extra 'litert'"
    suffix = ".tflite"
    packages = ("litert-torch", "ai-edge-litert")
    int8 = "LiteRT full integer, PT2E litert-torch"
    int8_reference = "PT2E int8 reference"
    camera = False

    def missing(self, spec: Optional[ExportSpec] = None) -> Optional[str]:
        return _missing_litert()

    def refuse(self, spec: ExportSpec, task: str = "classification") -> Optional[str]:
        if spec.camera:
            return "--format tflite takes float32 NHWC tensors (1 x H x W x 3, normalized; no --camera-input)"
        return super().refuse(spec, task)

    def write(self, job: Job, staged: Staged, work: Path) -> Tuple[Dict[Tuple[int, int], Path], Dict[str, Any]]:
        """One verified ``<stem>_<H>x<W>.tflite`` per size (NHWC float32 input, batch 1), converted from the
        runtime's equivalent form and checked against the model; int8 (:func:`tflite_int8`): full integer,
        checked against its own converted PT2E module."""
        spec, source, log = job.spec, job.source, job.log
        quantize_fn = job.quantizer(tflite_int8)
        model = source.model.eval()
        # int8 quantizes the rewritten form too (fewer ops: the shortcut pool is a conv, not PAD + AVERAGE_POOL_2D)
        net = for_runtime(model, "tflite") if spec.rewrite else model
        form = nhwc_form(net)
        checks: List[Dict[str, Any]] = []
        files_out: Dict[str, Dict[str, Any]] = {}
        ops: set = set()
        outputs: Optional[List[List[int]]] = None
        float_ops: set = set()
        precision = "int8" if quantize_fn is not None else "fp32"
        for size in job.sizes:
            tag = f"{size[0]}x{size[1]}"
            log(f"[export] {source.name} @ {tag}: litert-torch convert ({precision}, NHWC input) -> .tflite ...")
            inputs = [i for i in job.inputs if i.size == size]
            ref_fn = job.reference
            example = torch.randn(1, *size, 3)
            if quantize_fn is not None:
                qmodel, quantizer = quantize_fn(form, example)
                data = convert_to_tflite(qmodel, example, quantizer)
                ref_fn = per_sample(lambda x, q=qmodel: q(x.permute(0, 2, 3, 1).contiguous()))
            else:
                data = convert_to_tflite(form, example)
            name = f"{job.stem}_{tag}.tflite"
            tmp = staged.tmp(name)
            tmp.write_bytes(data)
            checks += job.verify(tflite_runner(tmp), self.label, reference=ref_fn, inputs=inputs)
            outputs = outputs or job.outputs(ref_fn, inputs[0].tensor[:1])
            size_ops, size_floats, io = _describe(tmp)
            ops |= set(size_ops)
            float_ops |= set(size_floats) if quantize_fn is not None else set()
            files_out[tag] = staged.entry(name)
        shape = "1 x H x W x 3 (NHWC, RGB; static per file: one file per size, batch 1)"
        quantization = None
        if quantize_fn is not None:
            quantization = {
                "scheme": "int8 full integer, PT2E (litert_torch.quantize.PT2EQuantizer, symmetric per-channel "
                "weights, static per-tensor activations); int8 input and output, float_ops: any op left in float",
                "float_ops": sorted(float_ops),
                "calibration": quantize_fn.calibration,
                "io": io,
            }
        quantized = {"quantized": io["input"]} if quantization else {}
        side = job.sidecar(
            self,
            job.input(shape, static_shapes=True, **quantized),
            outputs,
            checks,
            net is not model,
            files=files_out,
            operators=sorted(ops),
            signature="serving_default",
            quantization=quantization,
        )
        return {s: staged.out_dir / f"{job.stem}_{s[0]}x{s[1]}.tflite" for s in job.sizes}, side

    def load(self, files: Any, sidecar: Dict[str, Any], threads: Optional[int] = 1) -> Callable[[Tensor], Any]:
        return tflite_runner(files, threads=threads)

    def kernels(self) -> Dict[str, Any]:
        from importlib.metadata import version

        import ai_edge_litert  # noqa: F401

        return {
            "kernels": "LiteRT built-in kernels + the XNNPACK delegate the Interpreter applies by default",
            "version": version("ai-edge-litert"),
            "xnnpack_isa": "not reported",
        }


register(TfliteRuntime())
