"""Device side of the ARM check: load ``.ptl`` files in the lite interpreter and compare with x86 outputs.

Standalone on purpose (imports torch only), so it runs on any device Python with a torch wheel: an aarch64
board, or the emulated aarch64 Python of ``mobile/check_aarch64.sh``::

    python device_check.py CASE_DIR        # CASE_DIR made by ``python -m tools.mobile_aarch64 prepare``

``CASE_DIR/cases.json`` lists ``{"ptl": file, "inputs": file, "expected": file, "atol": ..., "rtol": ...}``;
inputs/expected are ``torch.save``'d lists of tensors. Prints one line per case and exits 1 on any mismatch.
Timings printed under emulation are emulator timings, not ARM timings.
"""

import json
import platform
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python device_check.py CASE_DIR", file=sys.stderr)
        return 2
    t0 = time.time()
    import torch
    from torch.jit.mobile import _get_model_bytecode_version, _load_for_lite_interpreter

    torch.set_num_threads(1)
    print(
        f"[device] python {platform.python_version()} on {platform.machine()}, torch {torch.__version__} "
        f"(import {time.time() - t0:.1f} s)",
        flush=True,
    )
    root = Path(argv[0])
    cases = json.loads((root / "cases.json").read_text())
    failed = 0
    for case in cases:
        ptl = root / case["ptl"]
        t = time.time()
        m = _load_for_lite_interpreter(str(ptl))
        load_s = time.time() - t
        inputs = torch.load(root / case["inputs"])
        expected = torch.load(root / case["expected"])
        worst, bound_min, ok = 0.0, None, True
        t = time.time()
        with torch.no_grad():
            for x, ref in zip(inputs, expected):
                out = m(x)
                diff = (out - ref).abs().max().item()
                bound = case["atol"] + case["rtol"] * ref.abs().max().item()
                worst = max(worst, diff)
                bound_min = bound if bound_min is None else min(bound_min, bound)
                ok = ok and diff <= bound
        run_s = time.time() - t
        failed += not ok
        sizes = ", ".join("x".join(str(d) for d in x.shape[2:]) for x in inputs)
        print(
            f"[device] {'OK  ' if ok else 'FAIL'} {case['ptl']} (bytecode v{_get_model_bytecode_version(str(ptl))}) "
            f"at {sizes}: max|x86 - device| = {worst:.2e} (bound {bound_min:.1e}); "
            f"load {load_s:.1f} s, {len(inputs)} runs {run_s:.1f} s [emulated: not an ARM timing]",
            flush=True,
        )
    print(f"[device] {len(cases) - failed}/{len(cases)} files reproduce the x86 outputs", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
