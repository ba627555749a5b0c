"""int8 vs fp32 on a trained model, every runtime side by side: top-1, file size and latency.

    # 1. train with the classification wing (its own loop, recipe and checkpoints), e.g. on the CIFAR slice:
    python classification/train.py --config configs/classification/demo.yaml --model.arch shufflenet_v1_x0_5_g3 \\
        --data.root $SHUFFLENET_DATA/cifar10 --trainer.max_steps 800 --output_root outputs/mobile/cls
    # 2. report on the weights it wrote:
    python -m tools.mobile_int8_report --weights outputs/mobile/cls/.../model.pth --data $SHUFFLENET_DATA/cifar10

Every row of :data:`ROWS` is one (runtime, precision) entry, made from the package's runtime registry: every
registered runtime in fp32, and in int8 where it quantizes (exported through the one verified export path,
calibrated on ``DATA/train`` images, run with the runtime's own loader). A row whose runtime is not installed (or,
for ncnn int8, whose tools are not on ``PATH``) is listed as skipped with the reason. Each file
is evaluated on the whole ``DATA/test`` split (an ImageFolder) at 32x32; latencies are measured one thread,
batch 1, interleaved (every row once per round, ``--repeats`` rounds after ``--warmup`` runs), median process
CPU time per call (the host is shared; wall medians are kept in the JSON). ``--data`` defaults to
``$SHUFFLENET_DATA/cifar10``. Writes int8_report.json / .md under ``--out``. No training happens here.

A new runtime module of the package gets its rows here without a change; a row from elsewhere is added with
:func:`register` (``export(ctx) -> Exported``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from shufflenet.errors import run_cli
from shufflenet.fileio import write_json_atomic, write_text_atomic
from shufflenet.mobile.host import host_info
from shufflenet.mobile.images import list_images, load_images
from shufflenet.mobile.runtime import Calibration, ExportSpec, Runtime, export, runtimes
from shufflenet.mobile.source import MobileError, ModelSource, load_model, writable_dir
from shufflenet.paths import data_dir

Runner = Callable[[torch.Tensor], torch.Tensor]
#: Resolution of the accuracy evaluation (CIFAR-style data).
EVAL_SIZE = (32, 32)


@dataclass
class Context:
    """What every row's exporter gets: the fp32 model, where to write, the sizes, real images."""

    source: ModelSource
    out: Path
    sizes: Sequence[Tuple[int, int]]
    test_dir: Path  #: real images for the exporters' verification
    calib_dir: Path  #: calibration images (the train split)
    calib_count: int
    log: Callable[[str], None] = print


@dataclass
class Exported:
    files: Sequence[Path]  #: the files one deployment at one input size needs
    runner: Runner  #: N x 3 x H x W float in, logits out (at every size of ``Context.sizes``)
    verified_against: str
    all_files: Sequence[Path] = ()  #: every file written (e.g. a .pte per size)


@dataclass
class Row:
    runtime: str
    precision: str
    scheme: str
    export: Callable[[Context], Exported]
    available: Callable[[], Optional[str]] = lambda: None  #: None, or why the row is skipped


#: (runtime, precision) -> row, in the order of the report.
ROWS: Dict[Tuple[str, str], Row] = {}


def register(row: Row) -> Row:
    ROWS[(row.runtime, row.precision)] = row
    return row


# ---------------------------------------------------------------------------------------------------- rows


def _row(rt: Runtime, int8: bool) -> Row:
    """The report's row of one registered runtime at one precision: export through the package's one verified
    export path, run the file with the runtime's own loader."""
    spec = ExportSpec(int8=Calibration() if int8 else None)

    def export_row(ctx: Context) -> Exported:
        # an int8 file checked against the fp32 model (the fidelity bound) is checked at the resolution the model
        # was trained and calibrated at (the data's 32x32), not at 224 where a CIFAR model sees 7x upscaled
        # photos; such files take any size, so they are verified at the first size only and timed at every size
        sizes = ctx.sizes[:1] if int8 and rt.int8_fidelity else ctx.sizes
        calib = Calibration(ctx.calib_dir, ctx.calib_count, tuple(ctx.sizes[0])) if int8 else None
        run_spec = ExportSpec(sizes, images=ctx.test_dir, name="int8" if int8 else "fp32", int8=calib, log=ctx.log)
        files, side = export(rt, ctx.source, ctx.out, run_spec)
        if isinstance(files, dict):
            written = [Path(p) for p in files.values()]
            one = [files[tuple(ctx.sizes[0])]] if tuple(ctx.sizes[0]) in files else written
        else:
            written = one = [Path(files)]
        return Exported(one, rt.load(files, side, threads=1), rt.int8_reference if int8 else "eager fp32", written)

    def available() -> Optional[str]:
        return rt.missing(spec)

    return Row(rt.name, "int8" if int8 else "fp32", rt.int8 if int8 else rt.summary, export_row, available)


for _rt in runtimes().values():
    register(_row(_rt, False))
    if _rt.int8:
        register(_row(_rt, True))


# ------------------------------------------------------------------------------------------------ measuring


def _split(root: Path, split: str):
    folder = root / split
    if not folder.is_dir():
        raise MobileError(f"--data {root}: no {split}/ folder (an ImageFolder with train/ and test/ is expected)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = list_images(folder)
    if not files:
        raise MobileError(f"{folder}: no images")
    labels = torch.tensor([classes.index(f.parent.name) for f in files])
    return load_images(files, EVAL_SIZE), labels, classes


def _accuracy(run: Runner, x: torch.Tensor, y: torch.Tensor, batch: int = 100) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (run(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return correct / len(x)


def interleaved_latency(
    runners: Dict[str, Runner], size: Tuple[int, int], warmup: int = 3, repeats: int = 15
) -> Dict[str, Dict[str, float]]:
    """Median process-CPU and wall ms per call of each runner on one ``1 x 3 x H x W`` input, in rounds in
    which every runner runs once (so a load change on the host hits all of them alike)."""
    x = torch.randn(1, 3, *size)
    cpu: Dict[str, List[float]] = {k: [] for k in runners}
    wall: Dict[str, List[float]] = {k: [] for k in runners}
    with torch.no_grad():
        for run in runners.values():
            for _ in range(warmup):
                run(x)
        for _ in range(repeats):
            for k, run in runners.items():
                w, c = time.perf_counter(), time.process_time()
                run(x)
                cpu[k].append((time.process_time() - c) * 1e3)
                wall[k].append((time.perf_counter() - w) * 1e3)
    return {k: {"cpu_ms": statistics.median(cpu[k]), "wall_ms": statistics.median(wall[k])} for k in runners}


@dataclass
class ReportSettings:
    """The latency ``sizes``, the calibration image count, which ``runtimes`` (default all) and the timing."""

    sizes: Sequence[Tuple[int, int]] = ((32, 32), (224, 224))
    calib_count: int = 256
    runtimes: Optional[Sequence[str]] = None
    warmup: int = 3
    repeats: int = 15
    log: Callable[[str], None] = print


def report(weights: Path, data: Path, out: Path, settings: Optional[ReportSettings] = None) -> Dict[str, Any]:
    """Export every available row of :data:`ROWS` (of ``settings.runtimes``, default all), evaluate and time them.

    Accuracy is measured at 32x32 (the test split's size), so every file is exported (and verified, and
    calibrated) at 32x32 first, then at the latency ``sizes``."""
    st = settings or ReportSettings()
    sizes, calib_count, runtimes, warmup, repeats, log = (
        st.sizes,
        st.calib_count,
        st.runtimes,
        st.warmup,
        st.repeats,
        st.log,
    )
    torch.set_num_threads(1)
    src = load_model(str(weights))
    xt, yt, _ = _split(data, "test")
    sizes = [(int(h), int(w)) for h, w in sizes]
    export_sizes = list(dict.fromkeys([EVAL_SIZE, *sizes]))
    ctx = Context(src, out, export_sizes, data / "test", data / "train", calib_count, log)
    prev_engine = torch.backends.quantized.engine
    if "qnnpack" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "qnnpack"  # the FX int8 .ptl's kernels (no effect on float ops)
    try:
        rows: List[Dict[str, Any]] = [{"runtime": "eager", "precision": "fp32", "scheme": "PyTorch eager"}]
        runners: Dict[str, Runner] = {"eager/fp32": src.model.eval()}
        for row in ROWS.values():
            if runtimes is not None and row.runtime not in runtimes:
                continue
            entry: Dict[str, Any] = {"runtime": row.runtime, "precision": row.precision, "scheme": row.scheme}
            why = row.available()
            if why:
                log(f"[int8] {row.runtime} {row.precision}: skipped ({why})")
                rows.append({**entry, "skipped": why})
                continue
            try:
                ex = row.export(ctx)
            except MobileError as e:  # a file that does not verify is a result too: the row says why
                log(f"[int8] {row.runtime} {row.precision}: export refused: {e}")
                rows.append({**entry, "skipped": f"export refused: {e}"})
                continue
            entry.update(
                size_bytes=sum(Path(p).stat().st_size for p in ex.files),
                files=[str(p) for p in ex.all_files or ex.files],
                verified_against=ex.verified_against,
            )
            rows.append(entry)
            runners[f"{row.runtime}/{row.precision}"] = ex.runner
        for entry in rows:
            key = f"{entry['runtime']}/{entry['precision']}"
            if key in runners:
                entry["top1"] = _accuracy(runners[key], xt, yt)
                log(f"[int8] {key}: top-1 {entry['top1']:.4f} on {len(xt)} test images")
        lat = {}
        for h, w in sizes:
            log(f"[int8] timing {len(runners)} rows at {h}x{w} ({warmup} warm-up runs, {repeats} interleaved rounds)")
            lat[f"{h}x{w}"] = interleaved_latency(runners, (h, w), warmup, repeats)
        for entry in rows:
            key = f"{entry['runtime']}/{entry['precision']}"
            if key in runners:
                entry["latency_ms"] = {s: v[key]["cpu_ms"] for s, v in lat.items()}
                entry["wall_median_ms"] = {s: v[key]["wall_ms"] for s, v in lat.items()}
    finally:
        torch.backends.quantized.engine = prev_engine
    result = {
        "weights": str(weights),
        "data": str(data),
        "model": src.name,
        "test_images": len(xt),
        "calibration_images": calib_count,
        "clock": "process CPU time per call, median of interleaved rounds (1 thread, batch 1)",
        "warmup": warmup,
        "repeats": repeats,
        "host": host_info(1),
        "rows": rows,
    }
    write_json_atomic(result, out / "int8_report.json")
    md = markdown(result, sizes)
    write_text_atomic(md, out / "int8_report.md")
    log(md)
    return result


def markdown(result: Dict[str, Any], sizes: Sequence[Tuple[int, int]]) -> str:
    host = result["host"]
    lines = [
        f"# int8 vs fp32: {result['model']} on {result['data']} ({result['test_images']} test images)",
        "",
        f"1 thread, batch 1, median process-CPU ms of {result['repeats']} interleaved rounds; host {host['cpu']}, "
        f"torch CPU capability {host['torch_cpu_capability']}.",
        "",
        "| runtime | precision | scheme | top-1 | size (MB) | " + " | ".join(f"ms @ {h}x{w}" for h, w in sizes) + " |",
        "|---|---|---|---:|---:|" + "---:|" * len(sizes),
    ]
    for r in result["rows"]:
        if "skipped" in r:
            cells = " | ".join(["-"] * (1 + len(sizes)))
            lines.append(f"| {r['runtime']} | {r['precision']} | {r['scheme']} | skipped: {r['skipped']} | {cells} |")
            continue
        size = f"{r['size_bytes'] / 1e6:.2f}" if "size_bytes" in r else "-"
        ms = " | ".join(f"{r['latency_ms'][f'{h}x{w}']:.2f}" for h, w in sizes)
        lines.append(f"| {r['runtime']} | {r['precision']} | {r['scheme']} | {r['top1']:.4f} | {size} | {ms} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    from shufflenet.mobile.images import parse_size

    p = argparse.ArgumentParser(prog="python -m tools.mobile_int8_report", description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="weights of a trained classifier (any file the project reads)")
    p.add_argument(
        "--data",
        default=None,
        help="ImageFolder root with train/ (calibration) and test/ (accuracy); default $SHUFFLENET_DATA/cifar10",
    )
    p.add_argument("--calib-count", type=int, default=256)
    p.add_argument("--input-size", nargs="+", default=["32", "224"], metavar="S|HxW", help="latency sizes")
    p.add_argument(
        "--runtimes",
        nargs="+",
        default=None,
        choices=sorted({r.runtime for r in ROWS.values()}),
        help="only these runtimes' rows (default: every installed one)",
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default="outputs/mobile/int8")
    args = p.parse_args(argv)
    sizes = [parse_size(s) for s in args.input_size]
    data = Path(args.data) if args.data else data_dir("cifar10")
    if data is None:
        raise MobileError(
            "--data DIR is needed (an ImageFolder with train/ and test/, e.g. tests/data/cifar10), "
            "or set SHUFFLENET_DATA to a folder holding cifar10/"
        )
    if not data.is_dir():
        raise MobileError(f"--data {data}: no such folder")
    if args.repeats < 1 or args.warmup < 0:
        raise MobileError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    weights = Path(args.weights)
    load_model(str(weights))  # a bad weights file is one error line before any work
    out = writable_dir(args.out)
    report(weights, data, out, ReportSettings(sizes, args.calib_count, args.runtimes, args.warmup, args.repeats))
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
