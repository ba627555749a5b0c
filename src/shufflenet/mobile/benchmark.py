"""The paper's Table 8 on this machine: latency of ShuffleNet 0.5x/1x/2x (g=3), AlexNet and MobileNet v1 1.0.

    python mobile/benchmark.py                 # 224x224, 480x640, 720x1280; eager, .ptl (+ .pte); 1 thread
    python mobile/benchmark.py --quick         # a minute or two: fewer models, sizes and repeats

Every model is exported with :func:`shufflenet.mobile.export.export_ptl` (verified at the benchmark sizes)
and timed through each runtime. All models and runtimes are *interleaved*: each round runs every
(model, runtime) once at the current resolution, so load changes on a shared machine hit them alike and the
ratios stay fair. Reported: median and p90 per cell, the paper's milliseconds (Snapdragon 820, one core)
and the paper's ratios beside the measured ratios, host info; JSON + markdown + PNG.

A *megvii-style* reference (clearly labelled, measurement only) runs the very same ShuffleNet 0.5x modules
but in the order and style of megvii's public code: channel shuffle *after* the depthwise conv, written as
reshape/permute/reshape. It answers "is our export faster than megvii-style code through the same runtime"
with identical weights and FLOPs. It is not a library model and is never exported as one.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import create_model, list_models, paper_tables
from ..models.shufflenet import ShuffleNetV1, ShuffleUnit
from ..fileio import atomic_write, write_json_atomic, write_text_atomic
from .export import MobileError, export_ptl, host_info
from .images import default_image_dir, parse_size
from .source import ModelSource

warnings.filterwarnings("ignore", message=".*Lite Interpreter is deprecated.*")

# --- the megvii-style reference (measurement only) ---------------------------------------------------


class MegviiStyleUnit(nn.Module):
    """Reference for timing only: one of *our* :class:`ShuffleUnit`'s modules, run megvii-style.

    Same convolutions and weights, but the channel shuffle sits after the depthwise conv + BN and is a
    reshape -> permute -> reshape (the pattern of megvii's published ShuffleNet v1 code), and the
    stride-2 ReLU is applied to the branch only. Not a library model; not numerically the same network.
    """

    def __init__(self, unit: ShuffleUnit) -> None:
        super().__init__()
        self.gconv1, self.dwconv, self.gconv2, self.shortcut = unit.gconv1, unit.dwconv, unit.gconv2, unit.shortcut
        self.stride = unit.stride
        self.groups = unit.shuffle.groups  # 1: no shuffle (first unit of stage 2)

    def forward(self, x: Tensor) -> Tensor:
        out = self.dwconv(F.relu(self.gconv1(x)))
        if self.groups > 1:
            b, c, h, w = out.shape
            out = out.reshape(b, c // self.groups, self.groups, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
        out = self.gconv2(out)
        if self.stride == 2:
            return torch.cat((self.shortcut(x), F.relu(out)), 1)
        return F.relu(x + out)


def megvii_style_reference(model: ShuffleNetV1) -> ShuffleNetV1:
    """Swap every unit of ``model`` (in place) for a :class:`MegviiStyleUnit` over the same modules."""
    for stage in model.stages():
        for i, unit in enumerate(list(stage)):
            stage[i] = MegviiStyleUnit(unit)
    return model


# --- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchModel:
    key: str
    label: str
    paper_row: Optional[str]  # row of the paper's Table 8
    build: Callable[[], nn.Module]
    registered: Optional[str] = None


def _registered(name: str) -> Callable[[], nn.Module]:
    return lambda: create_model(name)


def bench_models() -> List[BenchModel]:
    have = set(list_models())
    for need in ("alexnet", "mobilenet_v1_x1_0"):
        if need not in have:
            raise MobileError(f"model {need!r} is not registered (shufflenet.models.baselines); the benchmark needs it")
    return [
        BenchModel("sn0.5", "ShuffleNet 0.5x (g=3)", "ShuffleNet 0.5x (g=3)", _registered("shufflenet_v1_x0_5_g3"), "shufflenet_v1_x0_5_g3"),
        BenchModel("sn1", "ShuffleNet 1x (g=3)", "ShuffleNet 1x (g=3)", _registered("shufflenet_v1_x1_0_g3"), "shufflenet_v1_x1_0_g3"),
        BenchModel("sn2", "ShuffleNet 2x (g=3)", "ShuffleNet 2x (g=3)", _registered("shufflenet_v1_x2_0_g3"), "shufflenet_v1_x2_0_g3"),
        BenchModel("alexnet", "AlexNet", "AlexNet", _registered("alexnet"), "alexnet"),
        BenchModel("mobilenet", "1.0 MobileNet-224", "1.0 MobileNet-224", _registered("mobilenet_v1_x1_0"), "mobilenet_v1_x1_0"),
        BenchModel(
            "megvii0.5",
            "megvii-style 0.5x (reference)",
            None,
            lambda: megvii_style_reference(create_model("shufflenet_v1_x0_5_g3")),
        ),
    ]


#: Ratios the paper's Table 8 implies, as (numerator key, denominator key, label).
RATIOS = [
    ("alexnet", "sn0.5", "AlexNet / ShuffleNet 0.5x (paper headline ~13x)"),
    ("mobilenet", "sn2", "MobileNet 1.0 / ShuffleNet 2x"),
    ("sn1", "sn0.5", "ShuffleNet 1x / 0.5x"),
    ("sn2", "sn0.5", "ShuffleNet 2x / 0.5x"),
    ("megvii0.5", "sn0.5", "megvii-style 0.5x / ours 0.5x (same weights)"),
]

SIZES = [(224, 224), (480, 640), (720, 1280)]


def paper_ms() -> Dict[str, List[float]]:
    t8 = paper_tables()["table8_arm_latency_ms"]
    return {r["model"]: r["ms"] for r in t8["rows"]}


def _pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --- runtimes ----------------------------------------------------------------------------------------


def _eager_runner(model: nn.Module) -> Callable[[Tensor], Any]:
    def run(x: Tensor) -> Any:
        with torch.inference_mode():
            return model(x)

    return run


def _lite_runner(path: Path) -> Callable[[Tensor], Any]:
    from torch.jit.mobile import _load_for_lite_interpreter

    m = _load_for_lite_interpreter(str(path))

    def run(x: Tensor) -> Any:
        with torch.no_grad():
            return m(x)

    return run


def executorch_available() -> bool:
    from .pte import executorch_available as available

    return available()


def run_benchmark(
    keys: Optional[Sequence[str]] = None,
    sizes: Sequence[Tuple[int, int]] = SIZES,
    runtimes: Sequence[str] = ("eager", "ptl", "pte"),
    threads: int = 1,
    warmup: int = 2,
    repeats: int = 15,
    max_seconds_per_size: float = 600.0,
    export_dir: Path = Path("outputs/mobile/exported"),
    verify_real: int = 1,
    input_layout: str = "nchw",
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_benchmark(keys, sizes, runtimes, threads, warmup, repeats, max_seconds_per_size, export_dir,
                              verify_real, input_layout, log)
    finally:
        torch.set_num_threads(prev_threads)


def _run_benchmark(keys, sizes, runtimes, threads, warmup, repeats, max_seconds_per_size, export_dir, verify_real,
                   input_layout, log):
    torch.manual_seed(0)
    models = [m for m in bench_models() if keys is None or m.key in keys]
    if keys is not None:
        unknown = sorted(set(keys) - {m.key for m in bench_models()})
        if unknown:
            raise MobileError(f"unknown benchmark model(s) {unknown}; valid: {[m.key for m in bench_models()]}")
    runtimes = list(runtimes)
    if "pte" in runtimes and not executorch_available():
        log("[bench] executorch is not installed: skipping the .pte runtime (pip install executorch==1.3.1)")
        runtimes.remove("pte")
    image_dir = default_image_dir()
    runners: Dict[Tuple[str, str], Callable[[Tensor], Any]] = {}
    files: Dict[str, Dict[str, str]] = {}
    for bm in models:
        model = bm.build().eval()
        files[bm.key] = {}
        if "eager" in runtimes:
            runners[(bm.key, "eager")] = _eager_runner(model)
        src = ModelSource(model, bm.registered or bm.key, "benchmark (random init)")
        if "ptl" in runtimes:
            path, _ = export_ptl(src, export_dir, sizes, image_dir=image_dir, n_real=verify_real,
                                 basename=f"bench_{bm.key}", log=lambda s: None)
            log(f"[bench] exported + verified {bm.label} -> {path}")
            runners[(bm.key, "ptl")] = _lite_runner(path)
            files[bm.key]["ptl"] = str(path)
        if "pte" in runtimes:
            from .pte import export_pte, pte_runner

            paths, _ = export_pte(src, export_dir, sizes, image_dir=image_dir, n_real=verify_real,
                                  basename=f"bench_{bm.key}", log=lambda s: None)
            log(f"[bench] exported + verified {bm.label} -> {', '.join(str(p) for p in paths.values())}")
            runners[(bm.key, "pte")] = pte_runner(paths, threads=threads)
            files[bm.key]["pte"] = [str(p) for p in paths.values()]

    cells: Dict[str, Dict[str, Dict[str, Any]]] = {}
    total = len(runners) * len(sizes)
    done = 0
    for size in sizes:
        tag = f"{size[0]}x{size[1]}"
        x = torch.randn(1, 3, *size)
        if input_layout == "nhwc":  # an image that arrives HWC (camera, decoder): no layout copy in the model
            x = x.contiguous(memory_format=torch.channels_last)
        times: Dict[Tuple[str, str], List[float]] = {k: [] for k in runners}
        for k, run in runners.items():
            for _ in range(warmup):
                run(x)
        start = time.perf_counter()
        rounds = 0
        for r in range(repeats):
            for k, run in runners.items():  # interleaved: one run of every (model, runtime) per round
                t = time.perf_counter()
                run(x)
                times[k].append((time.perf_counter() - t) * 1e3)
            rounds += 1
            log(f"[bench] {tag:>9} round {rounds}/{repeats}: " + ", ".join(
                f"{k[0]}/{k[1]} {v[-1]:.1f}" for k, v in times.items()) + " ms")
            if time.perf_counter() - start > max_seconds_per_size and rounds >= 3:
                log(f"[bench] {tag}: time budget reached after {rounds} rounds")
                break
        for (key, rt), ts in times.items():
            done += 1
            cell = {"median_ms": statistics.median(ts), "p90_ms": _pct(ts, 0.9), "min_ms": min(ts), "n": len(ts), "runs_ms": ts}
            cells.setdefault(key, {}).setdefault(rt, {})[tag] = cell
            label = next(m.label for m in models if m.key == key)
            log(f"[bench {done:>3}/{total}] {tag:>9} {label:<30} {rt:<5} median {cell['median_ms']:8.2f} ms  p90 {cell['p90_ms']:8.2f} ms  (n={len(ts)})")

    result = {
        "host": host_info(threads),
        "executorch": _executorch_version(),
        "settings": {"threads": threads, "input_layout": input_layout, "warmup": warmup, "repeats": repeats, "sizes": [list(s) for s in sizes],
                     "runtimes": runtimes, "interleaved": True, "batch": 1},
        "models": {m.key: {"label": m.label, "paper_row": m.paper_row, "registered": m.registered, "files": files[m.key]} for m in models},
        "paper": {"platform": paper_tables()["table8_arm_latency_ms"]["platform"], "ms": paper_ms()},
        "cells": cells,
    }
    result["ratios"] = ratios(result)
    return result


def _executorch_version() -> Optional[str]:
    from .pte import executorch_version

    return executorch_version()


def ratios(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    pms = result["paper"]["ms"]
    models = result["models"]
    sizes = [f"{h}x{w}" for h, w in result["settings"]["sizes"]]
    all_sizes = [f"{h}x{w}" for h, w in SIZES]
    for num, den, label in RATIOS:
        if num not in models or den not in models:
            continue
        row: Dict[str, Any] = {"ratio": label, "num": num, "den": den, "paper": {}, "measured": {}}
        pn, pd = models[num]["paper_row"], models[den]["paper_row"]
        for tag in sizes:
            if pn and pd and tag in all_sizes:
                i = all_sizes.index(tag)
                row["paper"][tag] = pms[pn][i] / pms[pd][i]
            for rt in result["settings"]["runtimes"]:
                a = result["cells"].get(num, {}).get(rt, {}).get(tag)
                b = result["cells"].get(den, {}).get(rt, {}).get(tag)
                if a and b:
                    row["measured"].setdefault(rt, {})[tag] = a["median_ms"] / b["median_ms"]
        out.append(row)
    return out


# --- reports -----------------------------------------------------------------------------------------


def markdown(result: Dict[str, Any], command: str = "") -> str:
    h = result["host"]
    sizes = [f"{a}x{b}" for a, b in result["settings"]["sizes"]]
    all_sizes = [f"{a}x{b}" for a, b in SIZES]
    rts = result["settings"]["runtimes"]
    lines = [
        "# Table 8 (latency), reproduced on this machine",
        "",
        f"Host: {h['cpu']} ({h['arch']}, {h['logical_cpus']} logical CPUs), {h['threads']} thread(s), "
        f"torch {h['torch']} (XNNPACK {'on' if h['xnnpack'] else 'off'})"
        + (f", executorch {result['executorch']}" if result.get("executorch") and "pte" in rts else "")
        + f"; batch 1, {result['settings'].get('input_layout', 'nchw').upper()} input, {result['settings']['warmup']} warm-up + up to {result['settings']['repeats']} interleaved rounds; "
        "median ms (p90). Paper: " + result["paper"]["platform"] + ".",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += ["", "| model | runtime | " + " | ".join(sizes) + " | paper ms (" + ", ".join(sizes) + ") |",
              "|---|---|" + "---:|" * len(sizes) + "---|"]
    for key, m in result["models"].items():
        p = result["paper"]["ms"].get(m["paper_row"] or "", None)
        pstr = ", ".join(f"{p[all_sizes.index(s)]:g}" if s in all_sizes else "-" for s in sizes) if p else "-"
        for rt in rts:
            c = result["cells"].get(key, {}).get(rt)
            if not c:
                continue
            vals = [f"{c[s]['median_ms']:.1f} ({c[s]['p90_ms']:.1f})" if s in c else "-" for s in sizes]
            lines.append(f"| {m['label']} | {rt} | " + " | ".join(vals) + f" | {pstr} |")
    lines += ["", "Ratios of medians (the paper's, then measured per runtime):", "",
              "| ratio | " + " | ".join(f"paper {s}" for s in sizes) + " | " + " | ".join(f"{rt} {s}" for rt in rts for s in sizes) + " |",
              "|---|" + "---:|" * (len(sizes) * (1 + len(rts)))]
    for r in result["ratios"]:
        ps = [f"{r['paper'][s]:.1f}x" if s in r["paper"] else "-" for s in sizes]
        ms = [f"{r['measured'].get(rt, {}).get(s, float('nan')):.2f}x" for rt in rts for s in sizes]
        lines.append(f"| {r['ratio']} | " + " | ".join(ps) + " | " + " | ".join(ms) + " |")
    if result.get("profile"):
        lines += ["", "Per-op profile (lite interpreter, self CPU time share, mean of 3 runs per size):", ""]
        for name, prof in result["profile"].items():
            for tag, ops in prof.items():
                top = ", ".join(f"{o['op']} {o['pct']:.0f}% ({o['ms']:.1f} ms)" for o in ops[:6])
                lines.append(f"- {name} @ {tag}: {top}")
    lines += ["", "The machine is shared with other jobs: absolute ms are noisy; the ratios of interleaved runs are the result.", ""]
    return "\n".join(lines)


def plot(result: Dict[str, Any], path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    sizes = [f"{a}x{b}" for a, b in result["settings"]["sizes"]]
    rts = result["settings"]["runtimes"]
    keys = list(result["models"])
    fig, axes = plt.subplots(2, len(sizes), figsize=(5 * len(sizes), 8), squeeze=False)
    width = 0.8 / max(1, len(rts))
    for j, s in enumerate(sizes):
        ax = axes[0][j]
        for i, rt in enumerate(rts):
            vals = [result["cells"].get(k, {}).get(rt, {}).get(s, {}).get("median_ms", float("nan")) for k in keys]
            ax.bar([x + i * width for x in range(len(keys))], vals, width, label=rt)
        ax.set_yscale("log")
        ax.set_title(f"{s}: median latency (ms, log)")
        ax.set_xticks([x + width * (len(rts) - 1) / 2 for x in range(len(keys))])
        ax.set_xticklabels([result["models"][k]["label"].replace(" (", "\n(") for k in keys], fontsize=7, rotation=30)
        ax.legend(fontsize=8)
        ax2 = axes[1][j]
        rr = result["ratios"]
        series = [("paper", [r["paper"].get(s, float("nan")) for r in rr])] + [
            (rt, [r["measured"].get(rt, {}).get(s, float("nan")) for r in rr]) for rt in rts
        ]
        w2 = 0.8 / len(series)
        for i, (lab, vals) in enumerate(series):
            ax2.bar([x + i * w2 for x in range(len(rr))], vals, w2, label=lab)
        ax2.set_title(f"{s}: ratios (paper vs measured)")
        ax2.set_xticks([x + w2 * (len(series) - 1) / 2 for x in range(len(rr))])
        ax2.set_xticklabels([r["ratio"].split(" (")[0].replace(" / ", "\n/ ") for r in rr], fontsize=7)
        ax2.axhline(1.0, color="k", lw=0.5)
        ax2.legend(fontsize=8)
    h = result["host"]
    fig.suptitle(f"ShuffleNet Table 8 on {h['cpu']} ({h['arch']}), {h['threads']} thread(s), torch {h['torch']}", fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return path


# --- per-op profile ----------------------------------------------------------------------------------


def profile_ops(run: Callable[[Tensor], Any], x: Tensor, top: int = 12, runs: int = 3) -> List[Dict[str, Any]]:
    """Self-CPU time per operator, averaged over ``runs`` runs (after one warm-up) of ``run(x)``."""
    from torch.autograd import profiler

    run(x)
    with profiler.profile(record_shapes=False) as prof:
        for _ in range(runs):
            run(x)
    rows: Dict[str, float] = {}
    for evt in prof.key_averages():
        rows[evt.key] = rows.get(evt.key, 0.0) + evt.self_cpu_time_total / 1e3 / runs
    total = sum(rows.values()) or 1.0
    ranked = sorted(rows.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": k, "ms": v, "pct": 100.0 * v / total} for k, v in ranked]


# --- command line ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mobile/benchmark.py", description="Reproduce the paper's Table 8 (latency) on this machine.")
    p.add_argument("--models", nargs="+", default=None, help="subset: sn0.5 sn1 sn2 alexnet mobilenet megvii0.5 (default all)")
    p.add_argument("--sizes", nargs="+", default=None, metavar="S|HxW", help="default 224 480x640 720x1280")
    p.add_argument("--runtimes", nargs="+", default=["eager", "ptl", "pte"], choices=("eager", "ptl", "pte"))
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the paper)")
    p.add_argument("--input-layout", choices=("nchw", "nhwc"), default="nchw",
                   help="memory layout of the timed input tensor (nhwc: as a camera frame arrives; default nchw)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15, help="interleaved rounds per size (default 15)")
    p.add_argument("--max-seconds-per-size", type=float, default=600.0, help="stop adding rounds at a size after this long")
    p.add_argument("--out", default="outputs/mobile/benchmark", help="folder for benchmark.json/.md/.png")
    p.add_argument("--export-dir", default=None, help="where the verified .ptl/.pte go (default OUT/exported)")
    p.add_argument("--profile", action="store_true", help="add a per-op profile of ShuffleNet 0.5x, the megvii-style reference and AlexNet (lite)")
    p.add_argument("--quick", action="store_true", help="0.5x, 2x, AlexNet, MobileNet, megvii-style at 224 and 480x640, 5 rounds")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes] if args.sizes else list(SIZES)
        keys = args.models
        repeats = args.repeats
        if args.quick:
            sizes = [parse_size(s) for s in args.sizes] if args.sizes else [(224, 224), (480, 640)]
            keys = keys or ["sn0.5", "sn2", "alexnet", "mobilenet", "megvii0.5"]
            repeats = min(repeats, 5)
        if args.threads < 1:
            raise MobileError(f"--threads must be >= 1, got {args.threads}")
        out = Path(args.out)
        t0 = time.time()
        result = run_benchmark(keys, sizes, args.runtimes, args.threads, args.warmup, repeats,
                               args.max_seconds_per_size, Path(args.export_dir) if args.export_dir else out / "exported",
                               input_layout=args.input_layout)
        if args.profile:
            result["profile"] = {}
            torch.set_num_threads(args.threads)
            for key in ("sn0.5", "megvii0.5", "alexnet"):
                path = result["models"].get(key, {}).get("files", {}).get("ptl")
                if path:
                    run = _lite_runner(Path(path))
                    result["profile"][result["models"][key]["label"]] = {
                        f"{h}x{w}": profile_ops(run, torch.randn(1, 3, h, w)) for h, w in sizes
                    }
        result["wall_s"] = time.time() - t0
        command = "python mobile/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
        result["command"] = command.strip()
        write_json_atomic(result, out / "benchmark.json")
        md = markdown(result, result["command"])
        write_text_atomic(md, out / "benchmark.md")
        png = plot(result, out / "benchmark.png")
        print(md)
        print(f"[bench] wrote {out / 'benchmark.json'}, {out / 'benchmark.md'}" + (f", {png}" if png else "") + f" in {result['wall_s']:.0f} s")
        return 0
    except (MobileError, ValueError) as e:
        print(f"benchmark: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
