"""Device side of the ARM check for ONNX Runtime and ncnn: load the files and compare with the x86 outputs.

Standalone (numpy + onnxruntime and/or ncnn only), so it runs in any device Python with those wheels: an
aarch64 board, or the emulated aarch64 Python of ``mobile/check_aarch64.sh``::

    python device_check_runtimes.py CASE_DIR   # CASE_DIR made by ``python -m tools.mobile_aarch64 prepare``

``CASE_DIR/runtime_cases.json`` lists ``{"runtime": "onnx"|"ncnn", "files": [...], "inputs": [.npy],
"expected": [.npy], "atol", "rtol"}``. A runtime whose wheel is missing is reported and skipped; exits 1 on any
mismatch. Timings under emulation are not ARM timings, so none are printed.
"""

import json
import platform
import sys
from pathlib import Path


def _onnx(root, files):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(root / files[0]), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _ncnn(root, files):
    import ncnn
    import numpy as np

    net = ncnn.Net()
    for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, flag, False)
    net.opt.num_threads = 1
    net.load_param(str(root / files[0]))
    net.load_model(str(root / files[1]))

    def run(x):
        outs = []
        for i in range(x.shape[0]):
            arr = np.ascontiguousarray(x[i])  # ncnn.Mat wraps it without a copy: kept alive until extracted
            ex = net.create_extractor()
            ex.input("in0", ncnn.Mat(arr))
            _, mat = ex.extract("out0")
            outs.append(np.array(mat).reshape(1, -1))
        return np.concatenate(outs)

    return run


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python device_check_runtimes.py CASE_DIR", file=sys.stderr)
        return 2
    import numpy as np

    root = Path(argv[0])
    cases = json.loads((root / "runtime_cases.json").read_text())
    print(f"[device] python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}", flush=True)
    failed = checked = 0
    for case in cases:
        try:
            run = {"onnx": _onnx, "ncnn": _ncnn}[case["runtime"]](root, case["files"])
        except ImportError as e:
            print(f"[device] SKIP {case['runtime']}: {e}", flush=True)
            continue
        ok, worst = True, 0.0
        for inp, exp in zip(case["inputs"], case["expected"]):
            x, ref = np.load(root / inp), np.load(root / exp)
            diff = float(np.abs(run(x).reshape(ref.shape) - ref).max())
            ok = ok and diff <= case["atol"] + case["rtol"] * float(np.abs(ref).max())
            worst = max(worst, diff)
        checked += 1
        failed += not ok
        print(
            f"[device] {'OK  ' if ok else 'FAIL'} {case['runtime']} {case['files'][0]}: "
            f"max|x86 - device| = {worst:.2e} over {len(case['inputs'])} inputs",
            flush=True,
        )
    print(f"[device] {checked - failed}/{checked} ONNX/ncnn files reproduce the x86 outputs", flush=True)
    if cases and not checked:
        print("[device] FAIL: no runtime could be loaded, nothing was checked", flush=True)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
