"""int8 vs fp32 on a model trained here: size, speed and CIFAR-10 accuracy of every export format.

    python -m shufflenet.mobile.int8_report [--arch shufflenet_v1_x0_5_g3] [--epochs 10] [--weights FILE]

With ``--weights`` (e.g. the ``model.pth`` of ``classification/train.py --data.root ../shared/data/cifar10``)
it reports on that model; without, it first trains ``--arch`` on the CIFAR-10 slice of ``../shared/data`` (train split,
32x32, a short plain loop: AdamW + cosine, flips) and saves the weights with ``shufflenet.save_weights``;
then it exports fp32 and int8 ``.ptl`` (FX/QNNPACK) and, when ExecuTorch is installed, fp32 and int8
``.pte`` (PT2E/XNNPACKQuantizer), all calibrated on train images and verified as usual, and evaluates
every file on the whole test split. Writes int8_report.json / .md under ``--out``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..models import create_model
from ..weights import save_weights
from ..fileio import write_json_atomic, write_text_atomic
from .export import INT8_ATOL, INT8_RTOL, export_ptl, host_info
from .images import list_images, load_images, shared_data_dir
from .quantize import pt2e_int8_for_pte, quantize_fx_int8
from .source import MobileError, load_model


def _cifar_split(split: str, limit: Optional[int] = None):
    root = shared_data_dir()
    folder = root / "cifar10" / split if root else None
    if folder is None or not folder.is_dir():
        raise MobileError("the CIFAR-10 slice (../shared/data/cifar10) is needed; set SHUFFLENET_DATA")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = list_images(folder)
    labels = torch.tensor([classes.index(f.parent.name) for f in files])
    x = load_images(files, (32, 32))
    return x, labels, classes


def train(arch: str, epochs: int, out: Path, log: Callable[[str], None] = print) -> Path:
    x, y, classes = _cifar_split("train")
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small convs: more threads only oversubscribe a shared machine
    model = create_model(arch, num_classes=len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = epochs * math.ceil(len(x) / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        t0, total, correct = time.time(), 0.0, 0
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            xb = x[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
        log(f"[train] epoch {ep + 1}/{epochs}: loss {total / len(x):.3f}, train acc {correct / len(x):.3f} ({time.time() - t0:.0f} s)")
    path = save_weights(model.eval(), out / "model.pth", arch=arch, meta={"trained_on": "cifar10 slice, 32x32", "epochs": epochs})
    log(f"[train] saved {path}")
    return path


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


def report(weights: Path, out: Path, sizes=((32, 32), (224, 224)), calib_count: int = 256,
           log: Callable[[str], None] = print) -> Dict[str, Any]:
    from torch.jit.mobile import _load_for_lite_interpreter

    from .pte import executorch_available, export_pte, pte_runner

    torch.set_num_threads(1)
    src = load_model(str(weights))
    xt, yt, _ = _cifar_split("test")
    root = shared_data_dir()
    calib = root / "cifar10" / "train"
    test_dir = root / "cifar10" / "test"
    rows: List[Dict[str, Any]] = []

    def add(fmt: str, precision: str, files: Sequence[Path], run: Callable, verify: str) -> None:
        row = {"format": fmt, "precision": precision, "size_bytes": sum(p.stat().st_size for p in files),
               "top1": _accuracy(run, xt, yt),
               "latency_ms": {f"{h}x{w}": _latency(run, (h, w)) for h, w in sizes}, "verified_against": verify,
               "files": [str(p) for p in files]}
        rows.append(row)
        log(f"[int8] {fmt} {precision}: top-1 {row['top1']:.4f}, {row['size_bytes'] / 1e6:.2f} MB, "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in row["latency_ms"].items()))

    rows.append({"format": "eager", "precision": "fp32", "top1": _accuracy(src.model, xt, yt),
                 "latency_ms": {f"{h}x{w}": _latency(src.model, (h, w)) for h, w in sizes}})
    log(f"[int8] eager fp32: top-1 {rows[0]['top1']:.4f}")
    ptl, _ = export_ptl(src, out, sizes, image_dir=test_dir, basename="fp32", log=log)
    add("ptl", "fp32", [ptl], _load_for_lite_interpreter(str(ptl)), "eager fp32")
    q = quantize_fx_int8(src, calib, calib_count, sizes[0])
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        qptl, _ = export_ptl(q, out, sizes, image_dir=test_dir, basename="int8", atol=INT8_ATOL, rtol=INT8_RTOL,
                             quantized_engine="qnnpack", log=log)
        add("ptl", "int8 (FX, qnnpack)", [qptl], _load_for_lite_interpreter(str(qptl)), "FX int8 reference")
    finally:
        torch.backends.quantized.engine = prev
    if executorch_available():
        paths, _ = export_pte(src, out, sizes, image_dir=test_dir, basename="fp32", log=log)
        add("pte", "fp32", list(paths.values()), pte_runner(paths, threads=1), "eager fp32")
        qfn = pt2e_int8_for_pte(src, calib, calib_count, sizes[0])
        qpaths, _ = export_pte(src, out, sizes, image_dir=test_dir, basename="int8", quantize_fn=qfn,
                               atol=INT8_ATOL, rtol=INT8_RTOL, log=log)
        add("pte", "int8 (PT2E, XNNPACKQuantizer)", list(qpaths.values()), pte_runner(qpaths, threads=1),
            "PT2E int8 reference")
    else:
        log("[int8] executorch not installed: .pte rows skipped")
    result = {"weights": str(weights), "model": src.name, "test_images": len(xt), "calibration_images": calib_count,
              "host": host_info(1), "rows": rows}
    write_json_atomic(result, out / "int8_report.json")
    lines = [f"# int8 vs fp32: {src.name} trained on the CIFAR-10 slice ({len(xt)} test images, 1 thread)", "",
             "| format | precision | top-1 | size (MB) | " + " | ".join(f"ms @ {h}x{w}" for h, w in sizes) + " |",
             "|---|---|---:|---:|" + "---:|" * len(sizes)]
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.2f}" if "size_bytes" in r else "-"
        lines.append(f"| {r['format']} | {r['precision']} | {r['top1']:.4f} | {size} | "
                     + " | ".join(f"{r['latency_ms'][f'{h}x{w}']:.2f}" for h, w in sizes) + " |")
    md = "\n".join(lines) + "\n"
    write_text_atomic(md, out / "int8_report.md")
    print(md)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shufflenet.mobile.int8_report", description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="shufflenet_v1_x0_5_g3")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--weights", default=None, help="skip training: a weights file of a 10-class model")
    p.add_argument("--calib-count", type=int, default=256)
    p.add_argument("--out", default="outputs/mobile/int8")
    args = p.parse_args(argv)
    try:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        weights = Path(args.weights) if args.weights else train(args.arch, args.epochs, out)
        report(weights, out, calib_count=args.calib_count)
        return 0
    except (MobileError, ValueError) as e:
        print(f"int8_report: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
