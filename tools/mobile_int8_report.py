"""int8 vs fp32 on a trained model: size, speed and accuracy of every export format.

    # 1. train with the classification wing (its own loop, recipe and checkpoints), e.g. on the CIFAR slice:
    python classification/train.py --config configs/classification/<a CIFAR config> --data.root tests/data/cifar10
    # 2. report on the weights it wrote:
    python -m tools.mobile_int8_report --weights outputs/.../model.pth --data tests/data/cifar10

Exports fp32 and int8 ``.ptl`` (FX/QNNPACK) and, when ExecuTorch is installed, fp32 and int8 ``.pte``
(PT2E/XNNPACKQuantizer), calibrated on ``DATA/train`` images and verified as usual, and evaluates every file
on the whole ``DATA/test`` split (an ImageFolder). ``--data`` defaults to ``$SHUFFLENET_DATA/cifar10``.
Writes int8_report.json / .md under ``--out``. No training happens here (that is the classification wing's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from shufflenet.errors import run_cli
from shufflenet.fileio import write_json_atomic, write_text_atomic
from shufflenet.mobile.images import list_images, load_images
from shufflenet.mobile.ptl import export_ptl, host_info
from shufflenet.mobile.quantize import pt2e_int8_for_pte, quantize_fx_int8
from shufflenet.mobile.source import MobileError, load_model, writable_dir
from shufflenet.mobile.verify import INT8_ATOL, INT8_RTOL
from shufflenet.paths import data_dir


def _split(root: Path, split: str):
    folder = root / split
    if not folder.is_dir():
        raise MobileError(f"--data {root}: no {split}/ folder (an ImageFolder with train/ and test/ is expected)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = list_images(folder)
    if not files:
        raise MobileError(f"{folder}: no images")
    labels = torch.tensor([classes.index(f.parent.name) for f in files])
    return load_images(files, (32, 32)), labels, classes


def _accuracy(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch: int = 100) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (run(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return correct / len(x)


def _latency(run: Callable[[torch.Tensor], Any], size, repeats: int = 20) -> float:
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        for _ in range(3):
            run(x)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            run(x)
            ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def report(
    weights: Path,
    data: Path,
    out: Path,
    sizes=((32, 32), (224, 224)),
    calib_count: int = 256,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    from torch.jit.mobile import _load_for_lite_interpreter

    from shufflenet.mobile.pte import executorch_available, export_pte, pte_runner

    torch.set_num_threads(1)
    src = load_model(str(weights))
    xt, yt, _ = _split(data, "test")
    calib = data / "train"
    test_dir = data / "test"
    rows: List[Dict[str, Any]] = []

    def add(fmt: str, precision: str, files: Sequence[Path], run: Callable, verify: str) -> None:
        row = {
            "format": fmt,
            "precision": precision,
            "size_bytes": sum(p.stat().st_size for p in files),
            "top1": _accuracy(run, xt, yt),
            "latency_ms": {f"{h}x{w}": _latency(run, (h, w)) for h, w in sizes},
            "verified_against": verify,
            "files": [str(p) for p in files],
        }
        rows.append(row)
        log(
            f"[int8] {fmt} {precision}: top-1 {row['top1']:.4f}, {row['size_bytes'] / 1e6:.2f} MB, "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in row["latency_ms"].items())
        )

    rows.append(
        {
            "format": "eager",
            "precision": "fp32",
            "top1": _accuracy(src.model, xt, yt),
            "latency_ms": {f"{h}x{w}": _latency(src.model, (h, w)) for h, w in sizes},
        }
    )
    log(f"[int8] eager fp32: top-1 {rows[0]['top1']:.4f}")
    ptl, _ = export_ptl(src, out, sizes, images=test_dir, basename="fp32", log=log)
    add("ptl", "fp32", [ptl], _load_for_lite_interpreter(str(ptl)), "eager fp32")
    q = quantize_fx_int8(src, calib, calib_count, sizes[0])
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        qptl, _ = export_ptl(
            q,
            out,
            sizes,
            images=test_dir,
            basename="int8",
            atol=INT8_ATOL,
            rtol=INT8_RTOL,
            quantized_engine="qnnpack",
            log=log,
        )
        add("ptl", "int8 (FX, qnnpack)", [qptl], _load_for_lite_interpreter(str(qptl)), "FX int8 reference")
    finally:
        torch.backends.quantized.engine = prev
    if executorch_available():
        paths, _ = export_pte(src, out, sizes, images=test_dir, basename="fp32", log=log)
        add("pte", "fp32", list(paths.values()), pte_runner(paths, threads=1), "eager fp32")
        qfn = pt2e_int8_for_pte(src, calib, calib_count, sizes[0])
        qpaths, _ = export_pte(
            src, out, sizes, images=test_dir, basename="int8", quantize_fn=qfn, atol=INT8_ATOL, rtol=INT8_RTOL, log=log
        )
        add(
            "pte",
            "int8 (PT2E, XNNPACKQuantizer)",
            list(qpaths.values()),
            pte_runner(qpaths, threads=1),
            "PT2E int8 reference",
        )
    else:
        log("[int8] executorch not installed: .pte rows skipped")
    result = {
        "weights": str(weights),
        "data": str(data),
        "model": src.name,
        "test_images": len(xt),
        "calibration_images": calib_count,
        "host": host_info(1),
        "rows": rows,
    }
    write_json_atomic(result, out / "int8_report.json")
    lines = [
        f"# int8 vs fp32: {src.name} on {data} ({len(xt)} test images, 1 thread)",
        "",
        "| format | precision | top-1 | size (MB) | " + " | ".join(f"ms @ {h}x{w}" for h, w in sizes) + " |",
        "|---|---|---:|---:|" + "---:|" * len(sizes),
    ]
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.2f}" if "size_bytes" in r else "-"
        lines.append(
            f"| {r['format']} | {r['precision']} | {r['top1']:.4f} | {size} | "
            + " | ".join(f"{r['latency_ms'][f'{h}x{w}']:.2f}" for h, w in sizes)
            + " |"
        )
    md = "\n".join(lines) + "\n"
    write_text_atomic(md, out / "int8_report.md")
    print(md)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.mobile_int8_report", description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="weights of a trained classifier (any file the project reads)")
    p.add_argument(
        "--data",
        default=None,
        help="ImageFolder root with train/ (calibration) and test/ (accuracy); default $SHUFFLENET_DATA/cifar10",
    )
    p.add_argument("--calib-count", type=int, default=256)
    p.add_argument("--out", default="outputs/mobile/int8")
    args = p.parse_args(argv)
    data = Path(args.data) if args.data else data_dir("cifar10")
    if data is None:
        raise MobileError(
            "--data DIR is needed (an ImageFolder with train/ and test/, e.g. tests/data/cifar10), "
            "or set SHUFFLENET_DATA to a folder holding cifar10/"
        )
    if not data.is_dir():
        raise MobileError(f"--data {data}: no such folder")
    weights = Path(args.weights)
    load_model(str(weights))  # a bad weights file is one error line before any work
    out = writable_dir(args.out)
    report(weights, data, out, calib_count=args.calib_count)
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
