"""Host side of the emulated aarch64 check (``mobile/check_aarch64.sh``, ``make check-aarch64``).

``python -m shufflenet.mobile.aarch64 prepare DIR`` exports verified ``.ptl`` files (as written by this
torch, and backported to bytecode v7 for older runtimes), random + real inputs and the x86 lite-interpreter
outputs into ``DIR`` for :mod:`shufflenet.mobile.device_check`, which runs them on the device side.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..fileio import write_json_atomic
from .export import DEFAULT_ATOL, DEFAULT_RTOL, export_ptl, make_inputs
from .images import default_image_dir, parse_size
from .source import MobileError, load_model


def prepare(out: Path, models: Sequence[str], sizes: Sequence[str], backport_to: Optional[int] = 7) -> Path:
    from torch.jit.mobile import _load_for_lite_interpreter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hw = [parse_size(s) for s in sizes]
    cases = []
    torch.manual_seed(0)
    for name in models:
        src = load_model(name)
        variants = [(None, name)] + ([(backport_to, f"{name}_v{backport_to}")] if backport_to else [])
        for version, stem in variants:
            ptl, _ = export_ptl(src, out, hw, bytecode_version=version, basename=stem, n_real=1)
            inputs = [t.tensor for t in make_inputs(hw, default_image_dir(), n_real=1)]
            lite = _load_for_lite_interpreter(str(ptl))
            with torch.no_grad():
                expected = [lite(x) for x in inputs]
            torch.save(inputs, out / f"{stem}.inputs.pt")
            torch.save(expected, out / f"{stem}.expected.pt")
            cases.append({"ptl": ptl.name, "inputs": f"{stem}.inputs.pt", "expected": f"{stem}.expected.pt",
                          "atol": DEFAULT_ATOL, "rtol": DEFAULT_RTOL})
    write_json_atomic(cases, out / "cases.json")
    shutil.copy(Path(__file__).with_name("device_check.py"), out / "device_check.py")
    print(f"[host] {len(cases)} cases in {out}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shufflenet.mobile.aarch64")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="export .ptl files + x86 reference outputs for device_check.py")
    pr.add_argument("out")
    pr.add_argument("--models", nargs="+", default=["shufflenet_v1_x0_5_g3"])
    pr.add_argument("--input-size", nargs="+", default=["224", "480x640"])
    pr.add_argument("--backport-to", type=int, default=7)
    args = p.parse_args(argv)
    try:
        prepare(Path(args.out), args.models, args.input_size, args.backport_to or None)
    except (MobileError, ValueError) as e:
        print(f"aarch64 prepare: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
