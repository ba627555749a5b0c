"""Where a runtime's time goes per op kind: the Table-8 benchmark with per-op-kind profiles (docs/mobile.md).

    python -m tools.mobile_opprofile --quick --profile-ops      # the benchmark's arguments, + --profile-ops

Runs ``shufflenet-bench`` (:mod:`shufflenet.mobile.benchmark`) and adds, with ``--profile-ops``, the time share
per op kind of the :data:`PROFILE_MODELS` through every runtime that can say it, beside each kind's share of the
multiply-adds, to ``benchmark.json`` / ``.md`` and ``benchmark_ops.png``. A developer tool: only the project's
docs use these profiles.

* Per-op profiles, grouped into :data:`OP_KINDS` (grouped 1x1 conv, depthwise conv, dense conv, shuffle,
  add/ReLU, pool, fc, ...), each beside that kind's share of the multiply-adds (:func:`mac_shares`, the paper's
  count: convolutions and fully connected layers): the lite interpreter (and eager) through the torch profiler
  (:func:`profile_layer_types`), ONNX Runtime through its own profiler (``SessionOptions.enable_profiling``,
  :func:`aggregate_ort_profile`). ExecuTorch, ncnn and LiteRT are probed and the reason they give no per-op
  times is recorded.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch
from torch import Tensor, nn

from shufflenet.fileio import atomic_write
from shufflenet.mobile.artifact import filtered_stderr
from shufflenet.mobile.rewrite import FastShuffleUnit, for_runtime

__all__ = [
    "OP_KINDS",
    "conv_kind",
    "conv_kinds",
    "mac_shares",
    "profile_layer_types",
    "aggregate_ort_profile",
    "profile_onnx",
    "etdump_probe",
    "pool_scopes",
    "onnx_file_for",
    "NO_OP_TIMES",
    "PROFILE_MODELS",
    "profile_ops",
]

#: The op kinds of a profile, in the order the tables list them.
OP_KINDS = (
    "grouped 1x1 conv",
    "dense 1x1 conv",
    "depthwise conv",
    "dense conv (kxk)",
    "grouped conv (kxk)",
    "channel shuffle / reshape",
    "add / ReLU",
    "pool",
    "fc",
    "concat / split",
    "layout copies / reorders",
    "other",
)


def conv_kind(in_channels: int, groups: int, kernel: Tuple[int, int]) -> str:
    """The op kind of a 2-D convolution: depthwise (one input channel per group), grouped, or dense; 1x1 or kxk."""
    if groups > 1 and in_channels == groups:
        return "depthwise conv"
    one = tuple(kernel) == (1, 1)
    if groups > 1:
        return "grouped 1x1 conv" if one else "grouped conv (kxk)"
    return "dense 1x1 conv" if one else "dense conv (kxk)"


def _pool_convs(form: nn.Module) -> Set[int]:
    """ids of the convolutions that compute a pooling (the rewritten stride-2 shortcut ``avg_pool2d`` as a
    depthwise conv with weights 1/9): a pool in the paper's network, so counted as a pool."""
    return {
        id(m.shortcut) for m in form.modules() if isinstance(m, FastShuffleUnit) and isinstance(m.shortcut, nn.Conv2d)
    }


def _module_kind(m: nn.Module, pool_ids: Set[int]) -> Optional[str]:
    if isinstance(m, nn.Conv2d):
        return "pool" if id(m) in pool_ids else conv_kind(m.in_channels, m.groups, m.kernel_size)
    if isinstance(m, nn.Linear):
        return "fc"
    return None


def _forward_calls(model: nn.Module, size: Tuple[int, int]) -> List[Tuple[nn.Module, Tensor, Tensor]]:
    """(module, input, output) of every ``Conv2d`` / ``Linear`` call of one batch-1 forward, in call order."""
    calls: List[Tuple[nn.Module, Tensor, Tensor]] = []

    def hook(m, inp, out):
        calls.append((m, inp[0], out))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls


def conv_kinds(form: nn.Module, size: Tuple[int, int] = (64, 64)) -> List[str]:
    """Op kind of each convolution of ``form`` (what was exported) in execution order: the order in which a
    runtime's profile lists its convolution events."""
    pool_ids = _pool_convs(form)
    return [_module_kind(m, pool_ids) for m, _, _ in _forward_calls(form, size) if isinstance(m, nn.Conv2d)]


def mac_shares(model: nn.Module, size: Tuple[int, int]) -> Dict[str, Dict[str, float]]:
    """Multiply-adds of ``model`` (the network as defined, batch 1) per op kind and their share in %: every
    convolution ``out.numel() * in/groups * kh * kw`` and fully connected layer ``in * out`` (the paper's count,
    the same total as :func:`shufflenet.complexity.count_macs`)."""
    totals: Dict[str, int] = {}
    for m, _x, y in _forward_calls(model, size):
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs = y.numel() * (m.in_channels // m.groups) * kh * kw
        else:
            macs = y.numel() * m.in_features
        kind = _module_kind(m, set())
        totals[kind] = totals.get(kind, 0) + int(macs)
    total = sum(totals.values()) or 1
    return {k: {"macs": v, "pct": 100.0 * v / total} for k, v in _ordered(totals)}


def _ordered(totals: Dict[str, Any]) -> List[Tuple[str, Any]]:
    return sorted(totals.items(), key=lambda kv: OP_KINDS.index(kv[0]) if kv[0] in OP_KINDS else len(OP_KINDS))


def _shares(totals: Dict[str, float], detail: Optional[Dict[str, Dict[str, float]]] = None) -> Dict[str, Any]:
    total = sum(totals.values()) or 1.0
    out: Dict[str, Any] = {}
    for k, v in _ordered(totals):
        out[k] = {"ms": v, "pct": 100.0 * v / total}
        if detail and k in detail:
            out[k]["ops"] = dict(sorted(detail[k].items(), key=lambda kv: -kv[1]))
    return out


# --- the lite interpreter (and eager) through the torch profiler ----------------------------------------

#: Top-level operators of the lite interpreter / eager forward and their op kind; convolutions are told apart by
#: their position in the execution order (:func:`conv_kinds`).
_TORCH_OPS = {
    "aten::channel_shuffle": "channel shuffle / reshape",
    "aten::native_channel_shuffle": "channel shuffle / reshape",
    "aten::pixel_shuffle": "channel shuffle / reshape",
    "aten::view": "channel shuffle / reshape",
    "aten::reshape": "channel shuffle / reshape",
    "aten::transpose": "channel shuffle / reshape",
    "aten::permute": "channel shuffle / reshape",
    "aten::flatten": "channel shuffle / reshape",
    "aten::contiguous": "channel shuffle / reshape",  # torchvision's shuffle: view, transpose, contiguous, view
    "aten::_add_relu": "add / ReLU",
    "aten::add": "add / ReLU",
    "aten::add_": "add / ReLU",
    "aten::relu": "add / ReLU",
    "aten::relu_": "add / ReLU",
    "aten::hardtanh": "add / ReLU",
    "aten::hardtanh_": "add / ReLU",
    "aten::clamp": "add / ReLU",
    "aten::max_pool2d": "pool",
    "aten::max_pool2d_with_indices": "pool",
    "aten::avg_pool2d": "pool",
    "aten::adaptive_avg_pool2d": "pool",
    "aten::mean": "pool",
    "aten::maximum": "pool",  # the stem max pool as the max of strided slices of the -inf-padded input
    "aten::pad": "pool",
    "aten::constant_pad_nd": "pool",
    "aten::linear": "fc",
    "aten::addmm": "fc",
    "prepacked::linear_clamp_run": "fc",
    "aten::cat": "concat / split",
    "aten::chunk": "concat / split",
    "aten::split": "concat / split",
    "aten::slice": "concat / split",
    "aten::dropout": "other",
}
#: What the torch profiler's kineto backend says on a CPU-only host at every start and stop (the CUDA build looks
#: for a GPU): said to the user it hides what matters, so dropped inside the profiled block only.
KINETO_CHATTER = (
    r"^USDT:.*ActivityProfilerController\.cpp:\d+\] profiler_(start|stop)",
    r"^ERROR:.*DeviceProperties\.cpp:\d+\] gpuGetDeviceCount failed",
)
_CONV_OPS = ("prepacked::conv2d_clamp_run", "aten::conv2d")
#: Copies a runtime makes inside a convolution (desktop tensors lack XNNPACK's tail padding; layout changes).
_COPY_OPS = ("aten::copy_", "aten::contiguous", "aten::clone")


def _top(e):
    while e.cpu_parent is not None:
        e = e.cpu_parent
    return e


def profile_layer_types(
    run: Callable[[Tensor], Any], x: Tensor, convs: Sequence[str], runs: int = 5
) -> Dict[str, Dict[str, float]]:
    """CPU time per op kind of one call of ``run(x)``: the torch profiler over ``runs`` calls (after one warm-up).

    Each event's self time goes to the kind of its top-level operator; convolutions are told apart by their
    position in the execution order (``convs``, from :func:`conv_kinds`), and copies made inside a convolution or
    linear layer count as ``layout copies / reorders``. Each top-level operator's time is its fastest over the
    calls (the profiler's clock is wall time: a call preempted on a shared host does not count). If the calls do
    not list the same operators, or the number of convolutions is not ``len(convs)`` per call, the means are
    taken and the convolutions are ``conv (order not matched)``."""
    from torch.autograd import profiler

    run(x)
    with filtered_stderr(KINETO_CHATTER, fd=1), filtered_stderr(KINETO_CHATTER), profiler.profile() as prof:
        for _ in range(runs):
            run(x)
    events = sorted(prof.function_events, key=lambda e: e.time_range.start)
    tops = sorted({id(_top(e)): _top(e) for e in events}.values(), key=lambda e: e.time_range.start)
    conv_events = [t for t in tops if t.name in _CONV_OPS]
    matched = bool(convs) and len(conv_events) == runs * len(convs)
    kind_of: Dict[int, str] = {}
    for i, t in enumerate(conv_events):
        kind_of[id(t)] = convs[i % len(convs)] if matched else "conv (order not matched)"
    per_top: Dict[int, Dict[str, float]] = {}  # top-level event -> ms per kind of its subtree's self times
    for e in events:
        top = _top(e)
        kind = kind_of.get(id(top)) or _TORCH_OPS.get(top.name, "other")
        if e is not top and e.name in _COPY_OPS and (top.name in _CONV_OPS or _TORCH_OPS.get(top.name) == "fc"):
            kind = "layout copies / reorders"
        d = per_top.setdefault(id(top), {})
        d[kind] = d.get(kind, 0.0) + e.self_cpu_time_total / 1e3
    n = len(tops) // runs if runs and len(tops) % runs == 0 else 0
    aligned = n > 0 and all(tops[k].name == tops[r * n + k].name for r in range(runs) for k in range(n))
    totals: Dict[str, float] = {}
    detail: Dict[str, Dict[str, float]] = {}

    def add(kind: str, op: str, ms: float) -> None:
        totals[kind] = totals.get(kind, 0.0) + ms
        detail.setdefault(kind, {})[op] = detail.get(kind, {}).get(op, 0.0) + ms

    if aligned and matched:
        for k in range(n):
            kinds = {kd for r in range(runs) for kd in per_top[id(tops[r * n + k])]}
            for kd in kinds:
                add(kd, tops[k].name, min(per_top[id(tops[r * n + k])].get(kd, 0.0) for r in range(runs)))
    else:
        for t in tops:
            for kd, ms in per_top[id(t)].items():
                add(kd, t.name, ms / runs)
    return _shares(totals, detail)


# --- ONNX Runtime through its own profiler ---------------------------------------------------------------

_ORT_OPS = {
    "Gemm": "fc",
    "FusedGemm": "fc",
    "MatMul": "fc",
    "FusedMatMul": "fc",
    "ReorderInput": "layout copies / reorders",
    "ReorderOutput": "layout copies / reorders",
    "Reshape": "channel shuffle / reshape",
    "Transpose": "channel shuffle / reshape",
    "Flatten": "channel shuffle / reshape",
    "Squeeze": "channel shuffle / reshape",
    "Unsqueeze": "channel shuffle / reshape",
    "Add": "add / ReLU",
    "Sum": "add / ReLU",
    "Relu": "add / ReLU",
    "Clip": "add / ReLU",
    "Mul": "add / ReLU",
    "MaxPool": "pool",
    "AveragePool": "pool",
    "GlobalAveragePool": "pool",
    "GlobalMaxPool": "pool",
    "ReduceMean": "pool",
    "Concat": "concat / split",
    "Split": "concat / split",
    "Slice": "concat / split",
    "Gather": "concat / split",
}


def _scope(node_name: str) -> str:
    """The module path in an exported node's name: ``/stage2/stage2.0/shortcut/Conv`` -> ``stage2.0.shortcut``."""
    parts = [p for p in node_name.split("/") if p][:-1]
    path, last = "", ""
    for p in parts:
        if last and p.startswith(last + "."):
            path = path[: len(path) - len(last)] + p
        else:
            path = f"{path}.{p}" if path else p
        last = p
    return path


def _ort_kind(e: Dict[str, Any], pool_scopes: Iterable[str]) -> str:
    args = e.get("args", {})
    op = args.get("op_name", "")
    ins = [next(iter(d.values())) for d in args.get("input_type_shape", []) if d]
    outs = args.get("output_type_shape", [])
    if op in ("Conv", "FusedConv", "NhwcFusedConv"):
        if any(_scope(e["name"]) == s or _scope(e["name"]).startswith(s + ".") for s in pool_scopes):
            return "pool"
        if len(ins) >= 2 and len(ins[0]) == 4 and len(ins[1]) == 4 and ins[1][1]:
            groups = max(1, round(ins[0][1] / ins[1][1]))
            return conv_kind(ins[0][1], groups, (ins[1][2], ins[1][3]))
        return "dense conv (kxk)"
    if outs and not any(k.startswith("float") for d in outs for k in d):
        return "other"  # integer shape arithmetic (Shape, Gather, Unsqueeze, Concat of dims ...)
    return _ORT_OPS.get(op, "other")


def aggregate_ort_profile(
    events: Sequence[Dict[str, Any]], runs: Optional[int] = None, pool_scopes: Iterable[str] = ()
) -> Dict[str, Dict[str, Any]]:
    """ms per call and share per op kind of an ONNX Runtime profile (the JSON list its profiler writes).

    Node kernel times (``cat == "Node"``, ``..._kernel_time``) inside the last ``runs`` ``model_run`` windows
    (all when ``None``): each node's fastest over the windows (the profiler's clock is wall time; a call preempted
    on a shared host does not count), summed by op kind: convolutions by their weight and input shapes (groups =
    input channels / the weight's second dimension), the rest by operator type; ``pool_scopes`` are the module
    paths of convolutions that compute a pooling. Without ``model_run`` windows every node event counts once."""
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    if runs is not None:
        windows = windows[-runs:]
    scopes = list(pool_scopes)
    per_node: Dict[str, List[float]] = {}
    info: Dict[str, Tuple[str, str]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        w = next((i for i, (a, b) in enumerate(windows) if a <= e["ts"] <= b), None)
        if windows and w is None:
            continue
        per_node.setdefault(e["name"], [0.0] * max(1, len(windows)))[w or 0] += e["dur"] / 1e3
        info.setdefault(e["name"], (_ort_kind(e, scopes), e.get("args", {}).get("op_name", "?")))
    totals: Dict[str, float] = {}
    detail: Dict[str, Dict[str, float]] = {}
    for name, times in per_node.items():
        kind, op = info[name]
        ms = min(times)
        totals[kind] = totals.get(kind, 0.0) + ms
        detail.setdefault(kind, {})[op] = detail.get(kind, {}).get(op, 0.0) + ms
    return _shares(totals, detail)


def pool_scopes(form: nn.Module) -> List[str]:
    """Module paths (as the ONNX exporter names nodes) of the convolutions of ``form`` that compute a pooling."""
    ids = _pool_convs(form)
    return [name for name, m in form.named_modules() if id(m) in ids]


def profile_onnx(
    path: os.PathLike, x: Tensor, runs: int = 5, threads: int = 1, pool_scopes: Iterable[str] = ()
) -> Dict[str, Dict[str, Any]]:
    """Per-op-kind profile of ``runs`` calls of an ONNX file through ONNX Runtime's profiler (one warm-up call
    first, left out); the profiler's JSON is written into a temporary folder and removed."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.contiguous().numpy()}
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return aggregate_ort_profile(events, runs=runs, pool_scopes=pool_scopes)


def onnx_file_for(files: Sequence[str], size: Tuple[int, int]) -> Optional[str]:
    """The ONNX file (of a benchmark's list) that takes ``size``: one with dynamic height and width, or one
    exported at that size. Read from each file's sidecar (``<file>.json``: ``input.dynamic_axes`` and
    ``input.sizes_hw_verified``), else from the graph's input shape."""
    for f in files:
        side = Path(f"{f}.json")
        if side.is_file():
            spec = json.loads(side.read_text()).get("input", {})
            if {"height", "width"} <= set(spec.get("dynamic_axes", [])) or list(size) in spec.get(
                "sizes_hw_verified", []
            ):
                return f
            continue
        import onnx

        dims = onnx.load(f, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        hw = [d.dim_value if d.HasField("dim_value") else None for d in dims[2:4]]
        if all(v is None or v == s for v, s in zip(hw, size)):
            return f
    return None


# --- runtimes without per-op times --------------------------------------------------------------------------


def etdump_probe(pte_path: os.PathLike, x: Tensor) -> Tuple[bool, str]:
    """Whether this ExecuTorch runtime records an ETDump (per-op/delegate events for ``executorch.devtools``'
    Inspector): load ``pte_path`` with ``enable_etdump=True``, run once, write the dump. (ok, what it said)."""
    from executorch.extension.pybindings import portable_lib

    with tempfile.TemporaryDirectory(prefix="etdump-") as tmp:
        out = Path(tmp) / "run.etdp"
        with tempfile.TemporaryFile(mode="w+b") as log:
            saved = os.dup(2)
            os.dup2(log.fileno(), 2)
            try:
                module = portable_lib._load_for_executorch(str(pte_path), enable_etdump=True)
                module.forward([x.contiguous()])
                module.write_etdump_result_to_file(str(out))
            except Exception as e:  # noqa: BLE001 - reported, not raised: the probe is part of a report
                return False, f"ETDump probe failed: {type(e).__name__}: {e}"
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            log.seek(0)
            said = [ln for ln in log.read().decode("utf-8", "replace").splitlines() if "etdump" in ln.lower()]
        if out.is_file() and out.stat().st_size > 0:
            return True, f"ETDump written ({out.stat().st_size} bytes)"
    return False, (
        "this ExecuTorch runtime records no ETDump: "
        + (re.sub(r"^\[[^\]]*\]\s*", "", said[0]) if said else "write_etdump_result_to_file wrote nothing")
    )


NO_OP_TIMES = {
    "ncnn": "the ncnn Python binding has no per-layer timer (ncnn prints per-layer times only when built with "
    "NCNN_BENCHMARK, and the wheel's extractor prints none); timing truncated nets is not a profile",
    "tflite": "LiteRT's Python Interpreter has no per-op profiler (op profiling is in LiteRT's C++ "
    "benchmark_model tool, --enable_op_profiling)",
}


# --- kernel ISA -----------------------------------------------------------------------------------------------


# --- the benchmark's --profile-ops ---------------------------------------------------------------------

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
    from shufflenet.mobile.benchmark import bench_models, eager_runner
    from shufflenet.mobile.runtime import get

    threads = result["settings"]["threads"]
    rts = result["settings"]["runtimes"]
    builds = {m.key: m for m in bench_models()}
    tags = [f"{h}x{w}" for h, w in sizes]
    out: Dict[str, Any] = {"sizes": tags, "runs": runs, "models": {}, "unavailable": {}}
    for rt in rts:
        if rt in NO_OP_TIMES:
            out["unavailable"][rt] = NO_OP_TIMES[rt]
    for key in PROFILE_MODELS:
        if key not in result["models"]:
            continue
        model = builds[key].build().eval()
        files = result["models"][key]["files"]
        entry: Dict[str, Any] = {"label": builds[key].label, "macs": {}, "runtimes": {}}
        for (h, w), tag in zip(sizes, tags):
            entry["macs"][tag] = mac_shares(model, (h, w))
        for rt in rts:
            per: Dict[str, Any] = {}
            if rt in ("ptl", "eager") and (rt == "eager" or files.get("ptl")):
                form = for_runtime(model, "ptl") if rt == "ptl" else model
                run = get("ptl").load(files["ptl"][0], {}) if rt == "ptl" else eager_runner(model)
                convs = conv_kinds(form)
                for (h, w), tag in zip(sizes, tags):
                    x = torch.randn(1, 3, h, w)
                    if input_layout == "nhwc":
                        x = x.contiguous(memory_format=torch.channels_last)
                    per[tag] = profile_layer_types(run, x, convs, runs)
            elif rt == "onnx" and files.get("onnx"):
                scopes = pool_scopes(for_runtime(model, "onnx"))
                for (h, w), tag in zip(sizes, tags):
                    path = onnx_file_for(files["onnx"], (h, w))
                    if path:
                        per[tag] = profile_onnx(path, torch.randn(1, 3, h, w), runs, threads, scopes)
            elif rt == "pte" and files.get("pte") and "pte" not in out["unavailable"]:
                ok, said = etdump_probe(files["pte"][0], torch.randn(1, 3, *sizes[0]))
                out["unavailable"]["pte"] = said if not ok else f"{said}; reading it is not implemented"
            if per:
                entry["runtimes"][rt] = per
                log(f"[bench] profiled {entry['label']} through {rt} at {', '.join(per)}")
        out["models"][key] = entry
    return out


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
        kinds = [k for k in OP_KINDS if any(k in entry["macs"].get(s, {}) for s in sizes)]
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
    kinds = list(OP_KINDS) + ["conv (order not matched)"]
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


# --- command line ---------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    import time

    import torch

    from shufflenet.mobile import benchmark
    from shufflenet.mobile.source import MobileError

    p = benchmark.build_parser()
    p.prog = "python -m tools.mobile_opprofile"
    p.add_argument(
        "--profile-ops",
        "--profile",
        dest="profile_ops",
        action="store_true",
        help="add per-op-kind profiles (time share beside MAC share) of ShuffleNet 0.5x/1x, AlexNet and "
        "torchvision ShuffleNetV2 0.5x/1x through every runtime that can give per-op times",
    )
    p.add_argument("--profile-runs", type=int, default=5, help="profiled calls per model, runtime and size (default 5)")
    args = p.parse_args(argv)
    if args.profile_runs < 1:
        raise MobileError(f"--profile-runs must be >= 1, got {args.profile_runs}")
    t0 = time.time()
    result, out = benchmark.measure(args)
    if args.profile_ops:
        sizes = [tuple(s) for s in result["settings"]["sizes"]]
        prev = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            result["op_profile"] = profile_ops(result, sizes, args.input_layout, args.profile_runs)
        finally:
            torch.set_num_threads(prev)
    result["wall_s"] = time.time() - t0
    result["command"] = f"{p.prog} " + " ".join(sys.argv[1:] if argv is None else argv)
    benchmark.write_outputs(
        result, out, ops_markdown(result), [lambda res, folder: plot_ops(res, folder / "benchmark_ops.png")]
    )
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    from shufflenet.errors import run_cli

    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
