"""The runtime interface: one :class:`Runtime` per mobile runtime, one :class:`ExportSpec`, one export path.

A runtime module (``ptl``, ``pte``, ``onnx_export``, ``ncnn_export``, ``tflite_export``) defines one subclass of
:class:`Runtime` and registers one instance with :func:`register`; the CLI (``shufflenet-export``), the Table-8
benchmark (``shufflenet-bench``), the detector export and the int8 report loop over :func:`runtimes` and never
name a runtime. :func:`export` does the steps every runtime shares, once: it checks the arguments against what
the runtime takes (before anything is imported), checks that the runtime is installed, resolves the sizes,
images and file stem, builds the eager reference and the verification inputs (:class:`Job`), stages the files,
and commits them with the JSON sidecar only after the runtime's own file passed :meth:`Job.verify`.

What a new runtime module defines: docs/mobile.md, "The runtime interface", and :class:`Runtime`.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .artifact import Staged
from .images import list_images, resolve_images
from .source import MobileError, ModelSource, RuntimeUnavailableError
from .verify import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    INT8_ATOL,
    INT8_FIDELITY_RTOL,
    INT8_RTOL,
    VerificationError,
    VerifyInput,
    compare_outputs,
    flatten_outputs,
    frame_reference,
    images_note,
    make_frame_inputs,
    make_inputs,
    verify_runtime,
)

__all__ = ["Calibration", "ExportSpec", "Exported", "Job", "Runtime", "register", "runtimes", "get", "export"]
__all__ += ["versions", "per_sample"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Calibration:
    """int8 post-training calibration: ``count`` real images of ``images`` (``"auto"``: the package's sample
    photos) at ``size`` (default: the first export size)."""

    images: Any = "auto"
    count: int = 64
    size: Optional[Tuple[int, int]] = None


@dataclass
class ExportSpec:
    """The settings of one export, defaults in one place (every runtime reads the fields it uses).

    ``images``: ``"auto"`` (the package's sample photos), ``None``/``"none"`` (random inputs only), a folder or
    a list of files; ``n_real`` real images per size. ``atol``/``rtol``: the bound ``atol + rtol x max|eager|``
    (default the float bound, the int8 one with ``int8``). ``name``: the file stem (default the model name).
    ``rewrite``: the runtime's fastest equivalent form of a ShuffleNet (:mod:`.rewrite`). ``camera``: uint8
    NHWC frames in, normalization folded in. ``memory_format``: the layout the file computes in / takes
    (``None``: the runtime's choice). ``method`` and ``bytecode_version``: TorchScript conversion and bytecode
    backport (``.ptl``). ``int8``: a :class:`Calibration` for int8 post-training quantization."""

    sizes: Sequence[Tuple[int, int]] = ((224, 224),)
    images: Any = "auto"
    n_real: int = 2
    atol: Optional[float] = None
    rtol: Optional[float] = None
    name: Optional[str] = None
    rewrite: bool = True
    camera: bool = False
    memory_format: Optional[str] = None
    method: str = "auto"
    bytecode_version: Optional[int] = None
    int8: Optional[Calibration] = None
    log: Log = print

    def bounds(self) -> Tuple[float, float]:
        atol = self.atol if self.atol is not None else (INT8_ATOL if self.int8 else DEFAULT_ATOL)
        rtol = self.rtol if self.rtol is not None else (INT8_RTOL if self.int8 else DEFAULT_RTOL)
        return atol, rtol


class Exported(NamedTuple):
    """What :func:`export` wrote: ``files`` in the runtime's shape (one path, ``{(H, W): path}`` for one file
    per size, or ``{"param": ..., "bin": ...}``) and the sidecar."""

    files: Any
    sidecar: Dict[str, Any]


@dataclass
class Job:
    """One export's shared state: the model, the resolved settings, the eager reference and the inputs."""

    source: ModelSource
    spec: ExportSpec
    sizes: List[Tuple[int, int]]
    images: Optional[List[Path]]
    stem: str
    reference: Callable[[Tensor], Any]
    inputs: List[VerifyInput]
    form: Optional[Any] = None  #: what to convert instead of the model (the detector's traced module)
    extra: Dict[str, Any] = field(default_factory=dict)  #: runtime-specific extras (the detector's output names)

    @property
    def log(self) -> Log:
        return self.spec.log

    @property
    def bounds(self) -> Tuple[float, float]:
        return self.spec.bounds()

    def verify(self, run: Callable[[Tensor], Any], label: str, reference=None, inputs=None) -> List[Dict[str, Any]]:
        """The runtime's file (``run``) against the eager reference on every input, one line each; raises on the
        first miss."""
        inputs = self.inputs if inputs is None else inputs
        rows = verify_runtime(reference or self.reference, run, inputs, *self.bounds, runtime=label)
        for r in rows:
            self.log(
                f"[verify] {label}: {r['size'][0]}x{r['size'][1]} {r['input']:<18} batch {r['batch']} "
                f"max|diff| {r['max_abs_diff']:.2e} <= bound {r['bound']:.2e}  ok"
            )
        return rows

    def verify_fidelity(self, run: Callable[[Tensor], Any], quantization: Dict[str, Any], label: str) -> List[Dict]:
        """An int8 file against the *fp32* model on real photos (the real inputs; with none, two calibration
        images at each size): ``max|int8 - fp32| <= INT8_ATOL + INT8_FIDELITY_RTOL x max|fp32|``, the top-1
        agreement recorded. Refuses a degenerate calibration (one whose ranges do not cover real inputs), which
        a check against the file's own int8 reference cannot see. ``quantization["calibration"]`` names it."""
        real = [i for i in self.inputs if i.label.startswith("real")]
        calib = quantization.get("calibration", {})
        if not real:
            photos = list_images(calib["dir"])[:2]
            sizes = list(dict.fromkeys(i.size for i in self.inputs))
            real = [
                VerifyInput(f"calibration ({len(photos)} images)", i.size, i.tensor)
                for i in make_inputs(sizes, photos, len(photos), mean=self.source.mean, std=self.source.std)
                if i.label.startswith("real")
            ]
        rows = []
        for inp in real:
            with torch.no_grad():
                ref, got = self.reference(inp.tensor.clone()), run(inp.tensor.clone())
            res = compare_outputs(ref, got, INT8_ATOL, INT8_FIDELITY_RTOL)
            agree = float((flatten_outputs(ref)[0].argmax(1) == flatten_outputs(got)[0].argmax(1)).float().mean())
            rows.append({"input": inp.label, "size": list(inp.size), "batch": int(inp.tensor.shape[0]), **res})
            rows[-1]["top1_agree"] = agree
            where = f"{inp.label} input at {inp.size[0]}x{inp.size[1]}"
            if not res["ok"]:
                why = res.get("why") or (
                    f"max |fp32 - int8| = {res['max_abs_diff']:.3g} exceeds the bound {res['bound']:.3g} "
                    f"(atol {INT8_ATOL:g} + rtol {INT8_FIDELITY_RTOL:g} x max|fp32| {res['max_abs_ref']:.3g})"
                )
                raise VerificationError(
                    f"int8 check against the fp32 model failed on the {where} through the {label}: {why}; the "
                    f"calibration ({calib.get('dir')}, {calib.get('images')} images) does not cover such inputs: "
                    "calibrate on images like the deployment's (--calib-images DIR --calib-count N); "
                    "no file was written"
                )
            self.log(
                f"[verify] {label} vs fp32: {inp.size[0]}x{inp.size[1]} {inp.label:<18} max|diff| "
                f"{res['max_abs_diff']:.2e} <= bound {res['bound']:.2e}, top-1 agreement {agree:.0%}  ok"
            )
        return rows

    def quantizer(self, factory: Callable[..., Any]) -> Any:
        """``factory(source, images, count, size)`` for ``spec.int8`` (None for an fp32 export)."""
        c = self.spec.int8
        return factory(self.source, c.images, c.count, c.size or self.sizes[0]) if c else None

    def outputs(self, reference=None, example: Optional[Tensor] = None) -> List[List[int]]:
        with torch.no_grad():
            out = (reference or self.reference)(self.inputs[0].tensor if example is None else example)
        return [list(t.shape) for t in flatten_outputs(out)]

    def input(self, shape: str, **extra: Any) -> Dict[str, Any]:
        """The sidecar's ``input`` block: verified sizes, shape, dtype and normalization (camera frames folded)."""
        src = self.source
        out = {"sizes_hw_verified": [list(s) for s in self.sizes], "shape": shape, "dtype": "float32"}
        out.update(normalization=src.normalization, **extra)
        if self.spec.camera:
            folded = {"color": "RGB", "scale": "0-255 uint8 pixels; mean/std folded into the stem"}
            out.update(dtype="uint8", normalization={**folded, "mean": list(src.mean), "std": list(src.std)})
        return out

    def sidecar(self, rt: Runtime, input: Dict[str, Any], outputs, checks, rewritten: bool, **fields: Any):
        """The JSON sidecar every exported file carries (``fields``: the runtime's own entries)."""
        atol, rtol = self.bounds
        src = self.source
        return {
            "format": "shufflenet-mobile/1",
            "runtime": rt.title,
            "model": src.name,
            "task": src.task,
            "source": src.origin,
            **fields,
            "input": input,
            "outputs": outputs,
            "rewrite": "runtime-specific equivalent form (shufflenet.mobile.rewrite)" if rewritten else None,
            "verification": {"atol": atol, "rtol": rtol, **images_note(self.images), "checks": checks},
            "exported_with": {
                "torch": torch.__version__,
                **versions(*rt.packages),
                "python": platform.python_version(),
                "arch": platform.machine(),
            },
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **({"extra": src.extra} if src.extra else {}),
        }


class Runtime:
    """One mobile runtime. A subclass defines the class attributes below, :meth:`missing`, :meth:`write` and
    :meth:`load`; optionally :meth:`refuse`, :meth:`kernels` and :meth:`prepare_source`."""

    name: str = ""  #: the --format / --runtimes value
    title: str = ""  #: the sidecar's "runtime"
    label: str = ""  #: how the [verify] lines name it
    suffix: str = ""  #: the sidecar is <stem><suffix>.json
    packages: Tuple[str, ...] = ()  #: distributions whose versions the sidecar records
    summary: str = ""  #: a few words for --format's help
    layout: str = "nhwc"  #: the tensor the benchmark times ("nhwc": channels_last view, "nchw")
    int8: str = ""  #: the int8 scheme in a few words ("": no int8)
    int8_reference: str = ""  #: what an int8 file is verified against
    int8_fidelity: bool = False  #: int8 checked against the fp32 model (the fidelity bound), not its own reference
    detector: bool = False
    camera: bool = True
    shuffle: str = "native"  #: how the detector's trace writes the channel shuffle for it ("reshape": no op)
    options: Tuple[str, ...] = ()  #: ExportSpec fields only this runtime takes (e.g. bytecode_version)
    extra: str = ""  #: the package extra that installs ``packages`` (each importable under its own name)

    def missing(self, spec: Optional[ExportSpec] = None) -> Optional[str]:
        """Why this runtime cannot run here (for ``spec``, when given): one line naming what to install, or None.
        Imports lazily (by default: whether ``packages`` import, named by ``extra``)."""
        gone = []
        for mod in self.packages if self.extra else ():
            try:
                __import__(mod)
            except ImportError:
                gone.append(mod)
        if gone:
            return (
                f"--format {self.name} needs {' and '.join(gone)} (optional, not installed): "
                f'pip install "shufflenet[{self.extra}]" ({", ".join(self.packages)})'
            )
        return None

    def require(self, spec: Optional[ExportSpec] = None) -> None:
        why = self.missing(spec)
        if why:
            raise RuntimeUnavailableError(why)

    def refuse(self, spec: ExportSpec, task: str = "classification") -> Optional[str]:
        """Why ``spec`` is not a valid combination for this runtime (checked before :meth:`missing`), or None."""
        if spec.int8 and spec.camera:
            return "--camera-input is for fp32 exports (not with --quantize int8)"
        if spec.int8 and not self.int8:
            return f"--format {self.name} has no --quantize int8"
        if spec.camera and not self.camera:
            return f"--format {self.name} takes no --camera-input"
        if task == "detection" and (not self.detector or spec.int8 or spec.camera):
            return f"--format {self.name} does not export this detector (fp32, no --camera-input)"
        return None

    def prepare_source(self, source: ModelSource, spec: ExportSpec) -> ModelSource:
        """The model the file must reproduce (int8 that converts the model itself replaces it here)."""
        return source

    def write(self, job: Job, staged: Staged, work: Path) -> Tuple[Any, Dict[str, Any]]:
        raise NotImplementedError

    def load(self, files: Any, sidecar: Dict[str, Any], threads: Optional[int] = 1) -> Callable[[Tensor], Any]:
        raise NotImplementedError

    def kernels(self) -> Dict[str, Any]:
        return {"kernels": "not reported"}


_REGISTRY: Dict[str, Runtime] = {}
#: The runtime modules of the package, imported on first use of the registry (each registers its runtime).
BUILTIN = ("ptl", "pte", "onnx_export", "ncnn_export", "tflite_export")


def register(rt: Runtime) -> Runtime:
    _REGISTRY[rt.name] = rt
    return rt


def runtimes() -> Dict[str, Runtime]:
    """Every registered runtime by name, in registration order."""
    for mod in BUILTIN:
        importlib.import_module(f"{__package__}.{mod}")
    return dict(_REGISTRY)


def get(name: Any) -> Runtime:
    if isinstance(name, Runtime):
        return name
    known = runtimes()
    if name not in known:
        raise MobileError(f"unknown runtime {name!r}; one of: {', '.join(known)}")
    return known[name]


def versions(*packages: str) -> Dict[str, Optional[str]]:
    """Installed versions of ``packages`` (None for one that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: Dict[str, Optional[str]] = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def per_sample(fn: Callable[[Tensor], Any]) -> Callable[[Tensor], Any]:
    """Run a batch-1 program over a batch, one sample at a time, and concatenate the outputs."""

    def run(x: Tensor) -> Any:
        outs = [fn(x[i : i + 1]) for i in range(x.shape[0])]
        outs = [tuple(o) if isinstance(o, (list, tuple)) else (o,) for o in outs]
        cat = tuple(torch.cat([o[j] for o in outs]) for j in range(len(outs[0])))
        return cat[0] if len(cat) == 1 else cat

    return run


def invalid(rt: Runtime, spec: ExportSpec, task: str = "classification") -> Optional[str]:
    """Why ``spec`` is not a valid combination for ``rt`` (arguments only: nothing is imported), or None."""
    why = rt.refuse(spec, task)
    if why:
        return why
    for opt in ("bytecode_version",):
        if getattr(spec, opt) is not None and opt not in rt.options:
            owners = [r.name for r in runtimes().values() if opt in r.options]
            return (
                f"--{opt.replace('_', '-')} applies to .{'/.'.join(owners)} files only "
                f"(give --format {' '.join(owners)} alone)"
            )
    return None


def check(rts: Sequence[Runtime], spec: ExportSpec, task: str = "classification") -> None:
    """Arguments first for every runtime (the same answer with or without them installed), then the installs."""
    for rt in rts:
        why = invalid(rt, spec, task)
        if why:
            raise MobileError(why)
    for rt in rts:
        rt.require(spec)


def prepare(source: ModelSource, spec: ExportSpec) -> Job:
    """Sizes, images, stem, eager reference and verification inputs (camera frames with ``spec.camera``)."""
    sizes = [(int(s[0]), int(s[1])) for s in spec.sizes]
    if not sizes:
        raise MobileError("at least one --input-size is needed")
    images = list(spec.images) if isinstance(spec.images, (list, tuple)) else resolve_images(spec.images)
    stem = spec.name or source.name.replace("/", "_")
    model = source.model.eval()
    if spec.camera:
        ref, inputs = frame_reference(model, source.mean, source.std), make_frame_inputs(sizes, images, spec.n_real)
    else:
        ref, inputs = model, make_inputs(sizes, images, spec.n_real, mean=source.mean, std=source.std)
    return Job(source, spec, sizes, images, stem, ref, inputs)


def export(
    runtime: Any,
    source: ModelSource,
    out_dir: os.PathLike,
    spec: Optional[ExportSpec] = None,
    job: Optional[Job] = None,
) -> Exported:
    """Export ``source`` through ``runtime`` (a name or a :class:`Runtime`) into ``out_dir``: verified, atomic.

    Raises :class:`~.verify.VerificationError` (nothing written) when the runtime's outputs differ from the
    eager model's beyond the bound; :class:`~.source.RuntimeUnavailableError` when it is not installed."""
    rt = get(runtime)
    spec = spec or ExportSpec()
    check([rt], spec, source.task)
    source = rt.prepare_source(source, spec)
    if job is None:
        job = prepare(source, spec)
    with Staged(out_dir) as staged, tempfile.TemporaryDirectory(prefix=f"{rt.name}-export-") as work:
        files, side = rt.write(job, staged, Path(work))
        staged.commit(side, f"{job.stem}{rt.suffix}.json", spec.log)
    return Exported(files, side)
