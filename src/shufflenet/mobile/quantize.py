"""int8 post-training static quantization calibrated on real images (default: the package's sample photos;
``--calib-images DIR`` for a dataset, sampled evenly). ``.ptl``: FX graph mode, QNNPACK, checked against the
converted eager int8 module; ``.pte``: PT2E with ``XNNPACKQuantizer``, checked against the converted PT2E
module; ONNX: ONNX Runtime ``quantize_static`` (QDQ; uint8 per-tensor activations, int8 per-channel 7-bit
weights); ncnn: ``ncnn2table`` + ``ncnn2int8`` (in :mod:`.ncnn_export`). See docs/mobile.md for the bounds.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import torch
from torch import Tensor, nn

from ..paths import sample_images_dir
from .images import list_images, load_images
from .source import MobileError, ModelSource

__all__ = ["resolve_calib_dir", "calibration_batch", "quantize_fx_int8", "pt2e_int8_for_pte", "ORT_INT8_SCHEME"]
__all__ += ["ort_int8_for_onnx"]


def resolve_calib_dir(spec: Any = "auto") -> Path:
    """``"auto"``: the package's sample photos; else an existing folder of images."""
    if spec in (None, "auto"):
        return sample_images_dir()
    path = Path(spec)
    if not path.is_dir():
        raise MobileError(f"--calib-images {path}: no such folder")
    return path


def calibration_batch(calib_dir: os.PathLike, count: int, size: Tuple[int, int], mean, std) -> Tensor:
    """``count`` real images spread evenly over the (sorted) folder, resized to ``size`` and normalized."""
    files = list_images(calib_dir)
    if not files:
        raise MobileError(f"{calib_dir}: no images for int8 calibration")
    if count < 1:
        raise MobileError(f"--calib-count must be >= 1, got {count}")
    step = max(1, len(files) // count)
    return load_images(files[::step][:count], size, mean, std)


def quantize_fx_int8(source: ModelSource, calib_dir: os.PathLike, count: int, size: Tuple[int, int]) -> ModelSource:
    """FX graph mode PTQ (QNNPACK config) calibrated on ``count`` real images; for ``.ptl`` export."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if "qnnpack" not in torch.backends.quantized.supported_engines:
        raise MobileError(
            f"this torch build has no QNNPACK quantized engine (has {torch.backends.quantized.supported_engines})"
        )
    batch = calibration_batch(calib_dir, count, size, source.mean, source.std)
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = copy.deepcopy(source.model).eval()
            prepared = prepare_fx(model, get_default_qconfig_mapping("qnnpack"), (batch[:1],))
            with torch.no_grad():
                for i in range(0, batch.shape[0], 16):
                    prepared(batch[i : i + 16])
            qmodel = convert_fx(prepared).eval()
    except Exception as e:
        raise MobileError(
            f"FX int8 quantization of {source.name} failed: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None
    finally:
        torch.backends.quantized.engine = prev
    extra = dict(source.extra)
    extra["quantization"] = {
        "scheme": "int8 post-training static, FX graph mode, qnnpack qconfig (per-tensor)",
        "calibration": {"dir": str(calib_dir), "images": int(batch.shape[0]), "size": list(size)},
    }
    return ModelSource(qmodel, source.name, source.origin, source.mean, source.std, source.task, extra)


def pt2e_int8_for_pte(
    source: ModelSource, calib_dir: Any, count: int, size: Tuple[int, int]
) -> Callable[[nn.Module, Tensor], nn.Module]:
    """A ``quantize_fn(model, example) -> converted PT2E module`` for ``.pte``, calibrated at each size."""
    calib_dir = resolve_calib_dir(calib_dir)
    calibration_batch(calib_dir, 1, size, source.mean, source.std)  # fail early on a bad folder

    def quantize_fn(model: nn.Module, example: Tensor) -> nn.Module:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        batch = calibration_batch(calib_dir, count, tuple(example.shape[-2:]), source.mean, source.std)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = torch.export.export(copy.deepcopy(model).eval(), (example,)).module()
            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            prepared = prepare_pt2e(gm, quantizer)
            for i in range(batch.shape[0]):  # static batch-1 graph
                with torch.no_grad():
                    prepared(batch[i : i + 1])
            return convert_pt2e(prepared)

    return quantize_fn


#: What :func:`ort_int8_for_onnx` writes (the sidecar's ``quantization.scheme``). ``reduce_range`` (7-bit
#: weights) is ONNX Runtime's advice for x86 without VNNI, where its u8 x s8 kernels add pairs of products in
#: 16 bits: with 8-bit weights the sum saturates (measured here on AVX2: the int8 kernels differed from the
#: file's own QDQ reference by 9 % of max|output|, 0.7 % with 7-bit weights), so the file computes the same
#: on every CPU. uint8 activations are what ONNX Runtime's CPU kernels take everywhere (x86 and ARM).
ORT_INT8_SCHEME = (
    "int8 post-training static, ONNX Runtime quantize_static, QDQ format: uint8 asymmetric per-tensor activations "
    "(MinMax calibration), int8 symmetric per-channel weights in 7 bits (reduce_range)"
)


def ort_int8_for_onnx(
    source: ModelSource, calib_dir: Any, count: int, size: Tuple[int, int]
) -> Callable[[Path, Path], Dict[str, Any]]:
    """A ``quantize_fn(fp32_onnx, int8_onnx) -> description``: ``quant_pre_process`` then ``quantize_static``
    (QDQ, per-channel weights where ONNX Runtime has them), on the images the other int8 paths use."""
    calib_dir = resolve_calib_dir(calib_dir)
    batch = calibration_batch(calib_dir, count, size, source.mean, source.std)  # a bad folder fails here

    def quantize_fn(fp32_path: Path, out_path: Path) -> Dict[str, Any]:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(batch[i : i + 16].numpy() for i in range(0, batch.shape[0], 16))

            def get_next(self):
                x = next(self.batches, None)
                return None if x is None else {"input": x}

        with tempfile.TemporaryDirectory(prefix="ort-quant-") as work:
            pre = Path(work) / "preprocessed.onnx"
            try:
                quant_pre_process(str(fp32_path), str(pre))
                quantize_static(
                    str(pre),
                    str(out_path),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
            except Exception as e:
                raise MobileError(
                    f"ONNX Runtime int8 quantization of {source.name} failed: {type(e).__name__}: "
                    f"{(str(e).splitlines() or [''])[0]}"
                ) from None
        graph = onnx.load(str(out_path)).graph
        return {
            "scheme": ORT_INT8_SCHEME,
            "calibration": {"dir": str(calib_dir), "images": int(batch.shape[0]), "size": list(size)},
            "weights": _weight_granularity(graph),
            "qdq_nodes": dict(sorted(Counter(n.op_type for n in graph.node if n.op_type.endswith("Linear")).items())),
        }

    return quantize_fn


def _weight_granularity(graph) -> Dict[str, Dict[str, int]]:
    """Per consuming op type, how many weight tensors are quantized per channel and per tensor."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    consumers: Dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    out: Dict[str, Dict[str, int]] = {}
    for n in graph.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in inits or n.input[1] not in inits:
            continue
        if inits[n.input[0]].data_type not in (2, 3):  # uint8 / int8: a quantized weight (not a bias in int32)
            continue
        per_channel = numpy_helper.to_array(inits[n.input[1]]).size > 1
        for op in consumers.get(n.output[0], []):
            entry = out.setdefault(op, {"per_channel": 0, "per_tensor": 0})
            entry["per_channel" if per_channel else "per_tensor"] += 1
    return dict(sorted(out.items()))
