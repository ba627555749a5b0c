"""The host a file runs on: CPU, ISA, threads, and what each runtime says about its kernels (the benchmark's and
the int8 report's ``host`` and ``kernel_isa`` entries). Nothing here is guessed: a runtime that reports nothing
is marked ``"not reported"``."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from .ptl import xnnpack_available
from .runtime import runtimes as registered

__all__ = ["host_info", "cpu_flags", "kernel_isa", "isa_summary", "NOT_REPORTED"]


def host_info(threads: Optional[int] = None) -> Dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "logical_cpus": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "xnnpack": xnnpack_available(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


#: CPU flags that decide which kernels XNNPACK, MLAS (ONNX Runtime), ncnn and oneDNN pick at run time.
_X86_FLAGS = tuple(
    "sse4_2 avx avx2 fma f16c avx_vnni avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_tile "
    "amx_bf16 amx_int8".split()
)
_ARM_FLAGS = tuple("asimd asimdhp asimddp fphp i8mm bf16 sve sve2 sme".split())
NOT_REPORTED = "not reported"


def cpu_flags(cpuinfo: Optional[str] = None) -> Optional[List[str]]:
    """The SIMD flags (of :data:`_X86_FLAGS` / :data:`_ARM_FLAGS`) in ``/proc/cpuinfo``; None where unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            have = set(value.split())
            return [f for f in (*_X86_FLAGS, *_ARM_FLAGS) if f in have]
    return None


def _onednn(kind: str) -> Optional[bool]:
    fn = getattr(torch.ops.mkldnn, f"_is_mkldnn_{kind}_supported", None)
    try:
        return bool(fn()) if fn is not None else None
    except Exception:  # noqa: BLE001
        return None


def kernel_isa(runtimes: Sequence[str]) -> Dict[str, Any]:
    """The host's ISA and what each of ``runtimes`` says about its kernels (``"not reported"`` where it says
    nothing; ``{"error": ...}`` where its module cannot be imported)."""
    out: Dict[str, Any] = {
        "host": {
            "arch": platform.machine(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_bf16": _onednn("bf16"),
            "onednn_fp16": _onednn("fp16"),
            "cpu_flags": cpu_flags(),
        },
        "runtimes": {},
    }
    known = registered()
    for rt in runtimes:
        if rt not in known:
            continue
        try:
            out["runtimes"][rt] = known[rt].kernels()
        except Exception as e:  # noqa: BLE001 - a report: say what failed
            out["runtimes"][rt] = {"error": f"{type(e).__name__}: {e}"}
    return out


def isa_summary(info: Dict[str, Any]) -> str:
    """One line for a runtime's entry of :func:`kernel_isa`."""
    if "error" in info:
        return f"error: {info['error']}"
    return "; ".join(f"{k} {v}" for k, v in info.items() if k != "kernels")
