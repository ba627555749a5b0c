"""ncnn export (``--format ncnn``, extra ``shufflenet[ncnn]``): TorchScript trace -> ``pnnx`` -> ``.ncnn.param`` +
``.ncnn.bin``, verified in ncnn's Python binding (fp32: fp16 storage/arithmetic off). Traced at two sizes so
pnnx makes height and width dynamic. The shuffle is traced as ``torch.nn.ChannelShuffle`` (pnnx has no
functional ``aten::channel_shuffle``), which becomes ncnn's ``ShuffleChannel``. Input blob ``in0``, outputs
``out0``...; an app feeds pixels through ``ncnn::Mat::from_pixels`` + ``substract_mean_normalize`` (sidecar).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .artifact import Staged
from .quantize import calibration_batch, resolve_calib_dir
from .rewrite import for_runtime, with_reshape_shuffles
from .runtime import ExportSpec, Job, Runtime, register
from .source import MobileError, RuntimeUnavailableError
from .verify import INT8_ATOL, INT8_FIDELITY_RTOL

__all__ = ["NcnnRuntime", "NCNN_INT8_TOOLS", "find_ncnn_int8_tools", "require_ncnn_int8_tools", "NCNN_INT8_OPTIONS"]
__all__ += ["ncnn_runner", "convert_with_pnnx", "NCNN_INT8_SCHEME", "ncnn_int8_for_ncnn"]

#: ncnn's post-training int8 programs (C++, ``tools/quantize`` of the ncnn source): the calibration table
#: from real inputs, then the int8 ``.param``/``.bin``. The ``ncnn`` and ``pnnx`` wheels ship neither.
NCNN_INT8_TOOLS = ("ncnn2table", "ncnn2int8")


def find_ncnn_int8_tools() -> Optional[Dict[str, str]]:
    """Paths of ``ncnn2table`` and ``ncnn2int8`` on ``PATH``, or None when either is missing."""
    found = {t: shutil.which(t) for t in NCNN_INT8_TOOLS}
    return None if None in found.values() else {t: str(p) for t, p in found.items()}


def require_ncnn_int8_tools() -> Dict[str, str]:
    tools = find_ncnn_int8_tools()
    if tools is None:
        missing = [t for t in NCNN_INT8_TOOLS if shutil.which(t) is None]
        raise RuntimeUnavailableError(
            f"--format ncnn --quantize int8 needs ncnn's {' and '.join(missing)} on PATH (C++ tools the ncnn and "
            "pnnx wheels do not ship): build them from the ncnn source (cmake -DNCNN_BUILD_TOOLS=ON, targets "
            "ncnn2table ncnn2int8; see the project's docs/mobile.md, 'ncnn int8') and put them on PATH"
        )
    return tools


#: ncnn options an int8 file needs (the sidecar's ``runtime_options``): the wheel's packed-layout int8 path gave
#: wrong results for ShuffleNet on x86 (AVX2; trained 0.5x at 32x32: max|int8 - fp32| 370 % of max|fp32|, top-1
#: agreement 10 % on 10 CIFAR test images), the unpacked path 4 % and 100 %; the fidelity check refuses the former.
NCNN_INT8_OPTIONS = {"use_packing_layout": False}


NCNN_INT8_SCHEME = (
    "int8 post-training static, ncnn2table (KL calibration table of the activations) + ncnn2int8 (int8 weights, "
    "per output channel)"
)


def ncnn_int8_for_ncnn(
    source: Any, calib_dir: Any, count: int, size: Tuple[int, int]
) -> Callable[[Path, Path, Path], Dict[str, Any]]:
    """A ``quantize_fn(param, bin, workdir) -> description``: ``ncnn2table`` on the images the other int8 paths
    use, preprocessed the same way and handed over as ``.npy`` (``type=1``: ncnn's image reader plays no part),
    then ``ncnn2int8``."""
    tools = require_ncnn_int8_tools()
    calib_dir = resolve_calib_dir(calib_dir)
    batch = calibration_batch(calib_dir, count, size, source.mean, source.std)

    def quantize_fn(param: Path, bin_: Path, work: Path) -> Dict[str, Any]:
        import numpy as np

        npy = work / "calibration"
        npy.mkdir()
        listing = []
        for i in range(batch.shape[0]):
            path = npy / f"{i:05d}.npy"
            np.save(path, np.ascontiguousarray(batch[i].numpy(), dtype=np.float32))  # C x H x W
            listing.append(str(path))
        (work / "calibration.txt").write_text("\n".join(listing) + "\n")
        table = work / "model.table"
        c, h, w = batch.shape[1:]
        steps = [
            [tools["ncnn2table"], str(param), str(bin_), str(work / "calibration.txt"), str(table)]
            + [f"shape=[{w},{h},{c}]", "method=kl", "type=1", "thread=1"],
            [tools["ncnn2int8"], str(param), str(bin_), str(work / "int8.param"), str(work / "int8.bin"), str(table)],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise MobileError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): {tail[0]}")
        if not (work / "int8.param").is_file() or not (work / "int8.bin").is_file():
            raise MobileError("ncnn2int8 wrote no int8.param / int8.bin")
        os.replace(work / "int8.param", param)
        os.replace(work / "int8.bin", bin_)
        return {
            "scheme": NCNN_INT8_SCHEME,
            "calibration": {"dir": str(calib_dir), "images": int(batch.shape[0]), "size": list(size)},
            "tools": {t: str(p) for t, p in tools.items()},
            "table_entries": sum(1 for ln in table.read_text().splitlines() if ln.strip()),
        }

    return quantize_fn


def ncnn_runner(
    param: os.PathLike, bin: os.PathLike, threads: Optional[int] = 1, options: Optional[Dict[str, Any]] = None
) -> Callable[[Tensor], Any]:
    """An ncnn ``Net`` (fp32 storage and arithmetic; ``options``: more ``ncnn.Option`` settings) as a callable
    on ``N x 3 x H x W`` torch tensors."""
    import ncnn
    import numpy as np

    net = ncnn.Net()
    for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, flag, False)
    for flag, value in (options or {}).items():
        setattr(net.opt, flag, value)
    if threads is not None:
        net.opt.num_threads = int(threads)
    if net.load_param(str(param)) != 0 or net.load_model(str(bin)) != 0:
        raise MobileError(f"ncnn could not load {Path(param).name} / {Path(bin).name}")
    names = list(net.output_names())

    def one(x: Tensor) -> List[Tensor]:
        # ncnn.Mat wraps the array's memory without a copy: the local ``arr`` keeps it alive until extracted
        arr = x.contiguous().numpy()
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(arr))
        outs = []
        for name in names:
            rc, mat = ex.extract(name)
            if rc != 0:
                raise RuntimeError(f"ncnn extract({name!r}) returned {rc}")
            outs.append(torch.from_numpy(np.array(mat).copy()).unsqueeze(0))
        return outs

    def run(x: Tensor) -> Any:
        per = [one(x[i]) for i in range(x.shape[0])]
        cat = [torch.cat([p[j] for p in per]) for j in range(len(names))]
        return cat[0] if len(cat) == 1 else cat

    return run


def convert_with_pnnx(form: torch.nn.Module, example: Tensor, example2: Tensor, workdir: Path) -> Tuple[Path, Path]:
    """Trace ``form`` and run the ``pnnx`` converter in ``workdir``; the ``.ncnn.param`` and ``.ncnn.bin``."""
    import pnnx

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(form, example, check_trace=False)
    pt = workdir / "model.pt"
    traced.save(str(pt))
    shapes = [
        f"inputshape{i}=[{','.join(str(int(v)) for v in t.shape)}]f32" for i, t in (("", example), ("2", example2))
    ]
    cmd = [pnnx.EXEC_PATH, str(pt), *shapes, "fp16=0", "device=cpu"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    param, bin_ = workdir / "model.ncnn.param", workdir / "model.ncnn.bin"
    if proc.returncode != 0 or not param.is_file() or not bin_.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MobileError(f"pnnx could not convert the model (exit {proc.returncode}): {tail[0]}")
    unsupported = [layer for layer in _layers(param) if layer.startswith(("aten::", "pnnx."))]
    if unsupported:
        raise MobileError(f"pnnx left operators ncnn cannot run: {', '.join(unsupported)}")
    return param, bin_


class NcnnRuntime(Runtime):
    name = "ncnn"
    title = "ncnn (ncnn::Net; input blob in0, outputs out0...)"
    label = "ncnn"
    summary = "pnnx + ncnn; extra 'ncnn'"
    suffix = ".ncnn"
    packages = ("pnnx", "ncnn")
    extra = "ncnn"
    layout = "nchw"
    int8 = "ncnn2table + ncnn2int8 (unpacked layout)"
    int8_reference = "fp32 model (fidelity)"
    int8_fidelity = True
    camera = False

    def missing(self, spec: Optional[ExportSpec] = None) -> Optional[str]:
        why = super().missing(spec)
        if why is None and spec is not None and spec.int8:
            try:
                require_ncnn_int8_tools()
            except MobileError as e:
                return str(e)
        return why

    def refuse(self, spec: ExportSpec, task: str = "classification") -> Optional[str]:
        if spec.camera:
            return (
                "--format ncnn exports NCHW files (an app feeds pixels through ncnn::Mat::from_pixels + "
                "substract_mean_normalize); no --camera-input"
            )
        return super().refuse(spec, task)

    def write(self, job: Job, staged: Staged, work: Path) -> Tuple[Dict[str, Path], Dict[str, Any]]:
        """``<stem>.ncnn.param`` + ``.ncnn.bin`` for any height and width. int8 (``ncnn2table`` + ``ncnn2int8``)
        has no fp32 reference in ncnn: it is checked against the fp32 model with the fidelity bound."""
        spec, source, log = job.spec, job.source, job.log
        quantize_fn = job.quantizer(ncnn_int8_for_ncnn)
        model = source.model.eval()
        net = for_runtime(model, "ncnn") if spec.rewrite else model
        form = with_reshape_shuffles(net, "module")
        h, w = job.sizes[0]
        second = job.sizes[1] if len(job.sizes) > 1 else (h + 32, w + 64)  # pnnx infers which dims are dynamic
        log(f"[export] {source.name}: torch.jit.trace -> pnnx -> ncnn (fp32) ...")
        param, bin_ = convert_with_pnnx(form, torch.randn(1, 3, h, w), torch.randn(1, 3, *second), work)
        quantization = None
        if quantize_fn is not None:
            log(f"[export] {source.name}: ncnn2table (calibration table) -> ncnn2int8 ...")
            quantization = quantize_fn(param, bin_, work)
        names = {"param": f"{job.stem}.ncnn.param", "bin": f"{job.stem}.ncnn.bin"}
        shutil.copyfile(param, staged.tmp(names["param"]))
        shutil.copyfile(bin_, staged.tmp(names["bin"]))
        options = NCNN_INT8_OPTIONS if quantization is not None else {}
        tmp = {k: staged.files[staged.out_dir / v] for k, v in names.items()}
        run = ncnn_runner(tmp["param"], tmp["bin"], options=options)
        if quantization is None:
            rows = job.verify(run, self.label)
        else:
            rows = job.verify_fidelity(run, quantization, "ncnn int8 file")
        side = job.sidecar(
            self,
            job.input(
                "3 x H x W per call (ncnn::Mat; any H x W)",
                substract_mean_normalize={
                    "mean_vals": [255 * m for m in source.mean],
                    "norm_vals": [1 / (255 * s) for s in source.std],
                },
            ),
            job.outputs(),
            rows,
            net is not model,
            files={k: staged.entry(v) for k, v in names.items()},
            storage="fp32 (pnnx fp16=0)" if quantization is None else "int8 weights (ncnn2int8), fp32 elsewhere",
            quantization=quantization,
            runtime_options=options or None,
            layers=_layers(tmp["param"]),
        )
        if quantization is not None:  # the fidelity bound is the one the checks were made with
            side["verification"].update(atol=INT8_ATOL, rtol=INT8_FIDELITY_RTOL)
        return {k: staged.out_dir / v for k, v in names.items()}, side

    def load(self, files: Any, sidecar: Dict[str, Any], threads: Optional[int] = 1) -> Callable[[Tensor], Any]:
        return ncnn_runner(files["param"], files["bin"], threads=threads, options=sidecar.get("runtime_options"))

    def kernels(self) -> Dict[str, Any]:
        import ncnn

        out: Dict[str, Any] = {
            "kernels": "ncnn (its own x86/ARM kernels)",
            "version": getattr(ncnn, "__version__", "?"),
        }
        for name in sorted(n for n in dir(ncnn) if n.startswith("cpu_support_")):
            out[name] = bool(getattr(ncnn, name)())
        if not any(n.startswith("cpu_support_x86_avx512") for n in out):
            out["cpu_support_x86_avx512"] = "not reported (the Python binding has no such query)"
        return out


def _layers(param: Path) -> List[str]:
    return sorted({ln.split()[0] for ln in param.read_text().splitlines()[2:] if ln.strip()})


register(NcnnRuntime())
