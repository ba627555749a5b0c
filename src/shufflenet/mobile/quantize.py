"""int8 post-training static quantization, calibrated on real images, for both mobile formats.

* ``.ptl``: FX graph mode (``torch.ao.quantization.quantize_fx``) with the QNNPACK qconfig: per-tensor
  affine int8 activations and weights, observers calibrated on real images; the converted module is scripted
  and saved exactly like fp32 (``export_ptl``), and the lite-interpreter file must reproduce the converted
  eager int8 module (same int8 kernels; tolerance: one output quantization step, see docs/mobile.md).
* ``.pte``: PT2E (``torch.export`` -> ``prepare_pt2e`` with ExecuTorch's ``XNNPACKQuantizer``, symmetric
  per-channel weights -> calibrate -> ``convert_pt2e``), lowered to XNNPACK; the program must reproduce the
  converted PT2E reference module (quantize/dequantize ops in fp32) within the same kind of bound.

Calibration images default to the package's sample photos (:func:`shufflenet.paths.sample_images_dir`: a
handful of real photos, so the default works on any machine); for a calibration that represents a dataset,
pass ``--calib-images DIR`` (e.g. the train split of the data the model was trained on), sampled evenly.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Tuple

import torch
from torch import Tensor, nn

from ..paths import sample_images_dir
from .images import list_images, load_images
from .source import MobileError, ModelSource

__all__ = ["resolve_calib_dir", "calibration_batch", "quantize_fx_int8", "pt2e_int8_for_pte"]


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


def _calibrate(model: Callable[[Tensor], Any], batch: Tensor, chunk: int = 16) -> None:
    with torch.no_grad():
        for i in range(0, batch.shape[0], chunk):
            model(batch[i : i + chunk])


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
            _calibrate(prepared, batch)
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
    """A ``quantize_fn(model, example) -> converted PT2E module`` for :func:`shufflenet.mobile.pte.export_pte`.

    Calibration images are resized to each exported size (ExecuTorch programs have static shapes).
    """
    calib_dir = resolve_calib_dir(calib_dir)
    files_ok = calibration_batch(calib_dir, 1, size, source.mean, source.std)  # fail early on a bad folder
    del files_ok

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
