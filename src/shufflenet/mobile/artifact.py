"""The one verify-and-write path of every exporter (``.ptl``, ``.pte``, ONNX, ncnn, LiteRT).

An exporter builds its runtime's file into temporary siblings of the final names (:class:`Staged`), loads it
back in the runtime, checks it against the eager model with :func:`verify` (random and real images at every
size), describes it with :func:`sidecar`, and calls :meth:`Staged.commit`: the files are renamed into place,
then the JSON sidecar is written, and every written file is named in the output. Any failure or interrupt
before the commit leaves neither a file nor a temporary one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..fileio import sha256_file, tmp_sibling, write_json_atomic
from .images import list_images
from .source import ModelSource
from .verify import (
    INT8_ATOL,
    INT8_FIDELITY_RTOL,
    VerificationError,
    VerifyInput,
    compare_outputs,
    flatten_outputs,
    images_note,
    make_inputs,
    verify_runtime,
)

__all__ = [
    "Staged",
    "filtered_stderr",
    "without_log_records",
    "verify",
    "verify_int8_fidelity",
    "input_spec",
    "sidecar",
    "output_shapes",
]

Log = Callable[[str], None]


class Staged:
    """Temporary siblings of the files one export writes; :meth:`commit` renames them into place."""

    def __init__(self, out_dir: os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.files: Dict[Path, Path] = {}  # final -> temporary

    def tmp(self, name: str) -> Path:
        final = self.out_dir / name
        self.files[final] = tmp_sibling(final)
        return self.files[final]

    def entry(self, name: str) -> Dict[str, Any]:
        """``file``, ``sha256`` and ``size_bytes`` of the staged file that will be ``name``."""
        t = self.files[self.out_dir / name]
        return {"file": name, "sha256": sha256_file(t), "size_bytes": t.stat().st_size}

    def commit(self, side: Dict[str, Any], sidecar_name: str, log: Log = print) -> List[Path]:
        for final, t in self.files.items():
            os.replace(t, final)
        side_path = write_json_atomic(side, self.out_dir / sidecar_name)
        for final in self.files:
            log(f"[export] wrote {final} ({final.stat().st_size / 1e6:.2f} MB)")
        log(f"[export] wrote {side_path}")
        return list(self.files)

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc: Any) -> None:
        for t in self.files.values():
            if t.exists():
                t.unlink()


def verify(
    reference: Callable[[Tensor], Any],
    exported: Callable[[Tensor], Any],
    inputs: Sequence[VerifyInput],
    atol: float,
    rtol: float,
    runtime: str,
    log: Log = print,
) -> List[Dict[str, Any]]:
    """:func:`~.verify.verify_runtime` with one line per check."""
    rows = verify_runtime(reference, exported, inputs, atol, rtol, runtime=runtime)
    for r in rows:
        log(
            f"[verify] {runtime}: {r['size'][0]}x{r['size'][1]} {r['input']:<18} batch {r['batch']} "
            f"max|diff| {r['max_abs_diff']:.2e} <= bound {r['bound']:.2e}  ok"
        )
    return rows


def verify_int8_fidelity(
    reference: Callable[[Tensor], Any],
    exported: Callable[[Tensor], Any],
    inputs: Sequence[VerifyInput],
    quantization: Dict[str, Any],
    runtime: str,
    log: Log = print,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> List[Dict[str, Any]]:
    """An int8 file against the *fp32* model on real photos (the real ``inputs``; with none, two calibration
    images at each size): ``max|int8 - fp32| <= INT8_ATOL + INT8_FIDELITY_RTOL x max|fp32|``, and the top-1
    agreement recorded. Refuses a degenerate calibration (one whose ranges do not cover real inputs), which a
    check against the file's own int8 reference cannot see. ``quantization["calibration"]`` names the
    calibration for the message."""
    real = [i for i in inputs if i.label.startswith("real")]
    calib = quantization.get("calibration", {})
    if not real:
        photos = list_images(calib["dir"])[:2]
        sizes = list(dict.fromkeys(i.size for i in inputs))
        real = [
            VerifyInput(f"calibration ({len(photos)} images)", i.size, i.tensor)
            for i in make_inputs(sizes, photos, len(photos), mean=mean, std=std)
            if i.label.startswith("real")
        ]
    rows = []
    for inp in real:
        with torch.no_grad():
            ref, got = reference(inp.tensor.clone()), exported(inp.tensor.clone())
        res = compare_outputs(ref, got, INT8_ATOL, INT8_FIDELITY_RTOL)
        agree = float((flatten_outputs(ref)[0].argmax(1) == flatten_outputs(got)[0].argmax(1)).float().mean())
        row = {
            "input": inp.label,
            "size": list(inp.size),
            "batch": int(inp.tensor.shape[0]),
            **res,
            "top1_agree": agree,
        }
        rows.append(row)
        where = f"{inp.label} input at {inp.size[0]}x{inp.size[1]}"
        if not res["ok"]:
            why = res.get("why") or (
                f"max |fp32 - int8| = {res['max_abs_diff']:.3g} exceeds the bound {res['bound']:.3g} "
                f"(atol {INT8_ATOL:g} + rtol {INT8_FIDELITY_RTOL:g} x max|fp32| {res['max_abs_ref']:.3g})"
            )
            raise VerificationError(
                f"int8 check against the fp32 model failed on the {where} through the {runtime}: {why}; the "
                f"calibration ({calib.get('dir')}, {calib.get('images')} images) does not cover such inputs: "
                "calibrate on images like the deployment's (--calib-images DIR --calib-count N); no file was written"
            )
        log(
            f"[verify] {runtime} vs fp32: {inp.size[0]}x{inp.size[1]} {inp.label:<18} max|diff| "
            f"{res['max_abs_diff']:.2e} <= bound {res['bound']:.2e}, top-1 agreement {agree:.0%}  ok"
        )
    return rows


def output_shapes(reference: Callable[[Tensor], Any], example: Tensor) -> List[List[int]]:
    with torch.no_grad():
        return [list(t.shape) for t in flatten_outputs(reference(example))]


def input_spec(source: ModelSource, sizes: Sequence[Tuple[int, int]], shape: str, camera: bool = False, **extra: Any):
    """The sidecar's ``input`` block: verified sizes, shape, dtype and normalization (camera frames folded)."""
    spec: Dict[str, Any] = {
        "sizes_hw_verified": [list(s) for s in sizes],
        "shape": shape,
        "dtype": "float32",
        "normalization": source.normalization,
        **extra,
    }
    if camera:
        spec.update(
            dtype="uint8",
            normalization={
                "color": "RGB",
                "scale": "0-255 uint8 pixels; mean/std folded into the stem",
                "mean": list(source.mean),
                "std": list(source.std),
            },
        )
    return spec


def sidecar(
    source: ModelSource,
    runtime: str,
    input: Dict[str, Any],
    outputs: List[List[int]],
    checks: List[Dict[str, Any]],
    atol: float,
    rtol: float,
    images: Optional[Sequence[os.PathLike]],
    rewritten: bool,
    versions: Optional[Dict[str, Optional[str]]] = None,
    **fields: Any,
) -> Dict[str, Any]:
    """The JSON sidecar every exported file carries (``fields`` adds the runtime's own entries)."""
    return {
        "format": "shufflenet-mobile/1",
        "runtime": runtime,
        "model": source.name,
        "task": source.task,
        "source": source.origin,
        **fields,
        "input": input,
        "outputs": outputs,
        "rewrite": "runtime-specific equivalent form (shufflenet.mobile.rewrite)" if rewritten else None,
        "verification": {"atol": atol, "rtol": rtol, **images_note(images), "checks": checks},
        "exported_with": {
            "torch": torch.__version__,
            **(versions or {}),
            "python": platform.python_version(),
            "arch": platform.machine(),
        },
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **({"extra": source.extra} if source.extra else {}),
    }


@contextlib.contextmanager
def filtered_stderr(harmless: Sequence[str], fd: int = 2) -> Iterator[None]:
    """Drop the lines of native runtime chatter known to be harmless (``harmless``: regular expressions) that C++
    code writes to file descriptor ``fd`` (2: stderr, 1: stdout) inside the block; every other line is written
    out afterwards."""
    patterns = [re.compile(p) for p in harmless]
    stream = sys.stderr if fd == 2 else sys.stdout
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), fd)
        try:
            yield
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            buf.seek(0)
            kept = [
                line
                for line in buf.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not any(p.search(line) for p in patterns)
            ]
            if kept:
                stream.write("".join(kept))
                stream.flush()


@contextlib.contextmanager
def without_log_records(logger: str, harmless: str) -> Iterator[None]:
    """Drop the ``logging`` records of ``logger`` whose message matches ``harmless`` inside the block only."""
    pattern = re.compile(harmless)

    def keep(record: logging.LogRecord) -> bool:
        return not pattern.search(record.getMessage())

    log = logging.getLogger(logger)
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)
