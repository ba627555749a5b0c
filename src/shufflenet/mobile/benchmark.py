"""The paper's Table 8 on this machine: ShuffleNet 0.5x/1x/2x (g=3) against AlexNet, MobileNet v1 and peers.

    python mobile/benchmark.py                 # 224x224, 480x640, 720x1280; every runtime; 1 thread; NHWC in
    python mobile/benchmark.py --quick

Every model is exported and verified through every registered runtime (:func:`.runtime.export`) and timed
through it (:meth:`.runtime.Runtime.load`). All (model, runtime) pairs are *interleaved* (each round runs every
pair once), so load changes on a shared machine hit them alike. Time is the process CPU time of one call (on a
busy host wall time also counts waiting for a core; both are recorded). Peers (exported as written): the same
ShuffleNet modules in megvii's public code order (shuffle after the depthwise conv, stride-2 ReLU on the
branch) and torchvision's ShuffleNetV2 0.5x/1x.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..complexity import count_macs
from ..errors import run_cli
from ..fileio import write_json_atomic, write_text_atomic
from ..models import create_model, list_models, paper_tables
from ..models.baselines import megvii_style
from .host import host_info, kernel_isa
from .images import parse_size
from .report import SIZES, analyse
from .runtime import ExportSpec, export, runtimes, versions
from .source import MobileError, ModelSource, writable_dir
from .verify import VerificationError

# --- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchModel:
    key: str
    label: str
    paper_row: Optional[str]  # row of the paper's Table 8
    build: Callable[[], nn.Module]
    registered: Optional[str] = None
    peer: bool = False  #: a reference peer (exported as written)


def trained_like_batchnorm(model: nn.Module, seed: int = 0, shift_std: float = 0.1) -> nn.Module:
    """Give every BatchNorm of ``model`` values of the kind training leaves (scale ~ U(0.5, 1.5), shift and
    running mean ~ shift_std N(0, 1), running variance ~ U(0.5, 1.5); seeded, in place), so that no layer of the timed
    network is constant. A freshly initialized ShuffleNet zero-initializes the last BatchNorm of every stride-1
    branch (the unit starts as the identity); folded into its convolution that is an all-zero layer, and a
    converter that folds constants (LiteRT's does) removes the whole branch: 3x "faster" than the network a
    trained model runs. Speed does not depend on the values otherwise."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(shift_std * torch.randn(n, generator=gen))
                if m.track_running_stats:
                    m.running_mean.copy_(shift_std * torch.randn(n, generator=gen))
                    m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model


def _registered(name: str) -> Callable[[], nn.Module]:
    return lambda: trained_like_batchnorm(create_model(name))


def _torchvision_v2(width: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return trained_like_batchnorm(getattr(torchvision.models, f"shufflenet_v2_{width}")(weights=None))

    return build


def _megvii(name: str) -> Callable[[], nn.Module]:
    return lambda: megvii_style(trained_like_batchnorm(create_model(name)))


SN = {"0.5": "shufflenet_v1_x0_5_g3", "1": "shufflenet_v1_x1_0_g3", "2": "shufflenet_v1_x2_0_g3"}


def bench_models() -> List[BenchModel]:
    have = set(list_models())
    for need in ("alexnet", "mobilenet_v1_x1_0", *SN.values()):
        if need not in have:
            raise MobileError(f"model {need!r} is not registered (shufflenet.models); the benchmark needs it")
    return [
        *(
            BenchModel(f"sn{w}", f"ShuffleNet {w}x (g=3)", f"ShuffleNet {w}x (g=3)", _registered(n), n)
            for w, n in SN.items()
        ),
        BenchModel("alexnet", "AlexNet", "AlexNet", _registered("alexnet"), "alexnet"),
        BenchModel("mobilenet", *["1.0 MobileNet-224"] * 2, _registered("mobilenet_v1_x1_0"), "mobilenet_v1_x1_0"),
        BenchModel("megvii0.5", "megvii-style 0.5x (peer)", None, _megvii(SN["0.5"]), peer=True),
        BenchModel("megvii1", "megvii-style 1x (peer)", None, _megvii(SN["1"]), peer=True),
        BenchModel("megvii2", "megvii-style 2x (peer)", None, _megvii(SN["2"]), peer=True),
        BenchModel("tv_v2_0.5", "torchvision ShuffleNetV2 0.5x (peer)", None, _torchvision_v2("x0_5"), peer=True),
        BenchModel("tv_v2_1", "torchvision ShuffleNetV2 1x (peer)", None, _torchvision_v2("x1_0"), peer=True),
    ]


def _pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --- runtimes ----------------------------------------------------------------------------------------


def eager_runner(model: nn.Module) -> Callable[[Tensor], Any]:
    def run(x: Tensor) -> Any:
        with torch.inference_mode():
            return model(x)

    return run


def _by_size(runs: Dict[Any, Callable[[Tensor], Any]]) -> Callable[[Tensor], Any]:
    """One runner over files that each serve one size (key ``(H, W)``) or all (key ``None``)."""
    return runs[None] if None in runs else lambda x: runs[tuple(x.shape[-2:])](x)


@dataclass
class BenchSettings:
    """What :func:`run_benchmark` measures and how (defaults: the paper's sizes, every runtime, one thread)."""

    keys: Optional[Sequence[str]] = None  #: :func:`bench_models` keys (default all)
    sizes: Sequence[Tuple[int, int]] = tuple(SIZES)
    runtimes: Sequence[str] = ("ptl", "pte", "onnx", "ncnn", "tflite")  #: registered runtimes and/or "eager"
    threads: int = 1
    warmup: int = 2
    repeats: int = 9
    max_seconds_per_size: float = 900.0
    export_dir: Path = Path("outputs/mobile/exported")
    verify_real: int = 1
    input_layout: str = "nhwc"
    log: Callable[[str], None] = print


def _check_keys(keys: Optional[Sequence[str]]) -> List[BenchModel]:
    models = bench_models()
    if keys is not None:
        unknown = sorted(set(keys) - {m.key for m in models})
        if unknown:
            raise MobileError(f"unknown benchmark model(s) {unknown}; valid: {[m.key for m in models]}")
    return [m for m in models if keys is None or m.key in keys]


def _export_runner(rt, src: ModelSource, st: BenchSettings, stem: str) -> Tuple[Callable[[Tensor], Any], List[str]]:
    """Export ``src`` through ``rt`` at every size (one file per size where the model's file cannot take them all,
    e.g. AlexNet's adaptive pool in ONNX), verified; the file(s) loaded for timing and the written paths."""
    spec = ExportSpec(sizes=st.sizes, images="auto", n_real=st.verify_real, name=stem, log=lambda s: None)
    try:
        per = {None: export(rt, src, st.export_dir, spec)}
    except MobileError as e:
        if len(st.sizes) == 1 or isinstance(e, VerificationError):
            raise
        one = {s: replace(spec, sizes=[s], name=f"{stem}_{s[0]}x{s[1]}") for s in st.sizes}
        per = {s: export(rt, src, st.export_dir, one[s]) for s in st.sizes}
    runs = {k: rt.load(ex.files, ex.sidecar, threads=st.threads) for k, ex in per.items()}
    paths: List[str] = []
    for ex in per.values():
        f = ex.files
        paths += [str(p) for p in (f.values() if isinstance(f, dict) else [f])]
    return _by_size(runs), paths


def run_benchmark(st: BenchSettings) -> Dict[str, Any]:
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(st.threads)
    try:
        result = _run_benchmark(st)
        result["kernel_isa"] = kernel_isa(result["settings"]["runtimes"])
        return result
    finally:
        torch.set_num_threads(prev_threads)


def _run_benchmark(st: BenchSettings) -> Dict[str, Any]:
    torch.manual_seed(0)
    log = st.log
    models = _check_keys(st.keys)
    known = runtimes()
    chosen: List[str] = []
    for name in st.runtimes:
        why = known[name].missing() if name in known else None
        if why:
            log(f"[bench] {name}: not installed, skipping ({why})")
        else:
            chosen.append(name)
    runners: Dict[Tuple[str, str], Callable[[Tensor], Any]] = {}
    files: Dict[str, Dict[str, Any]] = {}
    macs: Dict[str, Dict[str, int]] = {}
    for bm in models:
        model = bm.build().eval()
        files[bm.key] = {}
        macs[bm.key] = {f"{h}x{w}": count_macs(model, (h, w)) for h, w in st.sizes}
        src = ModelSource(model, bm.registered or bm.key, "benchmark (random init, trained-like BatchNorm)")
        for name in chosen:
            if name not in known:  # eager: the model itself
                runners[(bm.key, name)] = eager_runner(model)
                continue
            runners[(bm.key, name)], paths = _export_runner(known[name], src, st, f"bench_{bm.key}")
            log(f"[bench] exported + verified {bm.label} -> {', '.join(paths)}")
            files[bm.key][name] = paths
    cells: Dict[str, Dict[str, Dict[str, Any]]] = {}
    total, done = len(runners) * len(st.sizes), 0
    labels = {m.key: m.label for m in models}
    for size in st.sizes:
        tag = f"{size[0]}x{size[1]}"
        x_nchw = torch.randn(1, 3, *size)
        # nhwc: a tensor that arrives HWC (camera, decoder): no layout copy in any model
        x = x_nchw.contiguous(memory_format=torch.channels_last) if st.input_layout == "nhwc" else x_nchw
        feed = {k: (x_nchw if k[1] in known and known[k[1]].layout == "nchw" else x) for k in runners}
        cpu: Dict[Tuple[str, str], List[float]] = {k: [] for k in runners}
        wall: Dict[Tuple[str, str], List[float]] = {k: [] for k in runners}
        for k, run in runners.items():
            for _ in range(st.warmup):
                run(feed[k])
        start = time.perf_counter()
        for rounds in range(1, st.repeats + 1):
            for k, run in runners.items():  # interleaved: one run of every (model, runtime) per round
                xk = feed[k]
                w, c = time.perf_counter(), time.process_time()
                run(xk)
                cpu[k].append((time.process_time() - c) * 1e3)
                wall[k].append((time.perf_counter() - w) * 1e3)
            times = ", ".join(f"{k[0]}/{k[1]} {v[-1]:.1f}" for k, v in cpu.items())
            log(f"[bench] {tag:>9} round {rounds}/{st.repeats}: {times} ms")
            if time.perf_counter() - start > st.max_seconds_per_size and rounds >= 3:
                log(f"[bench] {tag}: time budget reached after {rounds} rounds")
                break
        for (key, rt), ts in cpu.items():
            done += 1
            ws = wall[(key, rt)]
            cell = {"median_ms": statistics.median(ts), "p90_ms": _pct(ts, 0.9), "min_ms": min(ts), "n": len(ts)}
            cell.update(runs_ms=ts, wall_median_ms=statistics.median(ws), wall_runs_ms=ws)
            cells.setdefault(key, {}).setdefault(rt, {})[tag] = cell
            log(
                f"[bench {done:>3}/{total}] {tag:>9} {labels[key]:<38} {rt:<5} median {cell['median_ms']:8.2f} ms  "
                f"p90 {cell['p90_ms']:8.2f} ms  wall median {cell['wall_median_ms']:8.2f} ms  (n={len(ts)})"
            )
    t8 = paper_tables()["table8_arm_latency_ms"]
    result = {
        "host": host_info(st.threads),
        "executorch": versions("executorch")["executorch"],
        "settings": {
            "threads": st.threads,
            "input_layout": st.input_layout,
            "warmup": st.warmup,
            "repeats": st.repeats,
            "sizes": [list(s) for s in st.sizes],
            "runtimes": chosen,
            "interleaved": True,
            "batch": 1,
            "clock": "process CPU time per call (time.process_time); wall time in wall_median_ms",
        },
        "models": {
            m.key: {
                **{a: getattr(m, a) for a in ("label", "paper_row", "registered", "peer")},
                "files": files[m.key],
                "macs": macs[m.key],
            }
            for m in models
        },
        "paper": {"platform": t8["platform"], "ms": {r["model"]: r["ms"] for r in t8["rows"]}},
        "cells": cells,
    }
    return analyse(result)


def build_parser() -> argparse.ArgumentParser:
    known = runtimes()
    p = argparse.ArgumentParser(description="Reproduce the paper's Table 8 (latency) on this machine.")
    add = p.add_argument
    add(
        "--models",
        nargs="+",
        default=None,
        help="subset of: sn0.5 sn1 sn2 alexnet mobilenet megvii0.5 megvii1 megvii2 tv_v2_0.5 tv_v2_1 (default all)",
    )
    add("--sizes", nargs="+", default=None, metavar="S|HxW", help="default 224 480x640 720x1280")
    add("--runtimes", nargs="+", default=list(known), choices=("eager", *known), help="default: every installed one")
    add("--threads", type=int, default=1, help="intra-op threads (default 1, as the paper)")
    add("--input-layout", choices=("nchw", "nhwc"), default="nhwc", help="timed tensor (default nhwc, a camera's)")
    add("--warmup", type=int, default=2)
    add("--repeats", type=int, default=9, help="interleaved rounds per size (default 9)")
    add("--max-seconds-per-size", type=float, default=900.0, help="stop adding rounds at a size after this long")
    add("--out", default="outputs/mobile/benchmark", help="folder for benchmark.json/.md/.png")
    add("--export-dir", default=None, help="where the verified .ptl/.pte go (default OUT/exported)")
    add("--quick", action="store_true", help="0.5x, AlexNet, megvii 0.5x, ShuffleNetV2 0.5x at 224, 480x640; 5 rounds")
    return p


def measure(args: argparse.Namespace, log: Callable[[str], None] = print) -> Tuple[Dict[str, Any], Path]:
    """Check the parsed arguments (before any work), then export, verify and time; the result and ``--out``."""
    sizes = [parse_size(s) for s in args.sizes] if args.sizes else list(SIZES)
    keys = args.models
    repeats = args.repeats
    if args.quick:
        sizes = [parse_size(s) for s in args.sizes] if args.sizes else [(224, 224), (480, 640)]
        keys = keys or ["sn0.5", "alexnet", "megvii0.5", "tv_v2_0.5"]
        repeats = min(repeats, 5)
    if args.threads < 1:
        raise MobileError(f"--threads must be >= 1, got {args.threads}")
    if repeats < 1 or args.warmup < 0:
        raise MobileError(f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {args.warmup}")
    _check_keys(keys)
    out = writable_dir(args.out)
    export_dir = writable_dir(args.export_dir, "--export-dir") if args.export_dir else out / "exported"
    settings = BenchSettings(keys, sizes, args.runtimes, args.threads, args.warmup, repeats)
    settings = replace(settings, max_seconds_per_size=args.max_seconds_per_size, export_dir=export_dir)
    return run_benchmark(replace(settings, input_layout=args.input_layout, log=log)), out


def write_outputs(result: Dict[str, Any], out: Path, sections: Sequence[str] = (), charts: Sequence = ()) -> str:
    """``benchmark.json``, ``.md`` (with extra markdown ``sections``) and ``.png`` (plus ``charts``: functions
    ``(result, folder) -> path or None``) under ``out``; the markdown."""
    from .report import markdown, plot

    write_json_atomic(result, out / "benchmark.json")
    md = markdown(result, result.get("command", ""), sections)
    write_text_atomic(md, out / "benchmark.md")
    pngs = [p for p in [plot(result, out / "benchmark.png"), *(c(result, out) for c in charts)] if p]
    print(md)
    print(f"[bench] wrote {out / 'benchmark.json'}, {out / 'benchmark.md'}" + "".join(f", {p}" for p in pngs))
    return md


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    result, out = measure(args)
    result["wall_s"] = time.time() - t0
    result["command"] = ("python mobile/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    write_outputs(result, out)
    print(f"[bench] done in {result['wall_s']:.0f} s")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``shufflenet-bench`` and ``mobile/benchmark.py``: :func:`main` through :func:`run_cli`."""
    return run_cli(main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
