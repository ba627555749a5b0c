"""The paper's Table 8 on this machine: ShuffleNet 0.5x/1x/2x (g=3) against AlexNet, MobileNet v1 and peers.

    python mobile/benchmark.py                 # 224x224, 480x640, 720x1280; .ptl and .pte; 1 thread; NHWC in
    python mobile/benchmark.py --quick         # a few minutes: fewer models, sizes and repeats
    python mobile/benchmark.py --profile-ops   # + per-op-kind profiles per runtime beside the MAC shares

Every model is exported with the project's exporters (:func:`.ptl.export_ptl`, :func:`.pte.export_pte`:
ShuffleNets in their runtime-specific equivalent forms, every file verified against its eager model at the
benchmark sizes) and timed through each runtime. All (model, runtime) pairs are *interleaved*: each round
runs every pair once at the current resolution, so load changes on a shared machine hit them alike. Time is
the process CPU time of one call (one thread: on a busy shared host, wall time also counts the time the
process waits for a core; both are recorded). Reported per model and size: the median ms per runtime, the
fastest runtime (the one the ratios use), multiply-adds per second and its share of AlexNet's MAC/s (the
efficiency behind the paper's "13x"), the paper's ms and ratios beside the measured ones; JSON + markdown + PNG.

Peers (measurement only, exported exactly as written, without this project's rewrites):

* *megvii-style* 0.5x/1x/2x: the very same ShuffleNet modules run in the order and style of megvii's public
  ShuffleNetV1 code (channel shuffle after the depthwise conv as reshape/permute/reshape, stride-2 ReLU on
  the branch): same weights and FLOPs, megvii's code structure;
* torchvision's ShuffleNetV2 0.5x and 1x (``torchvision.models.shufflenet_v2_x0_5`` / ``_x1_0``).
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
from torch import Tensor, nn

from ..complexity import count_macs
from ..errors import run_cli
from ..fileio import atomic_write, write_json_atomic, write_text_atomic
from ..models import create_model, list_models, paper_tables
from ..models.baselines import megvii_style
from . import opprofile
from .images import parse_size
from .ncnn_export import export_ncnn, ncnn_runner, require_ncnn
from .onnx_export import export_onnx, onnx_runner, require_onnx
from .pte import DELEGATE_OPS, executorch_available, executorch_version, export_pte, pte_runner
from .ptl import export_ptl, host_info
from .source import MobileError, ModelSource, writable_dir
from .tflite_export import export_tflite, require_litert, tflite_runner

warnings.filterwarnings("ignore", message=".*Lite Interpreter is deprecated.*")

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
        BenchModel("sn0.5", "ShuffleNet 0.5x (g=3)", "ShuffleNet 0.5x (g=3)", _registered(SN["0.5"]), SN["0.5"]),
        BenchModel("sn1", "ShuffleNet 1x (g=3)", "ShuffleNet 1x (g=3)", _registered(SN["1"]), SN["1"]),
        BenchModel("sn2", "ShuffleNet 2x (g=3)", "ShuffleNet 2x (g=3)", _registered(SN["2"]), SN["2"]),
        BenchModel("alexnet", "AlexNet", "AlexNet", _registered("alexnet"), "alexnet"),
        BenchModel(
            "mobilenet", "1.0 MobileNet-224", "1.0 MobileNet-224", _registered("mobilenet_v1_x1_0"), "mobilenet_v1_x1_0"
        ),
        BenchModel("megvii0.5", "megvii-style 0.5x (peer)", None, _megvii(SN["0.5"]), peer=True),
        BenchModel("megvii1", "megvii-style 1x (peer)", None, _megvii(SN["1"]), peer=True),
        BenchModel("megvii2", "megvii-style 2x (peer)", None, _megvii(SN["2"]), peer=True),
        BenchModel("tv_v2_0.5", "torchvision ShuffleNetV2 0.5x (peer)", None, _torchvision_v2("x0_5"), peer=True),
        BenchModel("tv_v2_1", "torchvision ShuffleNetV2 1x (peer)", None, _torchvision_v2("x1_0"), peer=True),
    ]


#: Ratios of the fastest runtime's medians, as (numerator key, denominator key, label, target or None).
RATIOS = [
    (
        "alexnet",
        "sn0.5",
        "AlexNet / ShuffleNet 0.5x (paper headline ~13x)",
        13.0,
    ),
    ("mobilenet", "sn2", "MobileNet 1.0 / ShuffleNet 2x", None),
    ("sn1", "sn0.5", "ShuffleNet 1x / 0.5x", None),
    ("sn2", "sn0.5", "ShuffleNet 2x / 0.5x", None),
    ("megvii0.5", "sn0.5", "megvii-style 0.5x / ours 0.5x", 1.5),
    ("megvii1", "sn1", "megvii-style 1x / ours 1x", 1.5),
    ("megvii2", "sn2", "megvii-style 2x / ours 2x", 1.5),
    ("tv_v2_0.5", "sn0.5", "torchvision ShuffleNetV2 0.5x / ours 0.5x", 1.0),
    ("tv_v2_1", "sn1", "torchvision ShuffleNetV2 1x / ours 1x", 1.0),
]

SIZES = [(224, 224), (480, 640), (720, 1280)]
#: ShuffleNet 0.5x's MAC/s as a share of AlexNet's at the same size, on each model's fastest runtime.
SHARE_TARGET = 0.70
#: The paper's rule of thumb (Sec. 4.5): each 4x fewer FLOPs gave ~2.6x speed.
RULE_SPEEDUP_PER_4X = 2.6
RUNTIMES = ("ptl", "pte", "onnx", "ncnn", "tflite")
#: What each runtime is timed on: the lite interpreter, ExecuTorch and LiteRT take the NHWC tensor as it arrives
#: (their XNNPACK kernels compute in NHWC; LiteRT gets its NHWC view, no copy); ONNX Runtime and ncnn take their
#: own NCHW layout, prepared outside the timing.
NCHW_RUNTIMES = ("onnx", "ncnn")


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


def _by_size(runs: Dict[Any, Callable[[Tensor], Any]]) -> Callable[[Tensor], Any]:
    """One runner over files that each serve one size (key ``(H, W)``) or all (key ``None``)."""
    if None in runs:
        return runs[None]
    return lambda x: runs[tuple(x.shape[-2:])](x)


def run_benchmark(
    keys: Optional[Sequence[str]] = None,
    sizes: Sequence[Tuple[int, int]] = SIZES,
    runtimes: Sequence[str] = RUNTIMES,
    threads: int = 1,
    warmup: int = 2,
    repeats: int = 9,
    max_seconds_per_size: float = 900.0,
    export_dir: Path = Path("outputs/mobile/exported"),
    verify_real: int = 1,
    input_layout: str = "nhwc",
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = _run_benchmark(
            keys,
            sizes,
            runtimes,
            threads,
            warmup,
            repeats,
            max_seconds_per_size,
            export_dir,
            verify_real,
            input_layout,
            log,
        )
        result["kernel_isa"] = opprofile.kernel_isa(result["settings"]["runtimes"])
        return result
    finally:
        torch.set_num_threads(prev_threads)


def _check_keys(keys: Optional[Sequence[str]]) -> List[BenchModel]:
    models = bench_models()
    if keys is not None:
        unknown = sorted(set(keys) - {m.key for m in models})
        if unknown:
            raise MobileError(f"unknown benchmark model(s) {unknown}; valid: {[m.key for m in models]}")
    return [m for m in models if keys is None or m.key in keys]


def _run_benchmark(
    keys, sizes, runtimes, threads, warmup, repeats, max_seconds_per_size, export_dir, verify_real, input_layout, log
):
    torch.manual_seed(0)
    models = _check_keys(keys)
    runtimes = list(runtimes)
    if "pte" in runtimes and not executorch_available():
        log("[bench] executorch is not installed: skipping the .pte runtime (pip install executorch==1.3.1)")
        runtimes.remove("pte")
    for rt, check, extra in (
        ("onnx", require_onnx, "onnx"),
        ("ncnn", require_ncnn, "ncnn"),
        ("tflite", require_litert, "litert"),
    ):
        if rt in runtimes:
            try:
                check()
            except MobileError:
                log(f'[bench] {rt}: not installed, skipping (pip install "shufflenet[{extra}]")')
                runtimes.remove(rt)
    runners: Dict[Tuple[str, str], Callable[[Tensor], Any]] = {}
    files: Dict[str, Dict[str, Any]] = {}
    macs: Dict[str, Dict[str, int]] = {}
    quiet = lambda s: None  # noqa: E731
    for bm in models:
        model = bm.build().eval()
        files[bm.key] = {}
        macs[bm.key] = {f"{h}x{w}": count_macs(model, (h, w)) for h, w in sizes}
        if "eager" in runtimes:
            runners[(bm.key, "eager")] = _eager_runner(model)
        src = ModelSource(model, bm.registered or bm.key, "benchmark (random init, trained-like BatchNorm)")
        if "ptl" in runtimes:
            path, _ = export_ptl(
                src, export_dir, sizes, images="auto", n_real=verify_real, basename=f"bench_{bm.key}", log=quiet
            )
            log(f"[bench] exported + verified {bm.label} -> {path}")
            runners[(bm.key, "ptl")] = _lite_runner(path)
            files[bm.key]["ptl"] = str(path)
        if "pte" in runtimes:
            paths, side = export_pte(
                src, export_dir, sizes, images="auto", n_real=verify_real, basename=f"bench_{bm.key}", log=quiet
            )
            log(
                f"[bench] exported + verified {bm.label} -> {', '.join(str(p) for p in paths.values())} "
                f"(ops outside XNNPACK: {[o for o in side['operators'] if o not in DELEGATE_OPS]})"
            )
            formats = {tuple(int(v) for v in tag.split("x")): f["memory_format"] for tag, f in side["files"].items()}
            runners[(bm.key, "pte")] = pte_runner(paths, threads=threads, memory_format=formats)
            files[bm.key]["pte"] = [str(p) for p in paths.values()]
            files[bm.key]["pte_operators"] = side["operators"]
        if "onnx" in runtimes:
            try:
                onnx_paths = {
                    None: export_onnx(
                        src, export_dir, sizes, images="auto", n_real=verify_real, basename=f"bench_{bm.key}", log=quiet
                    )[0]
                }
            except MobileError:  # no dynamic height/width (AlexNet's adaptive pool): one file per size
                onnx_paths = {
                    s: export_onnx(
                        src,
                        export_dir,
                        [s],
                        images="auto",
                        n_real=verify_real,
                        basename=f"bench_{bm.key}_{s[0]}x{s[1]}",
                        log=quiet,
                    )[0]
                    for s in sizes
                }
            log(f"[bench] exported + verified {bm.label} -> {', '.join(str(p) for p in onnx_paths.values())}")
            runners[(bm.key, "onnx")] = _by_size({k: onnx_runner(p, threads=threads) for k, p in onnx_paths.items()})
            files[bm.key]["onnx"] = [str(p) for p in onnx_paths.values()]
        if "ncnn" in runtimes:
            ncnn_paths, _ = export_ncnn(
                src, export_dir, sizes, images="auto", n_real=verify_real, basename=f"bench_{bm.key}", log=quiet
            )
            log(f"[bench] exported + verified {bm.label} -> {ncnn_paths['param']}")
            runners[(bm.key, "ncnn")] = ncnn_runner(ncnn_paths["param"], ncnn_paths["bin"], threads=threads)
            files[bm.key]["ncnn"] = [str(p) for p in ncnn_paths.values()]
        if "tflite" in runtimes:  # static shapes: one file per size; takes the NHWC view of the tensor fed
            tfl_paths, _ = export_tflite(
                src, export_dir, sizes, images="auto", n_real=verify_real, basename=f"bench_{bm.key}", log=quiet
            )
            log(f"[bench] exported + verified {bm.label} -> {', '.join(str(p) for p in tfl_paths.values())}")
            runners[(bm.key, "tflite")] = tflite_runner(tfl_paths, threads=threads)
            files[bm.key]["tflite"] = [str(p) for p in tfl_paths.values()]

    cells: Dict[str, Dict[str, Dict[str, Any]]] = {}
    total = len(runners) * len(sizes)
    done = 0
    for size in sizes:
        tag = f"{size[0]}x{size[1]}"
        x_nchw = torch.randn(1, 3, *size)
        x = x_nchw
        if input_layout == "nhwc":  # a tensor that arrives HWC (camera, decoder): no layout copy in any model
            x = x_nchw.contiguous(memory_format=torch.channels_last)
        feed = {k: (x_nchw if k[1] in NCHW_RUNTIMES else x) for k in runners}
        cpu: Dict[Tuple[str, str], List[float]] = {k: [] for k in runners}
        wall: Dict[Tuple[str, str], List[float]] = {k: [] for k in runners}
        for k, run in runners.items():
            for _ in range(warmup):
                run(feed[k])
        start = time.perf_counter()
        rounds = 0
        for _ in range(repeats):
            for k, run in runners.items():  # interleaved: one run of every (model, runtime) per round
                xk = feed[k]
                w, c = time.perf_counter(), time.process_time()
                run(xk)
                cpu[k].append((time.process_time() - c) * 1e3)
                wall[k].append((time.perf_counter() - w) * 1e3)
            rounds += 1
            log(
                f"[bench] {tag:>9} round {rounds}/{repeats}: "
                + ", ".join(f"{k[0]}/{k[1]} {v[-1]:.1f}" for k, v in cpu.items())
                + " ms"
            )
            if time.perf_counter() - start > max_seconds_per_size and rounds >= 3:
                log(f"[bench] {tag}: time budget reached after {rounds} rounds")
                break
        for (key, rt), ts in cpu.items():
            done += 1
            ws = wall[(key, rt)]
            cell = {
                "median_ms": statistics.median(ts),
                "p90_ms": _pct(ts, 0.9),
                "min_ms": min(ts),
                "n": len(ts),
                "runs_ms": ts,
                "wall_median_ms": statistics.median(ws),
                "wall_runs_ms": ws,
            }
            cells.setdefault(key, {}).setdefault(rt, {})[tag] = cell
            label = next(m.label for m in models if m.key == key)
            log(
                f"[bench {done:>3}/{total}] {tag:>9} {label:<38} {rt:<5} median {cell['median_ms']:8.2f} ms  "
                f"p90 {cell['p90_ms']:8.2f} ms  wall median {cell['wall_median_ms']:8.2f} ms  (n={len(ts)})"
            )

    result = {
        "host": host_info(threads),
        "executorch": executorch_version(),
        "settings": {
            "threads": threads,
            "input_layout": input_layout,
            "warmup": warmup,
            "repeats": repeats,
            "sizes": [list(s) for s in sizes],
            "runtimes": runtimes,
            "interleaved": True,
            "batch": 1,
            "clock": "process CPU time per call (time.process_time); wall time in wall_median_ms",
        },
        "models": {
            m.key: {
                "label": m.label,
                "paper_row": m.paper_row,
                "registered": m.registered,
                "peer": m.peer,
                "files": files[m.key],
                "macs": macs[m.key],
            }
            for m in models
        },
        "paper": {"platform": paper_tables()["table8_arm_latency_ms"]["platform"], "ms": paper_ms()},
        "cells": cells,
    }
    result["fastest"] = fastest(result)
    result["efficiency"] = efficiency(result)
    result["ratios"] = ratios(result)
    result["rule_of_thumb"] = rule_of_thumb(result)
    return result


def fastest(result: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Per model and size: the runtime with the lowest median (what the ratios use) and its median."""
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for key, per_rt in result["cells"].items():
        for tag in {t for c in per_rt.values() for t in c}:
            best = min(
                ((rt, c[tag]["median_ms"]) for rt, c in per_rt.items() if tag in c and rt != "eager"),
                key=lambda kv: kv[1],
                default=None,
            )
            if best is None:  # eager only
                best = min(((rt, c[tag]["median_ms"]) for rt, c in per_rt.items() if tag in c), key=lambda kv: kv[1])
            out.setdefault(key, {})[tag] = {"runtime": best[0], "median_ms": best[1]}
    return out


def efficiency(result: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """MAC/s of each model's fastest runtime and its share of AlexNet's MAC/s at the same size."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    fast = result["fastest"]
    for key, m in result["models"].items():
        for tag, macs in m["macs"].items():
            if tag not in fast.get(key, {}):
                continue
            gmacs = macs / (fast[key][tag]["median_ms"] / 1e3) / 1e9
            out.setdefault(key, {})[tag] = {"gmac_per_s": gmacs}
    for per in out.values():
        for tag, row in per.items():
            ref = out.get("alexnet", {}).get(tag)
            if ref:
                row["share_of_alexnet"] = row["gmac_per_s"] / ref["gmac_per_s"]
    return out


def ratios(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The paper's ratios and the measured ones (fastest runtime of each model; per runtime too)."""
    out = []
    pms = result["paper"]["ms"]
    models = result["models"]
    sizes = [f"{h}x{w}" for h, w in result["settings"]["sizes"]]
    all_sizes = [f"{h}x{w}" for h, w in SIZES]
    for num, den, label, target in RATIOS:
        if num not in models or den not in models:
            continue
        row: Dict[str, Any] = {
            "ratio": label,
            "num": num,
            "den": den,
            "paper": {},
            "measured": {},
            "fastest": {},
            "target": {},
            "met": {},
        }
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
            a, b = result["fastest"].get(num, {}).get(tag), result["fastest"].get(den, {}).get(tag)
            if a and b:
                row["fastest"][tag] = a["median_ms"] / b["median_ms"]
                want = target.get(tag) if isinstance(target, dict) else target
                if want is not None:
                    row["target"][tag] = want
                    row["met"][tag] = row["fastest"][tag] >= want
        out.append(row)
    return out


#: (bigger, smaller) model pairs the rule of thumb is shown for: the widths, and AlexNet against ShuffleNet 0.5x.
RULE_PAIRS = (("sn1", "sn0.5"), ("sn2", "sn1"), ("sn2", "sn0.5"), ("alexnet", "sn0.5"))


def rule_of_thumb(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Time ratios the paper's rule of thumb predicts for the ShuffleNet widths (from their MACs at 224) and the
    measured ones (fastest runtime)."""
    out = []
    for big, small in RULE_PAIRS:
        mb, ms = result["models"].get(big), result["models"].get(small)
        if not mb or not ms or not ms["macs"].get("224x224"):
            continue
        flops = mb["macs"]["224x224"] / ms["macs"]["224x224"]
        measured, per_runtime = {}, {}
        for tag in mb["macs"]:
            a, b = result["fastest"].get(big, {}).get(tag), result["fastest"].get(small, {}).get(tag)
            if a and b:
                measured[tag] = a["median_ms"] / b["median_ms"]
            for rt in result["settings"]["runtimes"]:
                a = result["cells"].get(big, {}).get(rt, {}).get(tag)
                b = result["cells"].get(small, {}).get(rt, {}).get(tag)
                if a and b:
                    per_runtime.setdefault(rt, {})[tag] = a["median_ms"] / b["median_ms"]
        predicted = RULE_SPEEDUP_PER_4X ** (math.log(flops) / math.log(4.0))
        out.append(
            {
                "pair": f"{mb['label']} / {ms['label']}",
                "flops_ratio": flops,
                "predicted": predicted,
                "measured": measured,  # fastest runtime of each model
                "per_runtime": per_runtime,
            }
        )
    return out


# --- reports -----------------------------------------------------------------------------------------


def markdown(result: Dict[str, Any], command: str = "") -> str:
    h = result["host"]
    sizes = [f"{a}x{b}" for a, b in result["settings"]["sizes"]]
    all_sizes = [f"{a}x{b}" for a, b in SIZES]
    rts = result["settings"]["runtimes"]
    st = result["settings"]
    lines = [
        "# Table 8 (latency), reproduced on this machine",
        "",
        f"Host: {h['cpu']} ({h['arch']}, {h['logical_cpus']} logical CPUs), {h['threads']} thread(s), "
        f"torch {h['torch']} (XNNPACK {'on' if h['xnnpack'] else 'off'}, "
        f"get_cpu_capability() {h.get('torch_cpu_capability', '?')})"
        + (f", executorch {result['executorch']}" if result.get("executorch") and "pte" in rts else "")
        + f"; batch 1, {st.get('input_layout', 'nchw').upper()} float32 tensor in, {st['warmup']} warm-up + up to "
        f"{st['repeats']} interleaved rounds; median process-CPU ms per call (wall medians in the JSON). "
        "Paper: " + result["paper"]["platform"] + ".",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += [
        "",
        "Median ms per runtime; **bold** = the fastest runtime, which the ratios and MAC/s use:",
        "",
        "| model | "
        + " | ".join(f"{rt} {s}" for s in sizes for rt in rts)
        + " | paper ms ("
        + ", ".join(sizes)
        + ") |",
        "|---|" + "---:|" * (len(sizes) * len(rts)) + "---|",
    ]
    for key, m in result["models"].items():
        p = result["paper"]["ms"].get(m["paper_row"] or "", None)
        pstr = ", ".join(f"{p[all_sizes.index(s)]:g}" if s in all_sizes else "-" for s in sizes) if p else "-"
        vals = []
        for s in sizes:
            best = result["fastest"].get(key, {}).get(s, {}).get("runtime")
            for rt in rts:
                c = result["cells"].get(key, {}).get(rt, {}).get(s)
                v = f"{c['median_ms']:.1f}" if c else "-"
                vals.append(f"**{v}**" if c and rt == best else v)
        lines.append(f"| {m['label']} | " + " | ".join(vals) + f" | {pstr} |")
    lines += [
        "",
        "Efficiency (fastest runtime): GMAC/s and share of AlexNet's MAC/s at the same size "
        "(the paper's implementation: ShuffleNet 0.5x at ~64 % of AlexNet's at 224; target: ShuffleNet 0.5x at "
        f">= {100 * SHARE_TARGET:.0f} %):",
        "",
        "| model | MMACs @224 | " + " | ".join(f"GMAC/s {s} | vs AlexNet {s}" for s in sizes) + " |",
        "|---|---:|" + "---:|---:|" * len(sizes),
    ]
    for key, m in result["models"].items():
        eff = result["efficiency"].get(key, {})
        m224 = m["macs"].get("224x224")
        cols = []
        for s in sizes:
            e = eff.get(s)
            share = e.get("share_of_alexnet") if e else None
            mark = (" ✓" if share >= SHARE_TARGET else " ✗") if key == "sn0.5" and share is not None else ""
            cols += [f"{e['gmac_per_s']:.2f}" if e else "-", f"{100 * share:.0f} %{mark}" if share is not None else "-"]
        lines.append(
            f"| {m['label']} | {m224 / 1e6:.0f} | " + " | ".join(cols) + " |"
            if m224
            else f"| {m['label']} | - | " + " | ".join(cols) + " |"
        )
    lines += [
        "",
        "Ratios of the fastest runtimes' medians (paper; measured; target, met?):",
        "",
        "| ratio | "
        + " | ".join(f"paper {s}" for s in sizes)
        + " | "
        + " | ".join(f"measured {s}" for s in sizes)
        + " | target |",
        "|---|" + "---:|" * (2 * len(sizes)) + "---|",
    ]
    for r in result["ratios"]:
        ps = [f"{r['paper'][s]:.1f}x" if s in r["paper"] else "-" for s in sizes]
        ms = []
        for s in sizes:
            v = r["fastest"].get(s)
            mark = "" if s not in r["met"] else (" ✓" if r["met"][s] else " ✗")
            ms.append(f"{v:.2f}x{mark}" if v is not None else "-")
        tgt = ", ".join(f">= {r['target'][s]:g}" for s in sizes if s in r["target"])
        if r["target"] and len(set(r["target"].values())) == 1:
            tgt = f">= {next(iter(r['target'].values())):g}"
        lines.append(f"| {r['ratio']} | " + " | ".join(ps) + " | " + " | ".join(ms) + f" | {tgt or '-'} |")
    lines += [
        "",
        "The same ratios per runtime (each model through that runtime):",
        "",
        "| ratio | runtime | " + " | ".join(sizes) + " |",
        "|---|---|" + "---:|" * len(sizes),
    ]
    for r in result["ratios"]:
        for rt, per in r["measured"].items():
            lines.append(
                f"| {r['ratio']} | {rt} | " + " | ".join(f"{per[s]:.2f}x" if s in per else "-" for s in sizes) + " |"
            )
    lines += rule_markdown(result, sizes)
    lines += isa_markdown(result)
    lines += ops_markdown(result)
    lines += [
        "",
        "The machine is shared with other jobs: absolute ms are noisy; the ratios of interleaved runs are the result.",
        "",
    ]
    return "\n".join(lines)


def rule_markdown(result: Dict[str, Any], sizes: Sequence[str]) -> List[str]:
    """The rule-of-thumb table: predicted time ratio beside the measured one, on the fastest and per runtime."""
    rule = result.get("rule_of_thumb") or rule_of_thumb(result)
    if not rule:
        return []
    lines = [
        "",
        "The paper's rule of thumb (each 4x fewer FLOPs gave ~2.6x speed, i.e. time ~ FLOPs^0.69) beside the "
        "measured time ratios, on each model's fastest runtime and through each runtime:",
        "",
        "| pair | runtime | FLOPs ratio | predicted | " + " | ".join(f"measured {s}" for s in sizes) + " |",
        "|---|---|---:|---:|" + "---:|" * len(sizes),
    ]
    for row in rule:
        per = [("fastest", row["measured"])] + list(row.get("per_runtime", {}).items())
        for rt, measured in per:
            lines.append(
                f"| {row['pair']} | {rt} | {row['flops_ratio']:.1f}x | {row['predicted']:.2f}x | "
                + " | ".join(f"{measured[s]:.2f}x" if s in measured else "-" for s in sizes)
                + " |"
            )
    return lines


def isa_markdown(result: Dict[str, Any]) -> List[str]:
    """Which kernels each runtime ran, as far as it says (``"not reported"`` where it does not)."""
    isa = result.get("kernel_isa")
    if not isa:
        return []
    host = isa["host"]
    flags = host.get("cpu_flags")
    lines = [
        "",
        f"Kernel ISA: host {host['arch']}, torch `get_cpu_capability()` {host['torch_cpu_capability']}, oneDNN bf16 "
        f"{host['onednn_bf16']}, fp16 {host['onednn_fp16']}; CPU flags the runtimes dispatch on: "
        + (", ".join(flags) if flags else "not readable")
        + ". What each runtime says about its kernels:",
        "",
        "| runtime | kernels | what it reports |",
        "|---|---|---|",
    ]
    for rt, info in isa["runtimes"].items():
        lines.append(f"| {rt} | {info.get('kernels', '-')} | {opprofile.isa_summary(info)} |")
    return lines


def ops_markdown(result: Dict[str, Any]) -> List[str]:
    """Per model: time share per op kind through each runtime beside the op kind's MAC share."""
    prof = result.get("op_profile")
    if not prof:
        return []
    sizes = prof["sizes"]
    lines = [
        "",
        "Where the time goes (`--profile-ops`): share of one call's time per op kind (ms in brackets; each "
        f"operator's fastest of {prof['runs']} profiled calls) through each runtime that can say it, beside the "
        "op kind's share of the multiply-adds (convolutions and fc; the paper's count). Lite interpreter / eager: "
        "torch profiler; ONNX Runtime: its own profiler (SessionOptions.enable_profiling). The profilers' clocks "
        "are wall time: where the profiled total is well above the timed (process-CPU) median, the host was busy "
        "and long operators are over-weighted; on a quiet host the two agree within the profiler's overhead.",
    ]
    for rt, why in prof.get("unavailable", {}).items():
        lines.append(f"No per-op times from {rt}: {why}.")
    for key, entry in prof["models"].items():
        rts = list(entry["runtimes"])
        kinds = [k for k in opprofile.OP_KINDS if any(k in entry["macs"].get(s, {}) for s in sizes)]
        for rt in rts:
            for s in sizes:
                kinds += [k for k in entry["runtimes"][rt].get(s, {}) if k not in kinds]
        cols = [(s, rt) for s in sizes for rt in ["MACs", *rts]]
        lines += [
            "",
            f"{entry['label']}:",
            "",
            "| op kind | " + " | ".join(f"{rt} {s}" for s, rt in cols) + " |",
            "|---|" + "---:|" * len(cols),
        ]
        for k in kinds:
            vals = []
            for s, rt in cols:
                if rt == "MACs":
                    m = entry["macs"].get(s, {}).get(k)
                    vals.append(f"{m['pct']:.1f} %" if m else "-")
                else:
                    c = entry["runtimes"][rt].get(s, {}).get(k)
                    vals.append(f"{c['pct']:.1f} % ({c['ms']:.2f})" if c else "-")
            lines.append(f"| {k} | " + " | ".join(vals) + " |")
        total = []
        for s, rt in cols:
            if rt == "MACs":
                total.append(f"{sum(v['macs'] for v in entry['macs'].get(s, {}).values()) / 1e6:.0f} M")
            else:
                total.append(f"{sum(v['ms'] for v in entry['runtimes'][rt].get(s, {}).values()):.2f} ms")
        lines.append("| total profiled | " + " | ".join(total) + " |")
        timed = []
        for s, rt in cols:
            c = result.get("cells", {}).get(key, {}).get(rt, {}).get(s)
            timed.append(f"{c['median_ms']:.2f} ms" if c and rt != "MACs" else "")
        lines.append("| timed median (CPU) | " + " | ".join(timed) + " |")
    return lines


def plot_ops(result: Dict[str, Any], path: Path) -> Optional[Path]:
    """Stacked bars: per profiled model and size, the MAC share and each runtime's time share per op kind."""
    prof = result.get("op_profile")
    if not prof or not prof["models"]:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    sizes = prof["sizes"]
    entries = list(prof["models"].values())
    kinds = list(opprofile.OP_KINDS) + ["conv (order not matched)"]
    colors = {k: plt.get_cmap("tab20")(i % 20) for i, k in enumerate(kinds)}
    fig, axes = plt.subplots(
        len(entries), len(sizes), figsize=(max(9.0, 4.5 * len(sizes)), 2.6 * len(entries) + 1), squeeze=False
    )
    for i, entry in enumerate(entries):
        for j, s in enumerate(sizes):
            ax = axes[i][j]
            bars = [("MACs", {k: v["pct"] for k, v in entry["macs"].get(s, {}).items()})]
            bars += [(rt, {k: v["pct"] for k, v in per.get(s, {}).items()}) for rt, per in entry["runtimes"].items()]
            for b, (_name, shares) in enumerate(bars):
                left = 0.0
                for k in kinds:
                    if shares.get(k):
                        ax.barh(b, shares[k], left=left, color=colors[k])
                        left += shares[k]
            ax.set_yticks(range(len(bars)))
            ax.set_yticklabels([n for n, _ in bars], fontsize=7)
            ax.set_xlim(0, 100)
            ax.set_title(f"{entry['label']} {s}: share in %", fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in kinds]
    fig.legend(handles, kinds, loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return path


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
        ax.set_xticklabels([result["models"][k]["label"].replace(" (", "\n(") for k in keys], fontsize=6, rotation=45)
        ax.legend(fontsize=8)
        ax2 = axes[1][j]
        rr = result["ratios"]
        series = [
            ("paper", [r["paper"].get(s, float("nan")) for r in rr]),
            ("measured", [r["fastest"].get(s, float("nan")) for r in rr]),
        ]
        w2 = 0.8 / len(series)
        for i, (lab, vals) in enumerate(series):
            ax2.bar([x + i * w2 for x in range(len(rr))], vals, w2, label=lab)
        ax2.set_title(f"{s}: ratios (paper vs measured, fastest runtime)")
        ax2.set_xticks([x + w2 * (len(series) - 1) / 2 for x in range(len(rr))])
        ax2.set_xticklabels([r["ratio"].split(" (")[0].replace(" / ", "\n/ ") for r in rr], fontsize=6, rotation=45)
        ax2.axhline(1.0, color="k", lw=0.5)
        ax2.legend(fontsize=8)
    h = result["host"]
    fig.suptitle(
        f"ShuffleNet Table 8 on {h['cpu']} ({h['arch']}), {h['threads']} thread(s), torch {h['torch']}", fontsize=10
    )
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return path


# --- per-op profiles -----------------------------------------------------------------------------------

#: The models whose per-op profiles explain the targets: AlexNet / ShuffleNet 0.5x and the share of AlexNet's
#: MAC/s (sn0.5, alexnet), ours against torchvision's ShuffleNetV2 at 0.5x and 1x.
PROFILE_MODELS = ("sn0.5", "alexnet", "tv_v2_0.5", "sn1", "tv_v2_1")


def profile_ops(
    result: Dict[str, Any],
    sizes: Sequence[Tuple[int, int]],
    input_layout: str = "nhwc",
    runs: int = 5,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Time per op kind through every runtime that can say it, beside each kind's share of the MACs, for the
    :data:`PROFILE_MODELS` of a :func:`run_benchmark` result (its exported files); the runtimes that cannot
    are listed with the reason."""
    from .rewrite import for_runtime

    threads = result["settings"]["threads"]
    rts = result["settings"]["runtimes"]
    builds = {m.key: m for m in bench_models()}
    tags = [f"{h}x{w}" for h, w in sizes]
    out: Dict[str, Any] = {"sizes": tags, "runs": runs, "models": {}, "unavailable": {}}
    for rt in rts:
        if rt in opprofile.NO_OP_TIMES:
            out["unavailable"][rt] = opprofile.NO_OP_TIMES[rt]
    for key in PROFILE_MODELS:
        if key not in result["models"]:
            continue
        model = builds[key].build().eval()
        files = result["models"][key]["files"]
        entry: Dict[str, Any] = {"label": builds[key].label, "macs": {}, "runtimes": {}}
        for (h, w), tag in zip(sizes, tags):
            entry["macs"][tag] = opprofile.mac_shares(model, (h, w))
        for rt in rts:
            per: Dict[str, Any] = {}
            if rt in ("ptl", "eager") and (rt == "eager" or files.get("ptl")):
                form = for_runtime(model, "ptl") if rt == "ptl" else model
                run = _lite_runner(Path(files["ptl"])) if rt == "ptl" else _eager_runner(model)
                convs = opprofile.conv_kinds(form)
                for (h, w), tag in zip(sizes, tags):
                    x = torch.randn(1, 3, h, w)
                    if input_layout == "nhwc":
                        x = x.contiguous(memory_format=torch.channels_last)
                    per[tag] = opprofile.profile_layer_types(run, x, convs, runs)
            elif rt == "onnx" and files.get("onnx"):
                scopes = opprofile.pool_scopes(for_runtime(model, "onnx"))
                for (h, w), tag in zip(sizes, tags):
                    path = opprofile.onnx_file_for(files["onnx"], (h, w))
                    if path:
                        per[tag] = opprofile.profile_onnx(path, torch.randn(1, 3, h, w), runs, threads, scopes)
            elif rt == "pte" and files.get("pte") and "pte" not in out["unavailable"]:
                ok, said = opprofile.etdump_probe(files["pte"][0], torch.randn(1, 3, *sizes[0]))
                out["unavailable"]["pte"] = said if not ok else f"{said}; reading it is not implemented"
            if per:
                entry["runtimes"][rt] = per
                log(f"[bench] profiled {entry['label']} through {rt} at {', '.join(per)}")
        out["models"][key] = entry
    return out


# --- command line ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mobile/benchmark.py", description="Reproduce the paper's Table 8 (latency) on this machine."
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="subset of: sn0.5 sn1 sn2 alexnet mobilenet megvii0.5 megvii1 megvii2 tv_v2_0.5 tv_v2_1 (default all)",
    )
    p.add_argument("--sizes", nargs="+", default=None, metavar="S|HxW", help="default 224 480x640 720x1280")
    p.add_argument(
        "--runtimes",
        nargs="+",
        default=list(RUNTIMES),
        choices=("eager", *RUNTIMES),
        help="default: every installed one of ptl pte onnx ncnn tflite",
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the paper)")
    p.add_argument(
        "--input-layout",
        choices=("nchw", "nhwc"),
        default="nhwc",
        help="layout of the tensor timed in the lite interpreter / ExecuTorch (default nhwc: as a camera frame "
        "arrives, no model pays a layout copy); ONNX Runtime and ncnn take NCHW",
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9, help="interleaved rounds per size (default 9)")
    p.add_argument(
        "--max-seconds-per-size", type=float, default=900.0, help="stop adding rounds at a size after this long"
    )
    p.add_argument("--out", default="outputs/mobile/benchmark", help="folder for benchmark.json/.md/.png")
    p.add_argument("--export-dir", default=None, help="where the verified .ptl/.pte go (default OUT/exported)")
    p.add_argument(
        "--profile-ops",
        "--profile",
        dest="profile_ops",
        action="store_true",
        help="add per-op-kind profiles (time share beside MAC share) of ShuffleNet 0.5x/1x, AlexNet and "
        "torchvision ShuffleNetV2 0.5x/1x through every runtime that can give per-op times",
    )
    p.add_argument("--profile-runs", type=int, default=5, help="profiled calls per model, runtime and size (default 5)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="0.5x, AlexNet, megvii-style 0.5x, ShuffleNetV2 0.5x at 224 and 480x640, 5 rounds",
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes] if args.sizes else list(SIZES)
    keys = args.models
    repeats = args.repeats
    if args.quick:
        sizes = [parse_size(s) for s in args.sizes] if args.sizes else [(224, 224), (480, 640)]
        keys = keys or ["sn0.5", "alexnet", "megvii0.5", "tv_v2_0.5"]
        repeats = min(repeats, 5)
    if args.threads < 1:
        raise MobileError(f"--threads must be >= 1, got {args.threads}")
    if args.profile_runs < 1:
        raise MobileError(f"--profile-runs must be >= 1, got {args.profile_runs}")
    if repeats < 1 or args.warmup < 0:
        raise MobileError(f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {args.warmup}")
    _check_keys(keys)
    out = writable_dir(args.out)
    export_dir = writable_dir(args.export_dir, "--export-dir") if args.export_dir else out / "exported"
    t0 = time.time()
    result = run_benchmark(
        keys,
        sizes,
        args.runtimes,
        args.threads,
        args.warmup,
        repeats,
        args.max_seconds_per_size,
        export_dir,
        input_layout=args.input_layout,
    )
    if args.profile_ops:
        prev = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            result["op_profile"] = profile_ops(result, sizes, args.input_layout, args.profile_runs)
        finally:
            torch.set_num_threads(prev)
    result["wall_s"] = time.time() - t0
    command = "python mobile/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result["command"] = command.strip()
    write_json_atomic(result, out / "benchmark.json")
    md = markdown(result, result["command"])
    write_text_atomic(md, out / "benchmark.md")
    png = plot(result, out / "benchmark.png")
    ops_png = plot_ops(result, out / "benchmark_ops.png")
    print(md)
    print(
        f"[bench] wrote {out / 'benchmark.json'}, {out / 'benchmark.md'}"
        + (f", {png}" if png else "")
        + (f", {ops_png}" if ops_png else "")
        + f" in {result['wall_s']:.0f} s"
    )
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``shufflenet-bench`` and ``mobile/benchmark.py``: :func:`main` through :func:`run_cli`."""
    return run_cli(main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
