"""ncnn export (``--format ncnn``): TorchScript trace -> ``pnnx`` -> ``.ncnn.param`` + ``.ncnn.bin``, verified in ncnn.

Optional dependencies: ``pip install "shufflenet[ncnn]"`` (``pnnx``, Tencent's converter, and ``ncnn``'s
Python binding, used to load the files back and check them). The model is traced at the first
``--input-size`` and, for pnnx's dynamic shapes, at the second (or a larger one), so the ``.param`` takes any
height and width; every size is then verified in ncnn (one image per call, as ncnn's ``Extractor`` takes
it). Weights are stored and computed in fp32 (``fp16=0``; the runtime's fp16 storage and arithmetic are
switched off when checking), so the bound is the one of the other float exports.

pnnx has no functional ``aten::channel_shuffle``; the shuffle is traced as the ``torch.nn.ChannelShuffle`` module
(:mod:`.rewrite`), which pnnx converts to ncnn's ``ShuffleChannel`` layer.
Input blob ``in0`` (``3 x H x W``, normalized), outputs ``out0``...; an
app feeds camera pixels through ``ncnn::Mat::from_pixels`` + ``substract_mean_normalize`` (the sidecar
gives the mean and std on the 0-255 scale).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .artifact import (
    Staged,
    check_sizes,
    input_spec,
    output_shapes,
    reference_and_inputs,
    sidecar,
    verify,
    verify_int8_fidelity,
)
from .images import resolve_images
from .rewrite import for_runtime, with_reshape_shuffles
from .source import MobileError, ModelSource
from .verify import DEFAULT_ATOL, DEFAULT_RTOL, INT8_ATOL, INT8_FIDELITY_RTOL

__all__ = [
    "require_ncnn",
    "NCNN_INT8_TOOLS",
    "find_ncnn_int8_tools",
    "require_ncnn_int8_tools",
    "NCNN_INT8_OPTIONS",
    "ncnn_runner",
    "convert_with_pnnx",
    "export_ncnn",
]

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
        raise MobileError(
            f"--format ncnn --quantize int8 needs ncnn's {' and '.join(missing)} on PATH (C++ tools the ncnn and "
            "pnnx wheels do not ship): build them from the ncnn source (cmake -DNCNN_BUILD_TOOLS=ON, targets "
            "ncnn2table ncnn2int8; see the project's docs/mobile.md, 'ncnn int8') and put them on PATH"
        )
    return tools


def require_ncnn() -> None:
    missing = []
    for mod in ("pnnx", "ncnn"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise MobileError(
            f"--format ncnn needs {' and '.join(missing)} (optional, not installed): "
            'pip install "shufflenet[ncnn]" (pnnx, ncnn)'
        )


#: ncnn options an int8 file needs (the sidecar's ``runtime_options``): the wheel's packed-layout int8 path gave
#: wrong results for ShuffleNet on x86 (AVX2; trained 0.5x at 32x32: max|int8 - fp32| 370 % of max|fp32|, top-1
#: agreement 10 % on 10 CIFAR test images), the unpacked path 4 % and 100 %; the fidelity check refuses the former.
NCNN_INT8_OPTIONS = {"use_packing_layout": False}


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
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(x.contiguous().numpy()).clone())
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


def _shape_arg(t: Tensor) -> str:
    return "[" + ",".join(str(int(v)) for v in t.shape) + "]f32"


def convert_with_pnnx(form: torch.nn.Module, example: Tensor, example2: Tensor, workdir: Path) -> Tuple[Path, Path]:
    """Trace ``form`` and run the ``pnnx`` converter in ``workdir``; the ``.ncnn.param`` and ``.ncnn.bin``."""
    import pnnx

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(form, example, check_trace=False)
    pt = workdir / "model.pt"
    traced.save(str(pt))
    cmd = [pnnx.EXEC_PATH, str(pt), f"inputshape={_shape_arg(example)}", f"inputshape2={_shape_arg(example2)}"]
    cmd += ["fp16=0", "device=cpu"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    param, bin_ = workdir / "model.ncnn.param", workdir / "model.ncnn.bin"
    if proc.returncode != 0 or not param.is_file() or not bin_.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MobileError(f"pnnx could not convert the model (exit {proc.returncode}): {tail[0]}")
    unsupported = sorted(
        {ln.split()[0] for ln in param.read_text().splitlines()[2:] if ln.startswith(("aten::", "pnnx."))}
    )
    if unsupported:
        raise MobileError(f"pnnx left operators ncnn cannot run: {', '.join(unsupported)}")
    return param, bin_


def export_ncnn(
    source: ModelSource,
    out_dir: os.PathLike,
    sizes: Sequence[Tuple[int, int]] = ((224, 224),),
    images: Any = "auto",
    n_real: int = 2,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    basename: Optional[str] = None,
    rewrite: bool = True,
    quantize_fn: Optional[Callable[[Path, Path, Path], Dict[str, Any]]] = None,
    log: Callable[[str], None] = print,
) -> Tuple[Dict[str, Path], Dict[str, Any]]:
    """Export ``out_dir/<basename>.ncnn.param`` + ``.ncnn.bin`` + ``<basename>.ncnn.json``; verified, atomic.

    ``quantize_fn(param, bin, workdir) -> description`` (int8: :func:`shufflenet.mobile.quantize.ncnn_int8_for_ncnn`)
    rewrites pnnx's fp32 files in place into ncnn int8 ones (``ncnn2table`` + ``ncnn2int8``). ncnn has no
    fp32 reference of its int8 layers, so an int8 file is verified against the fp32 model on the real photos
    with the fidelity bound (``INT8_ATOL`` + ``INT8_FIDELITY_RTOL`` x max|fp32|), the top-1 agreement recorded.
    """
    require_ncnn()
    if quantize_fn is not None:
        require_ncnn_int8_tools()
    sizes = check_sizes(sizes)
    files = images if isinstance(images, (list, tuple)) else resolve_images(images)
    basename = basename or source.name.replace("/", "_")
    reference, inputs = reference_and_inputs(source, sizes, files, n_real)
    model = source.model.eval()
    net = for_runtime(model, "ncnn") if rewrite else model
    form = with_reshape_shuffles(net, "module")
    h, w = sizes[0]
    second = sizes[1] if len(sizes) > 1 else (h + 32, w + 64)  # pnnx infers which dimensions are dynamic
    with Staged(out_dir) as staged, tempfile.TemporaryDirectory(prefix="pnnx-") as work:
        log(f"[export] {source.name}: torch.jit.trace -> pnnx -> ncnn (fp32) ...")
        param, bin_ = convert_with_pnnx(form, torch.randn(1, 3, h, w), torch.randn(1, 3, *second), Path(work))
        quantization = None
        if quantize_fn is not None:
            log(f"[export] {source.name}: ncnn2table (calibration table) -> ncnn2int8 ...")
            quantization = quantize_fn(param, bin_, Path(work))
        names = {"param": f"{basename}.ncnn.param", "bin": f"{basename}.ncnn.bin"}
        shutil.copyfile(param, staged.tmp(names["param"]))
        shutil.copyfile(bin_, staged.tmp(names["bin"]))
        options = NCNN_INT8_OPTIONS if quantization is not None else {}
        run = ncnn_runner(
            staged.files[staged.out_dir / names["param"]], staged.files[staged.out_dir / names["bin"]], options=options
        )
        if quantization is None:
            rows = verify(reference, run, inputs, atol, rtol, "ncnn", log)
        else:
            rows = verify_int8_fidelity(
                reference, run, inputs, quantization, "ncnn int8 file", log, source.mean, source.std
            )
            atol, rtol = INT8_ATOL, INT8_FIDELITY_RTOL
        side = sidecar(
            source,
            "ncnn (ncnn::Net; input blob in0, outputs out0...)",
            input_spec(
                source,
                sizes,
                "3 x H x W per call (ncnn::Mat; any H x W)",
                substract_mean_normalize={
                    "mean_vals": [255 * m for m in source.mean],
                    "norm_vals": [1 / (255 * s) for s in source.std],
                },
            ),
            output_shapes(reference, inputs[0].tensor),
            rows,
            atol,
            rtol,
            files,
            net is not model,
            _versions(),
            files={k: staged.entry(v) for k, v in names.items()},
            storage="fp32 (pnnx fp16=0)" if quantization is None else "int8 weights (ncnn2int8), fp32 elsewhere",
            quantization=quantization,
            runtime_options=options or None,
            layers=_layers(staged.files[staged.out_dir / names["param"]]),
        )
        written = staged.commit(side, f"{basename}.ncnn.json", log)
    return {"param": written[0], "bin": written[1]}, side


def _layers(param: Path) -> List[str]:
    return sorted({ln.split()[0] for ln in param.read_text().splitlines()[2:] if ln.strip()})


def _versions() -> Dict[str, Optional[str]]:
    from importlib.metadata import PackageNotFoundError, version

    out: Dict[str, Optional[str]] = {}
    for pkg in ("pnnx", "ncnn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - required above
            out[pkg] = None
    return out
