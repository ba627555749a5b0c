"""Host side of the emulated aarch64 check (``mobile/check_aarch64.sh``, ``make check-aarch64``).

``python -m tools.mobile_aarch64 prepare DIR`` exports verified ``.ptl`` files (as written by this
torch, and backported to bytecode v7 for older runtimes), random + real inputs (the package's sample photos)
and the x86 lite-interpreter outputs into ``DIR`` for :mod:`tools.mobile_device_check`, which runs them
on the device side. Every file is written atomically; bad input is one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from shufflenet.errors import run_cli
from shufflenet.fileio import write_json_atomic, write_text_atomic
from shufflenet.mobile.images import parse_size, resolve_images
from shufflenet.mobile.ptl import require_xnnpack
from shufflenet.mobile.runtime import ExportSpec, export, get
from shufflenet.mobile.source import MobileError, load_model, writable_dir
from shufflenet.mobile.verify import DEFAULT_ATOL, DEFAULT_RTOL, make_inputs
from shufflenet.weights.io import atomic_torch_save


def prepare(out: Path, models: Sequence[str], sizes: Sequence[str], backport_to: Optional[int] = 7) -> Path:
    from torch.jit.mobile import _load_for_lite_interpreter

    hw = [parse_size(s) for s in sizes]
    if backport_to is not None and backport_to < 1:
        raise MobileError(f"--backport-to must be a bytecode version >= 1, got {backport_to}")
    sources = [load_model(name) for name in models]  # all names checked before any export
    require_xnnpack()
    out = writable_dir(out)
    images = resolve_images("auto")
    cases = []
    torch.manual_seed(0)
    for name, src in zip(models, sources):
        variants = [(None, name)] + ([(backport_to, f"{name}_v{backport_to}")] if backport_to else [])
        for version, stem in variants:
            spec = ExportSpec(hw, images=images, n_real=1, name=stem, bytecode_version=version)
            ptl, _ = export("ptl", src, out, spec)
            inputs = [t.tensor for t in make_inputs(hw, images, n_real=1)]
            lite = _load_for_lite_interpreter(str(ptl))
            with torch.no_grad():
                expected = [lite(x) for x in inputs]
            atomic_torch_save(inputs, out / f"{stem}.inputs.pt")
            atomic_torch_save(expected, out / f"{stem}.expected.pt")
            cases.append(
                {
                    "ptl": ptl.name,
                    "inputs": f"{stem}.inputs.pt",
                    "expected": f"{stem}.expected.pt",
                    "atol": DEFAULT_ATOL,
                    "rtol": DEFAULT_RTOL,
                }
            )
    write_json_atomic(cases, out / "cases.json")
    write_json_atomic(_runtime_cases(out, models, sources, hw, images), out / "runtime_cases.json")
    write_text_atomic(
        Path(__file__).with_name("mobile_device_check_runtimes.py").read_text(), out / "device_check_runtimes.py"
    )
    write_text_atomic(Path(__file__).with_name("mobile_device_check.py").read_text(), out / "device_check.py")
    print(f"[host] {len(cases)} cases in {out}")
    return out


#: The runtimes the standalone device script (mobile_device_check_runtimes.py) checks.
DEVICE_RUNTIMES = ("onnx", "ncnn")


def _runtime_cases(out: Path, models, sources, hw, images) -> list:
    """ONNX and ncnn files of each model (where the extras are installed) with their x86 outputs as ``.npy``
    (the device side needs numpy and the runtime only)."""
    import numpy as np

    cases = []
    for name, src in zip(models, sources):
        inputs = [t.tensor for t in make_inputs(hw, images, n_real=1)]
        for i, x in enumerate(inputs):
            np.save(out / f"{name}.rt_input{i}.npy", x.contiguous().numpy())
        runs = []
        for runtime in DEVICE_RUNTIMES:  # what device_check_runtimes.py can load on the device
            try:
                rt = get(runtime)
                files, side = export(rt, src, out, ExportSpec(hw, images=images, n_real=1, name=name))
            except MobileError as e:
                print(f"[host] skipping {runtime}: {e}")
                continue
            names = [p.name for p in (files.values() if isinstance(files, dict) else [files])]
            runs.append((runtime, names, rt.load(files, side, threads=1)))
        for runtime, files, run in runs:
            expected = []
            for i, x in enumerate(inputs):
                with torch.no_grad():
                    y = run(x)
                np.save(out / f"{name}.{runtime}.expected{i}.npy", y.numpy())
                expected.append(f"{name}.{runtime}.expected{i}.npy")
            cases.append(
                {
                    "runtime": runtime,
                    "files": files,
                    "inputs": [f"{name}.rt_input{i}.npy" for i in range(len(inputs))],
                    "expected": expected,
                    "atol": DEFAULT_ATOL,
                    "rtol": DEFAULT_RTOL,
                }
            )
    return cases


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.mobile_aarch64")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="export .ptl files + x86 reference outputs for device_check.py")
    pr.add_argument("out")
    pr.add_argument("--models", nargs="+", default=["shufflenet_v1_x0_5_g3"])
    pr.add_argument("--input-size", nargs="+", default=["224", "480x640"])
    pr.add_argument("--backport-to", type=int, default=7, help="also write a copy at this bytecode version (0: none)")
    args = p.parse_args(argv)
    prepare(Path(args.out), args.models, args.input_size, args.backport_to or None)
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
