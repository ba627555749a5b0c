"""A roofline for ShuffleNet (and AlexNet) on this host: how far each runtime's Table-8 time is from the hardware.

``python -m tools.roofline --bench-json outputs/mobile/benchmark/benchmark.json --out outputs/mobile/roofline``

1. **Host.** Single-thread peak multiply-add rate by several methods: a large dense GEMM through ``torch.mm``
   (oneDNN/MKL), the same GEMM through ONNX Runtime's ``MatMul`` (MLAS), a large dense 3x3 convolution through
   ``torch.nn.functional.conv2d`` (oneDNN direct conv), ONNX Runtime ``MatMulInteger`` (u8 x s8, the int8 peak),
   and a C kernel of independent FMAs (the core's instruction ceiling; compiled with the system C compiler,
   skipped without one). Read+write bandwidth for working sets that fit L1, L2, L3 and none (cache sizes from
   ``/sys/devices/system/cpu/cpu0/cache``, else ``os.sysconf``) by two methods: a C copy kernel (``memcpy``
   repeated over one buffer inside one native call) and ``numpy.copyto`` called in a Python loop (its call
   overhead makes it a lower estimate at L1 size).
2. **Count.** Every operator of the network (``torch.fx`` trace with shapes, through the package's public
   ``create_model``) after the fusions every runtime here does: BatchNorm folded into its convolution, ReLU into
   its producer. Per layer: multiply-adds (conv + fc, the paper's count) and bytes moved: activations read,
   activations written, weights (fp32: 4 bytes per element; int8: 1), biases (4 bytes either way).
3. **Bound.** A layer's bound is ``max(MACs / peak, bytes / bandwidth(level))``, the level being the smallest
   cache its bytes fit in; the network's bound is the sum. The fused bound assumes perfect fusion
   (intermediates never leave cache): ``max(all MACs / peak, (input + output + weights) / bandwidth(level))``.
   The peak and each bandwidth are the highest figure any library method reached (a bound must use a rate the
   host can reach; the highest measured is the closest to the true limit).
4. **Measured.** With ``--bench-json`` (what ``mobile/benchmark.py`` writes, ``OUT/benchmark.json``) every
   runtime's median beside the bound (% of bound = measured / bound), and per op kind where the JSON has per-op
   profiles (``--profile-ops``).
5. **Peer** (``--ncnn-param PATH``): ncnn's own ShuffleNet, ``benchmark/models/shufflenet.param`` of
   https://github.com/Tencent/ncnn/tree/master/benchmark (not shipped here; pass its path), timed with empty
   (zero) weights as ncnn's ``benchncnn`` loads it, interleaved with this project's ShuffleNet of the same width
   and groups exported to ncnn (the ``shufflenet-export`` console script), through the same ncnn build, one
   thread.

Writes ``OUT/roofline.json`` and ``OUT/roofline.md`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import operator
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from shufflenet import create_model, list_models
from shufflenet.errors import ShuffleNetError, run_cli
from shufflenet.fileio import write_json_atomic, write_text_atomic

#: Benchmark keys of ``mobile/benchmark.py`` -> registered model names (the JSON also names them).
MODELS = {
    "sn0.5": "shufflenet_v1_x0_5_g3",
    "sn1": "shufflenet_v1_x1_0_g3",
    "sn2": "shufflenet_v1_x2_0_g3",
    "alexnet": "alexnet",
}
SIZES = ("224", "480x640", "720x1280")
LEVELS = ("L1", "L2", "L3", "DRAM")
#: Op kinds, named as the benchmark's per-op profiles name them (so the two can be put side by side).
CONV_KINDS = ("grouped 1x1 conv", "dense 1x1 conv", "depthwise conv", "dense conv (kxk)")
KINDS = (*CONV_KINDS, "fc", "channel shuffle / reshape", "add / ReLU", "pool", "concat / split", "other")
BYTES = {"fp32": 4, "int8": 1}
BIAS_BYTES = 4  # fp32 bias, or int32 accumulator bias in int8


class RooflineError(ShuffleNetError, ValueError):
    """Bad input to the roofline tool (size, model, benchmark JSON, ncnn param)."""


# --- sizes ---------------------------------------------------------------------------------------------------
def parse_size(text: str) -> Tuple[int, int]:
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise RooflineError(f"size {text!r}: expected S or HxW with positive integers, e.g. 224 or 480x640")
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) else h


def size_tag(hw: Tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


# --- counting --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """One operator as a runtime runs it after BN folding and activation fusion. Counts are elements."""

    name: str
    kind: str
    macs: int
    inputs: int  # activation elements read
    outputs: int  # activation elements written
    weights: int = 0
    biases: int = 0

    def bytes(self, precision: str = "fp32") -> int:
        b = BYTES[precision]
        return (self.inputs + self.outputs + self.weights) * b + self.biases * BIAS_BYTES


_FREE_MODULES = (nn.Identity, nn.Dropout, nn.ReLU, nn.ReLU6, nn.Flatten)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_RELU_FUNCS = {torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu6}
_FREE_FUNCS = {torch.flatten, operator.getitem, getattr, nn.functional.dropout}
_FREE_METHODS = {"flatten", "view", "reshape", "size", "contiguous", "relu", "relu_"}
_POOL_FUNCS = {
    nn.functional.max_pool2d,
    nn.functional.avg_pool2d,
    nn.functional.adaptive_avg_pool2d,
    torch.max_pool2d,
}
_SHUFFLE_FUNCS = {torch.channel_shuffle, nn.functional.channel_shuffle}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}


def conv_kind(conv: nn.Conv2d) -> str:
    k = tuple(conv.kernel_size)
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return "depthwise conv"
    if k == (1, 1):
        return "grouped 1x1 conv" if conv.groups > 1 else "dense 1x1 conv"
    return "dense conv (kxk)"


def conv_macs(conv: nn.Conv2d, out_shape: Sequence[int]) -> int:
    """Multiply-adds of one conv: every output element sums (in_channels / groups) x kh x kw products."""
    n, c_out, h, w = out_shape
    kh, kw = conv.kernel_size
    return n * c_out * h * w * (conv.in_channels // conv.groups) * kh * kw


def count_layers(model: nn.Module, size: Tuple[int, int]) -> List[Layer]:
    """The operators of ``model`` on a ``1 x 3 x H x W`` input with their MACs and elements moved."""
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    model = model.eval()
    gm = symbolic_trace(model)
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, 3, *size))

    def numel(node: Any) -> int:
        meta = getattr(node, "meta", {}).get("tensor_meta") if isinstance(node, torch.fx.Node) else None
        return int(np.prod(meta.shape)) if meta is not None and hasattr(meta, "shape") else 0

    def tensor_args(node: torch.fx.Node) -> List[torch.fx.Node]:
        flat: List[Any] = []
        for a in node.args:
            flat.extend(a if isinstance(a, (list, tuple)) else [a])
        return [a for a in flat if isinstance(a, torch.fx.Node) and numel(a)]

    layers: List[Layer] = []
    producer: Dict[str, str] = {}  # node name -> kind of the layer that wrote it (for BN folding)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        args = tensor_args(node)
        src = args[0] if args else None
        passthrough = False
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, nn.Conv2d):
                layers.append(
                    Layer(
                        node.name,
                        conv_kind(mod),
                        conv_macs(mod, node.meta["tensor_meta"].shape),
                        numel(src),
                        numel(node),
                        mod.weight.numel(),
                        mod.out_channels,  # a folded BN gives every conv a bias
                    )
                )
            elif isinstance(mod, nn.Linear):
                rows = numel(node) // mod.out_features
                layers.append(
                    Layer(
                        node.name,
                        "fc",
                        rows * mod.in_features * mod.out_features,
                        numel(src),
                        numel(node),
                        mod.weight.numel(),
                        mod.out_features,
                    )
                )
            elif isinstance(mod, nn.BatchNorm2d):
                if src is not None and producer.get(src.name) in CONV_KINDS:
                    passthrough = True  # folded into the conv
                else:
                    layers.append(Layer(node.name, "other", 0, numel(src), numel(node), 2 * mod.num_features))
            elif isinstance(mod, _FREE_MODULES):
                passthrough = True
            elif isinstance(mod, _POOL_MODULES):
                layers.append(Layer(node.name, "pool", 0, numel(src), numel(node)))
            elif isinstance(mod, nn.ChannelShuffle):
                layers.append(Layer(node.name, "channel shuffle / reshape", 0, numel(src), numel(node)))
            else:
                layers.append(Layer(node.name, "other", 0, sum(map(numel, args)), numel(node)))
        elif node.op == "call_function":
            fn = node.target
            if fn in _RELU_FUNCS or fn in _FREE_FUNCS:
                passthrough = True
            elif fn in _POOL_FUNCS:
                layers.append(Layer(node.name, "pool", 0, numel(src), numel(node)))
            elif fn in _SHUFFLE_FUNCS:
                layers.append(Layer(node.name, "channel shuffle / reshape", 0, numel(src), numel(node)))
            elif fn in _ADD_FUNCS:
                layers.append(Layer(node.name, "add / ReLU", 0, sum(map(numel, args)), numel(node)))
            elif fn is torch.cat:
                layers.append(Layer(node.name, "concat / split", 0, sum(map(numel, args)), numel(node)))
            elif numel(node):
                layers.append(Layer(node.name, "other", 0, sum(map(numel, args)), numel(node)))
        elif node.op == "call_method":
            if node.target in _FREE_METHODS:
                passthrough = True
            elif node.target == "mean":
                layers.append(Layer(node.name, "pool", 0, numel(src), numel(node)))
            elif numel(node):
                layers.append(Layer(node.name, "other", 0, sum(map(numel, args)), numel(node)))
        if passthrough:
            producer[node.name] = producer.get(src.name, "") if src is not None else ""
        elif layers and layers[-1].name == node.name:
            producer[node.name] = layers[-1].kind
    return layers


# --- host measurement ------------------------------------------------------------------------------------------
def cache_sizes() -> Dict[str, int]:
    """Bytes of the L1 data, L2 and L3 caches of CPU 0 (sysfs, else ``os.sysconf``)."""
    out: Dict[str, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")) if base.is_dir() else []:
        try:
            level = int((idx / "level").read_text())
            kind = (idx / "type").read_text().strip()
            text = (idx / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        m = re.fullmatch(r"(\d+)([KMG]?)", text)
        if m:
            out[f"L{level}"] = int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
    for level, name in (
        ("L1", "SC_LEVEL1_DCACHE_SIZE"),
        ("L2", "SC_LEVEL2_CACHE_SIZE"),
        ("L3", "SC_LEVEL3_CACHE_SIZE"),
    ):
        if level not in out:
            try:
                v = os.sysconf(name)
            except (ValueError, OSError):
                v = 0
            if v > 0:
                out[level] = int(v)
    missing = [lv for lv in ("L1", "L2", "L3") if lv not in out]
    if missing:
        raise RooflineError(
            f"cache sizes: {', '.join(missing)} not found in /sys/devices/system/cpu/cpu0/cache nor os.sysconf; "
            "pass them with --caches L1=48K,L2=2M,L3=32M"
        )
    return out


def parse_caches(text: str) -> Dict[str, int]:
    out = {}
    for item in text.split(","):
        m = re.fullmatch(r"(L[123])=(\d+)([KMG]?)", item.strip())
        if not m:
            raise RooflineError(f"--caches {text!r}: expected L1=48K,L2=2M,L3=32M")
        out[m.group(1)] = int(m.group(2)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(3)]
    if set(out) != {"L1", "L2", "L3"}:
        raise RooflineError(f"--caches {text!r}: give all of L1, L2 and L3")
    return out


def level_for(nbytes: int, caches: Dict[str, int]) -> str:
    """The smallest cache level whose capacity holds ``nbytes``; ``DRAM`` when none does."""
    for level in ("L1", "L2", "L3"):
        if nbytes <= caches[level]:
            return level
    return "DRAM"


def working_sets(caches: Dict[str, int]) -> Dict[str, int]:
    """Bytes touched per copy (source + destination) to measure each level: half of it, or 4x L3 for DRAM."""
    return {
        "L1": caches["L1"] // 2,
        "L2": caches["L2"] // 2,
        # A few times L2: the size of the layers that spill out of L2 here, and inside any real L3 share (a
        # VM may report the whole socket's L3 for one core; half of that measured DRAM on the host here).
        "L3": max(min(caches["L3"] // 2, 4 * caches["L2"]), 2 * caches["L2"]),
        "DRAM": min(max(4 * caches["L3"], 256 << 20), 2 << 30),
    }


_C_SOURCE = r"""
#include <stddef.h>
#include <string.h>
#if defined(__AVX512F__)
typedef float vf __attribute__((vector_size(64)));
#define W 16
#elif defined(__AVX__)
typedef float vf __attribute__((vector_size(32)));
#define W 8
#else
typedef float vf __attribute__((vector_size(16)));
#define W 4
#endif
int lanes(void) { return W; }
void copy_reps(float *restrict dst, const float *restrict src, size_t n, long reps) {
    for (long r = 0; r < reps; r++) { memcpy(dst, src, n * sizeof(float)); __asm__ volatile("" ::: "memory"); }
}
float fma_reps(long iters) {
    vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0}, a8 = {0}, a9 = {0},
       a10 = {0}, a11 = {0};
    vf m = a0 + 0.999f, c = a0 + 1e-3f;
    for (long i = 0; i < iters; i++) {
        a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c; a4 = a4 * m + c; a5 = a5 * m + c;
        a6 = a6 * m + c; a7 = a7 * m + c; a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
    }
    vf s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    float t = 0; for (int i = 0; i < W; i++) t += s[i];
    return t;
}
"""
#: FMA chains in ``fma_reps`` (independent accumulators, enough to cover FMA latency x units).
_FMA_CHAINS = 12


def c_kernels(workdir: Path) -> Tuple[Optional[ctypes.CDLL], str]:
    """The C kernels compiled for this CPU (``cc -O3 -march=native``), or None and why not."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None, "no C compiler (cc, gcc) on PATH"
    src, lib = workdir / "roofline_kernels.c", workdir / "roofline_kernels.so"
    src.write_text(_C_SOURCE)
    flags = ["-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC"]
    proc = subprocess.run([cc, *flags, "-o", str(lib), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"{cc} failed: {proc.stderr.strip()[:200]}"
    dll = ctypes.CDLL(str(lib))
    dll.copy_reps.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
    dll.fma_reps.argtypes = [ctypes.c_long]
    dll.fma_reps.restype = ctypes.c_float
    return dll, f"{cc} {' '.join(flags[:3])}"


def _best_seconds(fn: Callable[[], Any], runs: int) -> float:
    """The fastest of ``runs`` calls in process-CPU seconds (one thread; a preempted call does not count)."""
    best = float("inf")
    for _ in range(runs):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return max(best, 1e-9)


def _reps_for(fn: Callable[[int], Any], target_s: float) -> int:
    reps = 1
    while True:
        t = time.process_time()
        fn(reps)
        dt = time.process_time() - t
        if dt >= target_s / 4 or reps >= 1 << 30:
            return max(1, int(reps * target_s / max(dt, 1e-6)))
        reps *= 4


def _onnx_conv3x3(c: int, hw: int) -> Callable[[], Any]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.rand(c, c, 3, 3).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "conv", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.rand(1, c, hw, hw).astype(np.float32)}
    return lambda: sess.run(None, feeds)


def _ncnn_conv3x3(c: int, hw: int, workdir: Path) -> Callable[[], Any]:
    """A one-layer ncnn net, 3x3 conv c -> c, empty weights, Winograd allowed (ncnn's default)."""
    import ncnn

    param = workdir / "conv3x3.param"
    param.write_text(
        f"7767517\n2 2\nInput data 0 1 data 0={hw} 1={hw} 2={c}\n"
        f"Convolution conv 1 1 data out 0={c} 1=3 4=1 5=1 6={c * c * 9}\n"
    )
    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.use_vulkan_compute = False
    for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, flag, False)
    net.load_param(str(param))
    net.load_model(ncnn.DataReaderFromEmpty())
    arr = np.random.rand(c, hw, hw).astype(np.float32)  # ncnn.Mat wraps it without a copy: run.arr keeps it
    mat = ncnn.Mat(arr)

    def run() -> Any:
        ex = net.create_extractor()
        ex.input("data", mat)
        return ex.extract("out")

    run.net, run.arr = net, arr
    return run


def _onnx_matmul(n: int, integer: bool) -> Callable[[], Any]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if integer:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])
        b = helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        feeds = {
            "a": np.random.randint(0, 255, (n, n), dtype=np.uint8),
            "b": np.random.randint(-127, 127, (n, n), dtype=np.int8),
        }
    else:
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
        b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        feeds = {"a": np.random.rand(n, n).astype(np.float32), "b": np.random.rand(n, n).astype(np.float32)}
    graph = helper.make_graph([node], "mm", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feeds)


@dataclass
class HostFigures:
    """What the bound uses, and every method's figure (GMAC/s, GB/s) with how it was measured."""

    isa: str
    cpu: str
    caches: Dict[str, int]
    peak_gmacs: Dict[str, float] = field(default_factory=dict)  # method -> GMAC/s
    peak_int8_gops: Dict[str, float] = field(default_factory=dict)
    bandwidth_gbs: Dict[str, Dict[str, float]] = field(default_factory=dict)  # method -> level -> GB/s
    working_set_bytes: Dict[str, int] = field(default_factory=dict)
    notes: Dict[str, str] = field(default_factory=dict)

    #: Peak methods a runtime's kernels can reach (the FMA loop is the instruction ceiling, reported beside).
    #: ncnn's 3x3 conv may use Winograd (fewer multiplies than the counted MACs): a rate for dense 3x3 only, so it
    #: is reported beside, not used (80 % of ShuffleNet's MACs are 1x1 convolutions, i.e. GEMMs).
    LIBRARY_PEAKS = ("torch.mm", "onnxruntime MatMul", "oneDNN conv3x3", "onnxruntime Conv3x3")

    def peak(self) -> Tuple[str, float]:
        have = {k: v for k, v in self.peak_gmacs.items() if k in self.LIBRARY_PEAKS}
        if not have:
            raise RooflineError("no peak multiply-add rate was measured")
        k = max(have, key=have.get)
        return k, have[k]

    def int8_peak(self) -> Optional[float]:
        return max(self.peak_int8_gops.values()) if self.peak_int8_gops else None

    def bandwidth(self, level: str) -> Tuple[str, float]:
        have = {m: v[level] for m, v in self.bandwidth_gbs.items() if level in v}
        if not have:
            raise RooflineError(f"no bandwidth measured for {level}")
        k = max(have, key=have.get)
        return k, have[k]


def measure_host(
    caches: Dict[str, int], seconds: float = 0.3, runs: int = 5, gemm_n: int = 1024, log=print
) -> HostFigures:
    """Single-thread peak MAC rate (several methods) and read+write bandwidth per cache level (two methods)."""
    torch.set_num_threads(1)
    host = HostFigures(
        isa=torch.backends.cpu.get_cpu_capability(), cpu=_cpu_name(), caches=dict(caches), working_set_bytes={}
    )
    n = gemm_n
    # --- peaks
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    host.peak_gmacs["torch.mm"] = n**3 / _best_seconds(lambda: torch.mm(a, b), runs) / 1e9
    log(f"[roofline] peak torch.mm {n}^2: {host.peak_gmacs['torch.mm']:.1f} GMAC/s")
    x = torch.rand(1, 256, 56, 56)
    wt = torch.rand(256, 256, 3, 3)
    torch.nn.functional.conv2d(x, wt, padding=1)
    conv_macs_ = 256 * 256 * 9 * 56 * 56
    host.peak_gmacs["oneDNN conv3x3"] = (
        conv_macs_ / _best_seconds(lambda: torch.nn.functional.conv2d(x, wt, padding=1), runs) / 1e9
    )
    log(f"[roofline] peak torch conv2d 3x3 256->256 @56x56: {host.peak_gmacs['oneDNN conv3x3']:.1f} GMAC/s")
    try:
        run = _onnx_matmul(n, integer=False)
        run()
        host.peak_gmacs["onnxruntime MatMul"] = n**3 / _best_seconds(run, runs) / 1e9
        log(f"[roofline] peak onnxruntime MatMul {n}^2: {host.peak_gmacs['onnxruntime MatMul']:.1f} GMAC/s")
        run = _onnx_conv3x3(256, 56)
        run()
        host.peak_gmacs["onnxruntime Conv3x3"] = conv_macs_ / _best_seconds(run, runs) / 1e9
        log(f"[roofline] peak onnxruntime Conv 3x3 256->256 @56x56: {host.peak_gmacs['onnxruntime Conv3x3']:.1f}")
        run = _onnx_matmul(n, integer=True)
        run()
        host.peak_int8_gops["onnxruntime MatMulInteger"] = n**3 / _best_seconds(run, runs) / 1e9
        log(f"[roofline] int8 peak onnxruntime MatMulInteger: {host.peak_int8_gops['onnxruntime MatMulInteger']:.1f}")
    except ImportError as e:
        host.notes["onnxruntime"] = f"not measured: {e}"
    # --- C kernels: FMA ceiling and the primary bandwidth method
    with tempfile.TemporaryDirectory(prefix="roofline-") as tmp:
        dll, how = c_kernels(Path(tmp))
        host.notes["c_kernels"] = how if dll is not None else f"not measured: {how}"
        if dll is not None:
            lanes = dll.lanes()
            iters = _reps_for(lambda r: dll.fma_reps(r), seconds)
            host.peak_gmacs["FMA loop (C)"] = (
                _FMA_CHAINS * lanes * iters / _best_seconds(lambda: dll.fma_reps(iters), runs) / 1e9
            )
            host.notes["fma_lanes"] = f"{lanes} fp32 lanes per vector ({32 * lanes}-bit)"
            log(f"[roofline] FMA ceiling ({lanes} lanes): {host.peak_gmacs['FMA loop (C)']:.1f} GMAC/s")
        try:
            run = _ncnn_conv3x3(256, 56, Path(tmp))
            run()
            host.peak_gmacs["ncnn conv3x3 (Winograd allowed)"] = conv_macs_ / _best_seconds(run, runs) / 1e9
            log(f"[roofline] ncnn conv 3x3: {host.peak_gmacs['ncnn conv3x3 (Winograd allowed)']:.1f} GMAC/s")
        except ImportError as e:
            host.notes["ncnn"] = f"not measured: {e}"
        sets = working_sets(caches)
        host.working_set_bytes = sets
        for level in LEVELS:
            for method, gbs in copy_bandwidth(sets[level], dll, seconds, runs).items():
                host.bandwidth_gbs.setdefault(method, {})[level] = gbs
            log(
                f"[roofline] bandwidth {level} ({sets[level] / 1024:.0f} KiB): "
                + ", ".join(f"{m} {v[level]:.1f} GB/s" for m, v in host.bandwidth_gbs.items())
            )
    return host


def copy_bandwidth(nbytes: int, dll: Optional[ctypes.CDLL], seconds: float, runs: int) -> Dict[str, float]:
    """GB/s (bytes read + bytes written) of copying ``nbytes / 2`` into a second buffer, by each method."""
    nel = max(16, nbytes // 8)  # two float32 buffers of nbytes / 2
    src = np.random.rand(nel).astype(np.float32)
    dst = np.empty_like(src)
    moved = 2 * nel * 4
    out = {}
    if dll is not None:
        sp, dp = src.ctypes.data, dst.ctypes.data
        reps = _reps_for(lambda r: dll.copy_reps(dp, sp, nel, r), seconds)
        out["memcpy loop (C)"] = moved * reps / _best_seconds(lambda: dll.copy_reps(dp, sp, nel, reps), runs) / 1e9

    def np_loop(r: int) -> None:
        for _ in range(r):
            np.copyto(dst, src)

    reps = _reps_for(np_loop, seconds)
    out["numpy.copyto"] = moved * reps / _best_seconds(lambda: np_loop(reps), runs) / 1e9
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- bounds ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """What the bound divides by: MAC/s and bytes/s per level (int8: int8 multiply-adds per second)."""

    macs_per_s: float
    bytes_per_s: Dict[str, float]
    caches: Dict[str, int]

    def layer_bound(self, layer: Layer, precision: str = "fp32") -> Dict[str, Any]:
        nbytes = layer.bytes(precision)
        level = level_for(nbytes, self.caches)
        compute = layer.macs / self.macs_per_s
        memory = nbytes / self.bytes_per_s[level]
        return {
            "level": level,
            "bytes": nbytes,
            "compute_s": compute,
            "memory_s": memory,
            "bound_s": max(compute, memory),
            "limit": "compute" if compute >= memory else "memory",
        }


def network_bound(layers: Sequence[Layer], rates: Rates, precision: str = "fp32") -> Dict[str, Any]:
    """Per-layer bounds, their sum, the perfect-fusion bound, and the bound per op kind."""
    per = [dict(asdict(lay), **rates.layer_bound(lay, precision)) for lay in layers]
    total_macs = sum(lay.macs for lay in layers)
    weights = sum(lay.weights for lay in layers) * BYTES[precision] + sum(lay.biases for lay in layers) * BIAS_BYTES
    io = (layers[0].inputs + layers[-1].outputs) * BYTES[precision] if layers else 0
    fused_level = level_for(weights + io, rates.caches)
    fused_compute = total_macs / rates.macs_per_s
    fused_memory = (weights + io) / rates.bytes_per_s[fused_level]
    by_kind: Dict[str, Dict[str, float]] = {}
    for p in per:
        k = by_kind.setdefault(p["kind"], {"macs": 0, "bytes": 0, "bound_s": 0.0})
        k["macs"] += p["macs"]
        k["bytes"] += p["bytes"]
        k["bound_s"] += p["bound_s"]
    return {
        "layers": per,
        "macs": total_macs,
        "bytes": sum(p["bytes"] for p in per),
        "compute_s": sum(p["compute_s"] for p in per),
        "memory_s": sum(p["memory_s"] for p in per),
        "bound_s": sum(p["bound_s"] for p in per),
        "memory_bound_share": (
            sum(p["bound_s"] for p in per if p["limit"] == "memory") / max(sum(p["bound_s"] for p in per), 1e-30)
        ),
        "fused": {
            "bytes": weights + io,
            "level": fused_level,
            "compute_s": fused_compute,
            "memory_s": fused_memory,
            "bound_s": max(fused_compute, fused_memory),
        },
        "by_kind": by_kind,
    }


def rates_from(host: HostFigures, precision: str) -> Rates:
    _, peak = host.peak()
    if precision == "int8":
        peak = host.int8_peak() or peak
    return Rates(peak * 1e9, {lv: host.bandwidth(lv)[1] * 1e9 for lv in LEVELS}, host.caches)


# --- benchmark JSON --------------------------------------------------------------------------------------------
def read_bench(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise RooflineError(f"--bench-json {path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise RooflineError(f"--bench-json {path}: not JSON ({e.msg}, line {e.lineno})") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("cells"), dict)
        or not isinstance(data.get("models"), dict)
    ):
        raise RooflineError(
            f"--bench-json {path}: expected mobile/benchmark.py's benchmark.json (keys 'cells' and 'models')"
        )
    return data


def measured_rows(bench: Dict[str, Any], bounds: Dict[str, Dict[str, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Every (model, size, runtime) of the benchmark whose model and size have a bound: ms and % of bound."""
    rows = []
    for key, per_rt in bench["cells"].items():
        for rt, per_size in per_rt.items():
            for tag, cell in per_size.items():
                b = bounds.get(key, {}).get(tag)
                if b is None or not isinstance(cell, dict) or "median_ms" not in cell:
                    continue
                ms = float(cell["median_ms"])
                rows.append(
                    {
                        "model": key,
                        "size": tag,
                        "runtime": rt,
                        "median_ms": ms,
                        "bound_ms": b["bound_s"] * 1e3,
                        "fused_bound_ms": b["fused"]["bound_s"] * 1e3,
                        "pct_of_bound": 100.0 * ms / (b["bound_s"] * 1e3),
                        "pct_of_fused_bound": 100.0 * ms / (b["fused"]["bound_s"] * 1e3),
                    }
                )
    return rows


def op_kind_rows(bench: Dict[str, Any], bounds: Dict[str, Dict[str, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Per model, size, runtime and op kind: profiled ms beside the kind's bound (profiles of --profile-ops)."""
    prof = bench.get("op_profile") or {}
    rows = []
    for key, entry in (prof.get("models") or {}).items():
        for rt, per_size in (entry.get("runtimes") or {}).items():
            for tag, kinds in per_size.items():
                b = bounds.get(key, {}).get(tag)
                if b is None:
                    continue
                for kind in dict.fromkeys([*KINDS, *kinds]):
                    ms = kinds.get(kind, {}).get("ms")
                    bound_ms = b["by_kind"].get(kind, {}).get("bound_s", 0.0) * 1e3
                    if ms is None and not bound_ms:
                        continue
                    rows.append(
                        {
                            "model": key,
                            "size": tag,
                            "runtime": rt,
                            "kind": kind,
                            "profiled_ms": ms,
                            "bound_ms": bound_ms,
                            "pct_of_bound": (100.0 * ms / bound_ms) if ms is not None and bound_ms else None,
                            "excess_ms": (ms or 0.0) - bound_ms,
                        }
                    )
    return rows


# --- ncnn peer -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NcnnParam:
    """What the timing needs from an ncnn ``.param``: its input/output blobs, groups, widths, fixed input."""

    path: Path
    input: str
    outputs: Tuple[str, ...]
    groups: Optional[int]
    last_channels: Optional[int]
    fixed_hw: Optional[Tuple[int, int]]
    layers: int


def read_ncnn_param(path: Path) -> NcnnParam:
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise RooflineError(f"--ncnn-param {path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise RooflineError(f"--ncnn-param {path}: not a text .param file (a binary .param.bin is not read)") from None
    if len(lines) < 3 or lines[0] != ["7767517"]:
        raise RooflineError(f"--ncnn-param {path}: not an ncnn param file (expected the magic 7767517 on line 1)")
    inp, produced, consumed, groups, last_c, fixed = None, [], set(), None, None, None
    for parts in lines[2:]:
        if len(parts) < 4:
            raise RooflineError(f"--ncnn-param {path}: malformed layer line {' '.join(parts)!r}")
        kind, nin, nout = parts[0], int(parts[2]), int(parts[3])
        bottoms, tops = parts[4 : 4 + nin], parts[4 + nin : 4 + nin + nout]
        params = dict(p.split("=", 1) for p in parts[4 + nin + nout :] if "=" in p)
        consumed.update(bottoms)
        produced.extend(tops)
        if kind == "Input":
            inp = tops[0]
            if "0" in params and "1" in params:
                fixed = (int(params["1"]), int(params["0"]))  # 0=w 1=h
        elif kind == "ShuffleChannel":
            groups = int(params.get("0", 1))
        elif kind in ("Convolution", "ConvolutionDepthWise") and "0" in params:
            last_c = int(params["0"])
    outs = tuple(b for b in produced if b not in consumed)
    if inp is None or not outs:
        raise RooflineError(f"--ncnn-param {path}: no Input layer or no output blob")
    return NcnnParam(path, inp, outs, groups, last_c, fixed, len(lines) - 2)


def matching_model(param: NcnnParam) -> str:
    """Our registered ShuffleNet with the param's groups and last-stage width."""
    for name in list_models(f"shufflenet_v1_x*_g{param.groups}"):
        if not re.fullmatch(r"shufflenet_v1_x\d_\d+_g\d+", name):  # plain widths, no variants
            continue
        m = create_model(name)
        if m.groups == param.groups and m.stage_out_channels[-1] == param.last_channels:
            return name
    raise RooflineError(
        f"--ncnn-param {param.path}: no registered ShuffleNet v1 with groups {param.groups} and last stage width "
        f"{param.last_channels}; pass --peer-model NAME"
    )


def export_ncnn(name: str, sizes: Sequence[Tuple[int, int]], out: Path, log=print) -> Path:
    """Our model exported to ncnn through the ``shufflenet-export`` console script (verified at every size)."""
    exe = shutil.which("shufflenet-export") or str(Path(sys.executable).with_name("shufflenet-export"))
    if not Path(exe).exists():
        raise RooflineError("the peer needs the shufflenet-export console script (pip install -e .)")
    cmd = [exe, name, "--format", "ncnn", "--input-size", *map(size_tag, sizes), "--out", str(out)]
    log(f"[roofline] {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RooflineError(f"shufflenet-export {name} --format ncnn failed: {proc.stderr.strip().splitlines()[-1:]}")
    params = sorted(out.glob("*.ncnn.param"))
    if not params:
        raise RooflineError(f"shufflenet-export wrote no .ncnn.param into {out}")
    return params[0]


#: ncnn option sets: what this project's files run with (fp32 exact), and what benchncnn sets.
NCNN_OPTIONS = {
    "fp32": {
        "use_fp16_packed": False,
        "use_fp16_storage": False,
        "use_fp16_arithmetic": False,
        "use_bf16_storage": False,
    },
    "benchncnn": {
        "lightmode": True,
        "use_winograd_convolution": True,
        "use_sgemm_convolution": True,
        "use_fp16_packed": True,
        "use_fp16_storage": True,
        "use_fp16_arithmetic": True,
        "use_packing_layout": True,
    },
}


def ncnn_runner(param: NcnnParam, bin_path: Optional[Path], options: Dict[str, bool]) -> Callable[[Any], Any]:
    import ncnn

    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.use_vulkan_compute = False
    for k, v in options.items():
        setattr(net.opt, k, v)
    if net.load_param(str(param.path)) != 0:
        raise RooflineError(f"ncnn could not load {param.path}")
    # benchncnn's weights: every read returns zeros (ncnn's DataReaderFromEmpty); the arithmetic is the same.
    rc = net.load_model(str(bin_path)) if bin_path is not None else net.load_model(ncnn.DataReaderFromEmpty())
    if rc != 0:
        raise RooflineError(f"ncnn could not load the weights of {param.path}")

    def run(mat: Any) -> Any:
        ex = net.create_extractor()
        ex.input(param.input, mat)
        outs = [ex.extract(o) for o in param.outputs]
        return outs

    run.net = net  # keep it alive
    return run


def ncnn_peer(
    param_path: Path,
    sizes: Sequence[Tuple[int, int]],
    repeats: int,
    warmup: int,
    workdir: Path,
    peer_model: Optional[str] = None,
    options: Sequence[str] = ("fp32", "benchncnn"),
    log=print,
) -> Dict[str, Any]:
    """ncnn's own ShuffleNet vs ours, same width and groups, interleaved rounds, process-CPU medians."""
    import ncnn

    theirs = read_ncnn_param(param_path)
    name = peer_model or matching_model(theirs)
    ours_param = read_ncnn_param(export_ncnn(name, sizes, workdir, log=log))
    ours_bin = ours_param.path.with_suffix(".bin")
    nets = {}
    for opt in options:
        nets[("ncnn shufflenet.param (empty weights)", opt)] = ncnn_runner(theirs, None, NCNN_OPTIONS[opt])
        nets[(f"ours {name} (empty weights)", opt)] = ncnn_runner(ours_param, None, NCNN_OPTIONS[opt])
        nets[(f"ours {name} (its .bin)", opt)] = ncnn_runner(ours_param, ours_bin, NCNN_OPTIONS[opt])
    cells: Dict[str, Any] = {}
    for hw in sizes:
        # benchncnn fills its input with 0.01. ncnn.Mat(array) wraps the array's memory without a copy: the array
        # must outlive the Mat (a Mat of a freed temporary read garbage, denormals among it, which made the net
        # with real weights 6x slower here, and segfaulted at 720x1280), so it is kept and cloned per call.
        arr = np.full((3, *hw), 0.01, dtype=np.float32)
        base = ncnn.Mat(arr).clone()
        times: Dict[Tuple[str, str], List[float]] = {k: [] for k in nets}
        for run in nets.values():
            for _ in range(warmup):
                run(base.clone())
        for _ in range(repeats):
            for k, run in nets.items():
                mat = base.clone()  # each call its own ncnn-owned input, made before the clock starts
                t = time.process_time()
                run(mat)
                times[k].append((time.process_time() - t) * 1e3)
        tag = size_tag(hw)
        for (label, opt), ts in times.items():
            cells.setdefault(opt, {}).setdefault(label, {})[tag] = {"median_ms": statistics.median(ts), "n": len(ts)}
        log(
            f"[roofline] peer {tag}: "
            + ", ".join(f"{lab} [{opt}] {statistics.median(ts):.2f} ms" for (lab, opt), ts in times.items())
        )
    return {
        "param": str(param_path),
        "param_source": "https://github.com/Tencent/ncnn/tree/master/benchmark (models/shufflenet.param)",
        "param_groups": theirs.groups,
        "param_last_channels": theirs.last_channels,
        "param_fixed_input_hw": list(theirs.fixed_hw) if theirs.fixed_hw else None,
        "ours": name,
        "ncnn_version": getattr(ncnn, "__version__", "?"),
        "options": {k: NCNN_OPTIONS[k] for k in options},
        "repeats": repeats,
        "cells": cells,
        "clock": "process CPU ms per call, median of interleaved rounds, 1 thread",
    }


# --- report ----------------------------------------------------------------------------------------------------
def _ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


NOT_USED = {
    "FMA loop (C)": "no: the core's instruction ceiling (FMAs with no loads), not a kernel",
    "ncnn conv3x3 (Winograd allowed)": "no: Winograd does fewer multiplies than it is credited with; dense 3x3 only",
}


def markdown(result: Dict[str, Any]) -> str:
    host = result["host"]
    out = [
        "# Roofline",
        "",
        f"Host: {host['cpu']}, `torch.backends.cpu.get_cpu_capability()` = {host['isa']}; 1 thread; caches "
        + ", ".join(f"{k} {v // 1024} KiB" for k, v in host["caches"].items())
        + " (CPU 0).",
        "",
        "Peak multiply-add rate (best of repeated calls, process CPU time):",
        "",
        "| method | GMAC/s | used by the bound |",
        "|---|---:|---|",
    ]
    peak_method = result["bound_uses"]["peak"]
    for m, v in host["peak_gmacs"].items():
        use = "**yes**" if m == peak_method else NOT_USED.get(m, "")
        out.append(f"| {m} | {v:.1f} | {use} |")
    for m, v in host["peak_int8_gops"].items():
        out.append(f"| {m} (int8, u8 x s8) | {v:.1f} | int8 bound |")
    out += [
        "",
        "Read+write bandwidth (bytes read + bytes written per second of a copy; its two buffers fill the working set):",
        "",
        "| level | working set | " + " | ".join(host["bandwidth_gbs"]) + " | used by the bound |",
        "|---|---:|" + "---:|" * len(host["bandwidth_gbs"]) + "---|",
    ]
    for lv in LEVELS:
        vals = [f"{v.get(lv, float('nan')):.1f}" for v in host["bandwidth_gbs"].values()]
        out.append(
            f"| {lv} | {host['working_set_bytes'][lv] / 1024:.0f} KiB | "
            + " | ".join(vals)
            + f" | {result['bound_uses']['bandwidth'][lv]} |"
        )
    for k, v in host["notes"].items():
        out.append(f"\n{k}: {v}")
    out += [
        "",
        "Bounds per model and size (fp32; per-layer = sum over operators of max(compute, memory at the level the "
        "operator's bytes fit); fused = intermediates never leave cache):",
        "",
        "| model | size | MMACs | MB moved fp32 | MB moved int8 | compute ms | memory ms | per-layer bound ms | "
        "memory-bound share | fused bound ms | int8 per-layer bound ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, per_size in result["bounds"].items():
        for tag, b in per_size.items():
            i8 = result["bounds_int8"][key][tag]
            out.append(
                f"| {key} | {tag} | {b['macs'] / 1e6:.0f} | {b['bytes'] / 1e6:.1f} | {i8['bytes'] / 1e6:.1f} | "
                f"{_ms(b['compute_s'])} | {_ms(b['memory_s'])} | {_ms(b['bound_s'])} | "
                f"{100 * b['memory_bound_share']:.0f} % | {_ms(b['fused']['bound_s'])} | {_ms(i8['bound_s'])} |"
            )
    if result.get("measured"):
        rts = sorted({r["runtime"] for r in result["measured"]})
        out += [
            "",
            "Measured (benchmark JSON medians) as % of the per-layer bound [and of the fused bound]:",
            "",
            "| model | size | bound ms | fused ms | " + " | ".join(rts) + " |",
            "|---|---|---:|---:|" + "---:|" * len(rts),
        ]
        idx = {(r["model"], r["size"], r["runtime"]): r for r in result["measured"]}
        for key in result["bounds"]:
            for tag in result["bounds"][key]:
                cells = []
                for rt in rts:
                    r = idx.get((key, tag, rt))
                    cells.append(
                        f"{r['median_ms']:.1f} ms = {r['pct_of_bound']:.0f} % [{r['pct_of_fused_bound']:.0f} %]"
                        if r
                        else "-"
                    )
                b = result["bounds"][key][tag]
                if any(c != "-" for c in cells):
                    out.append(
                        f"| {key} | {tag} | {_ms(b['bound_s'])} | {_ms(b['fused']['bound_s'])} | "
                        + " | ".join(cells)
                        + " |"
                    )
    if result.get("op_kinds"):
        out += [
            "",
            "Per op kind (profiled ms of `--profile-ops`, wall clock; bound ms; profiled as % of bound):",
        ]
        groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
        for r in result["op_kinds"]:
            groups.setdefault((r["model"], r["runtime"]), []).append(r)
        for (key, rt), rows in groups.items():
            tags = list(dict.fromkeys(r["size"] for r in rows))
            kinds = list(dict.fromkeys(r["kind"] for r in rows))
            out += [
                "",
                f"{key} through {rt}:",
                "",
                "| op kind | " + " | ".join(f"{t} profiled / bound" for t in tags) + " |",
                "|---|" + "---:|" * len(tags),
            ]
            idx2 = {(r["size"], r["kind"]): r for r in rows}
            for kind in kinds:
                vals = []
                for t in tags:
                    r = idx2.get((t, kind))
                    if r is None:
                        vals.append("-")
                    else:
                        p = "-" if r["profiled_ms"] is None else f"{r['profiled_ms']:.2f}"
                        pct = f" ({r['pct_of_bound']:.0f} %)" if r["pct_of_bound"] is not None else ""
                        vals.append(f"{p} / {r['bound_ms']:.2f}{pct}")
                out.append(f"| {kind} | " + " | ".join(vals) + " |")
    if result.get("excess"):
        out += [
            "",
            "Largest time above the bound, per model and runtime (profiled - bound, the op kind that would pay most):",
            "",
        ]
        for e in result["excess"]:
            out.append(
                f"* {e['model']} {e['size']} {e['runtime']}: {e['kind']} {e['excess_ms']:.2f} ms above its bound "
                f"({e['share_of_total_excess']:.0f} % of the total excess {e['total_excess_ms']:.2f} ms)"
            )
    peer = result.get("peer")
    if peer:
        out += [
            "",
            f"Peer: ncnn's own ShuffleNet ({peer['param']}, from {peer['param_source']}; "
            f"groups {peer['param_groups']}, "
            f"last stage {peer['param_last_channels']} channels, fixed input {peer['param_fixed_input_hw']}) beside "
            f"ours ({peer['ours']}), ncnn {peer['ncnn_version']}, {peer['clock']}, {peer['repeats']} rounds:",
        ]
        for opt, per_label in peer["cells"].items():
            tags = list(dict.fromkeys(t for v in per_label.values() for t in v))
            out += ["", f"options `{opt}`:", "", "| net | " + " | ".join(tags) + " |", "|---|" + "---:|" * len(tags)]
            for label, per_tag in per_label.items():
                out.append(f"| {label} | " + " | ".join(f"{per_tag[t]['median_ms']:.2f}" for t in tags) + " |")
            theirs = per_label.get("ncnn shufflenet.param (empty weights)", {})
            ours = next((v for k, v in per_label.items() if k.startswith("ours") and "empty" in k), {})
            out.append(
                "| ratio ncnn's / ours (empty weights) | "
                + " | ".join(f"{theirs[t]['median_ms'] / ours[t]['median_ms']:.2f}x" for t in tags)
                + " |"
            )
    return "\n".join(out) + "\n"


def excess_summary(op_rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for r in op_rows:
        if r["profiled_ms"] is not None:
            groups.setdefault((r["model"], r["size"], r["runtime"]), []).append(r)
    out = []
    for (key, tag, rt), rows in groups.items():
        total = sum(max(r["excess_ms"], 0.0) for r in rows)
        top = max(rows, key=lambda r: r["excess_ms"])
        out.append(
            {
                "model": key,
                "size": tag,
                "runtime": rt,
                "kind": top["kind"],
                "excess_ms": top["excess_ms"],
                "total_excess_ms": total,
                "share_of_total_excess": 100.0 * max(top["excess_ms"], 0.0) / total if total else 0.0,
            }
        )
    return out


def host_from_json(path: Path) -> HostFigures:
    try:
        d = json.loads(path.read_text())["host"]
        return HostFigures(**d)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RooflineError(f"--host-json {path}: expected a roofline.json with a 'host' entry ({e})") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.roofline",
        description="Roofline of ShuffleNet / AlexNet on this host: per-layer bounds, measured times as % of "
        "bound, and ncnn's own ShuffleNet as the peer.",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        help=f"benchmark keys: {' '.join(MODELS)} (default), or any key whose model the --bench-json names",
    )
    p.add_argument("--sizes", nargs="+", default=list(SIZES), metavar="S|HxW")
    p.add_argument("--bench-json", type=Path, help="benchmark.json written by mobile/benchmark.py (--out DIR)")
    p.add_argument("--out", type=Path, default=Path("outputs/mobile/roofline"), help="folder for roofline.json/.md")
    p.add_argument("--host-json", type=Path, help="reuse the host figures of an earlier roofline.json")
    p.add_argument("--caches", help="cache sizes instead of sysfs, e.g. L1=48K,L2=2M,L3=32M")
    p.add_argument("--seconds", type=float, default=0.3, help="time per host measurement (default 0.3)")
    p.add_argument("--ncnn-param", type=Path, help="ncnn's benchmark/models/shufflenet.param (a path; not shipped)")
    p.add_argument("--peer-model", help="our registered model to time beside it (default: same width and groups)")
    p.add_argument("--peer-sizes", nargs="+", default=None, metavar="S|HxW", help="default: --sizes")
    p.add_argument("--peer-repeats", type=int, default=15, help="interleaved rounds per size (default 15)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes]
    if args.peer_repeats < 1:
        raise RooflineError(f"--peer-repeats {args.peer_repeats}: expected a positive number of rounds")
    bench = read_bench(args.bench_json) if args.bench_json else None
    # The benchmark JSON names the registered model behind each of its keys; without one, the defaults above.
    names = dict(MODELS)
    for key, entry in (bench or {}).get("models", {}).items():
        if isinstance(entry, dict) and entry.get("registered"):
            names[key] = entry["registered"]
    unknown = [m for m in args.models if m not in names]
    if unknown:
        raise RooflineError(f"--models {' '.join(unknown)}: unknown; valid: {' '.join(names)}")
    if args.ncnn_param is not None:
        read_ncnn_param(args.ncnn_param)  # bad input fails before any measurement
    out = args.out
    if out.exists() and not out.is_dir():
        raise RooflineError(f"--out {out}: exists and is not a folder")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    torch.set_num_threads(1)
    if args.host_json:
        host = host_from_json(args.host_json)
    else:
        caches = parse_caches(args.caches) if args.caches else cache_sizes()
        host = measure_host(caches, seconds=args.seconds, log=log)
    rates = rates_from(host, "fp32")
    rates8 = rates_from(host, "int8")
    bounds: Dict[str, Dict[str, Any]] = {}
    bounds8: Dict[str, Dict[str, Any]] = {}
    for key in args.models:
        model = create_model(names[key])
        for hw in sizes:
            layers = count_layers(model, hw)
            bounds.setdefault(key, {})[size_tag(hw)] = network_bound(layers, rates, "fp32")
            b8 = network_bound(layers, rates8, "int8")
            b8.pop("layers")
            bounds8.setdefault(key, {})[size_tag(hw)] = b8
            log(f"[roofline] {key} {size_tag(hw)}: bound {_ms(bounds[key][size_tag(hw)]['bound_s'])} ms")
    result: Dict[str, Any] = {
        "command": "python -m tools.roofline " + " ".join(sys.argv[1:] if argv is None else argv),
        "host": asdict(host),
        "bound_uses": {
            "peak": host.peak()[0],
            "peak_gmacs": host.peak()[1],
            "int8_peak_gops": host.int8_peak(),
            "bandwidth": {lv: host.bandwidth(lv)[0] for lv in LEVELS},
            "bandwidth_gbs": {lv: host.bandwidth(lv)[1] for lv in LEVELS},
        },
        "bounds": bounds,
        "bounds_int8": bounds8,
    }
    if bench is not None:
        result["bench_json"] = str(args.bench_json)
        result["bench_host"] = bench.get("host")
        result["measured"] = measured_rows(bench, bounds)
        result["op_kinds"] = op_kind_rows(bench, bounds)
        result["excess"] = excess_summary(result["op_kinds"])
    if args.ncnn_param is not None:
        peer_sizes = [parse_size(s) for s in (args.peer_sizes or args.sizes)]
        with tempfile.TemporaryDirectory(prefix="roofline-peer-") as tmp:
            result["peer"] = ncnn_peer(
                args.ncnn_param, peer_sizes, args.peer_repeats, 3, Path(tmp), args.peer_model, log=log
            )
    text = markdown(result)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, out / "roofline.json")
    write_text_atomic(text, out / "roofline.md")
    print(text)
    log(f"[roofline] wrote {out / 'roofline.json'}, {out / 'roofline.md'}")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
