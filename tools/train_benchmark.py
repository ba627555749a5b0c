"""``python -m tools.train_benchmark``: training throughput of ShuffleNet v1 vs ShuffleNetV2, and the data pipeline.

1. **Training** images/s of ShuffleNet v1 1x (g=3, this project) and torchvision's ShuffleNetV2 1x under one
   loop: batch 32 at 224x224, cross-entropy, SGD momentum 0.9 (forward + backward + update), random tensors
   (the model alone), one intra-op thread by default. Every *variant* is timed: ``fp32``/``bf16``
   (``torch.autocast('cpu', bfloat16)``, what Lightning's ``precision='bf16-mixed'`` does), ``nchw``/
   ``channels_last`` (model and input in NHWC), ``eager``/``compiled`` (``torch.compile``, inductor).
   The rounds are **interleaved** (round r runs ``--steps`` steps of every variant, in a rotated order), so a
   change of machine load hits all variants alike; the figure per variant is the median over rounds.
   *images/s per core* = batch / CPU seconds of this process (``time.process_time``: a shared machine's
   other jobs do not count, ``--threads`` threads do); wall-clock images/s is reported beside it.
2. **Same function**: all variants start from the same weights and batch; the losses of their two warm-up
   steps (the second one after an SGD update, so it checks the gradients too) are compared with eager fp32 NCHW.
3. **Data pipeline** (kept up with training?): the real training transform (:func:`train_transform`:
   PIL decode, RandomResizedCrop 224, flip, to-tensor, normalize) over JPEGs: decode and augment images per
   CPU second in one process (= per DataLoader worker, which runs one torch thread), and the
   :class:`ImageFolderDataModule` loader's wall-clock images/s with ``--workers`` workers. JPEG source:
   ``photos`` (the package's sample photos, ~480x320) or an ImageFolder directory (``train/<class>/<image>``,
   e.g. the repository's ``tests/data/cifar10``), used as it is or, with ``--jpeg-size N``, its first
   ``--images`` training images per class re-encoded at NxN (CIFAR's 32 px JPEGs are not an ImageNet load).
4. ``--profile``: where one training step spends its CPU time (torch.profiler, by layer type: grouped 1x1,
   dense 1x1, depthwise 3x3, BatchNorm, ReLU, shuffle/copy/concat, pooling; forward and backward).

Results: JSON (``--out``, atomic), a table on stdout, a bar chart (``--png``). ``--quick``: tiny models at
64x64, a few seconds plus one small compile (the CI check of structure and equivalence).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from shufflenet.classification import ImageFolderDataModule, ImageFolderDataset, load_rgb, train_transform
from shufflenet.errors import ShuffleNetError, run_cli
from shufflenet.fileio import atomic_write, write_json_atomic
from shufflenet.models import create_model
from shufflenet.paths import sample_images

__all__ = [
    "Variant",
    "TrainRunner",
    "benchmark_training",
    "profile_step",
    "data_pipeline",
    "make_jpegs",
    "format_table",
    "build_parser",
    "main",
    "cli",
]

PRECISIONS = ("fp32", "bf16", "bf16dw")
LAYOUTS = ("nchw", "channels_last")
MODES = ("eager", "compiled")

#: Tolerances of each variant against eager fp32 NCHW (same weights, same batch): relative difference of the
#: first step's loss (the forward pass), and of the loss change over the first SGD update (the gradients; a lost
#: or wrong update differs by ~100 %). bf16 rounds each loss by ~0.1 % while one update at lr 0.01 moves the loss
#: by only ~1-2 %, so the bf16 change agrees to ~10 % (ShuffleNetV2 1x at 224: 8-11 %), not better.
LOSS_RTOL = {"fp32": 1e-4, "bf16": 1e-2, "bf16dw": 1e-2}
UPDATE_RTOL = {"fp32": 2e-2, "bf16": 0.25, "bf16dw": 0.25}


class Fp32Conv2d(nn.Conv2d):
    """A ``Conv2d`` that runs in fp32 under autocast (same parameters and state-dict keys): the ``bf16dw`` policy
    puts every depthwise conv in it, because oneDNN's bf16 depthwise backward was ~4-6x slower than its fp32 one
    on the CPU profiled in docs/classification.md."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> Fp32Conv2d:
        """A new module with ``conv``'s hyper-parameters and a copy of its weights."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        new.load_state_dict(conv.state_dict())
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def depthwise_in_fp32(model: nn.Module) -> int:
    """Replace every depthwise ``nn.Conv2d`` of ``model`` by an :class:`Fp32Conv2d` copy (the way timm's
    ``freeze_batch_norm_2d`` replaces layers: new modules set on their parents, the same state-dict keys);
    returns how many were replaced."""
    names = [
        name
        for name, m in model.named_modules()
        if type(m) is nn.Conv2d and m.groups > 1 and m.groups == m.in_channels == m.out_channels
    ]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, Fp32Conv2d.from_conv(getattr(owner, child)))
    return len(names)


class BenchmarkError(ShuffleNetError, ValueError):
    """Bad benchmark input (an unknown variant, a missing image source, a machine that lacks the feature)."""


# --- models ---------------------------------------------------------------------------------------------
def _v2(width: str, quick: bool) -> nn.Module:
    import torchvision

    if quick:  # ShuffleNetV2 0.5x widths with one unit per stage (torchvision's own class)
        return torchvision.models.ShuffleNetV2([1, 1, 1], [24, 48, 96, 192, 1024], num_classes=1000)
    return getattr(torchvision.models, f"shufflenet_v2_{width}")(weights=None)


def model_builders(quick: bool = False) -> Dict[str, Tuple[str, Callable[[], nn.Module]]]:
    """``{short name: (description, builder)}`` of the two models compared."""
    if quick:
        return {
            "v1": (
                "ShuffleNet v1 0.5x g3, 1 unit/stage (quick)",
                lambda: create_model("shufflenet_v1_x0_5_g3", stage_repeats=(1, 1, 1)),
            ),
            "v2": ("torchvision ShuffleNetV2 0.5x, 1 unit/stage (quick)", lambda: _v2("x0_5", True)),
        }
    return {
        "v1": ("ShuffleNet v1 1x (g=3), shufflenet_v1_x1_0_g3", lambda: create_model("shufflenet_v1_x1_0_g3")),
        "v2": ("torchvision ShuffleNetV2 1x, shufflenet_v2_x1_0", lambda: _v2("x1_0", False)),
    }


@dataclass(frozen=True)
class Variant:
    model: str  # "v1" | "v2"
    precision: str  # "fp32" | "bf16" | "bf16dw" (bf16 autocast, depthwise convs in fp32)
    layout: str  # "nchw" | "channels_last"
    mode: str  # "eager" | "compiled"

    @property
    def key(self) -> str:
        return f"{self.model}/{self.setting}"

    @property
    def setting(self) -> str:
        return f"{self.precision}/{self.layout}/{self.mode}"


class TrainRunner:
    """One variant's model, optimizer and fixed batch; :meth:`step` = one SGD training step (returns the loss)."""

    def __init__(
        self,
        variant: Variant,
        build: Callable[[], nn.Module],
        batch_size: int,
        size: int,
        device: str = "cpu",
        lr: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.variant = variant
        self.device = torch.device(device)
        torch.manual_seed(seed)  # same initial weights for every variant of a model
        model = build().to(self.device).train()
        if variant.precision == "bf16dw":
            depthwise_in_fp32(model)
        g = torch.Generator().manual_seed(seed + 1)  # same batch for every variant
        x = torch.randn(batch_size, 3, size, size, generator=g).to(self.device)
        self.y = torch.randint(0, 1000, (batch_size,), generator=g).to(self.device)
        if variant.layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.x = x
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        if variant.mode == "compiled":
            model.compile()  # in place, as ImageClassifier(compile_model=True) does
        self.batch_size = batch_size

    def step(self) -> float:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.variant.precision != "fp32"):
            loss = F.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Linux
        return float("nan")


def variants_for(
    models: Sequence[str],
    precisions: Sequence[str],
    layouts: Sequence[str],
    modes: Sequence[str],
    compiled_layouts: Sequence[str],
    compiled_precisions: Sequence[str] = PRECISIONS,
) -> List[Variant]:
    out = []
    for precision, mode in itertools.product(precisions, modes):
        if mode == "compiled" and precision not in compiled_precisions:
            continue
        for layout in layouts if mode == "eager" else compiled_layouts:
            for m in models:
                out.append(Variant(m, precision, layout, mode))
    return out


def benchmark_training(
    variants: Sequence[Variant],
    builders: Dict[str, Tuple[str, Callable[[], nn.Module]]],
    batch_size: int,
    size: int,
    rounds: int,
    steps: int,
    device: str = "cpu",
    log: Callable[[str], None] = lambda s: None,
    runners: Optional[Dict[str, TrainRunner]] = None,
) -> Dict[str, Any]:
    """Interleaved timing of ``variants``: returns ``{"variants": {key: result}, "ratios_v1_over_v2", "best",
    "rounds"}``; the warm runners are left in ``runners`` (a dict) if given."""
    runners = {} if runners is None else runners
    results: Dict[str, Dict[str, Any]] = {}
    for v in variants:
        runner = TrainRunner(v, builders[v.model][1], batch_size, size, device)
        t0 = time.perf_counter()
        losses = [runner.step(), runner.step()]  # warm-up: compiles, allocator; the equivalence check's losses
        runner.sync()
        warm = time.perf_counter() - t0
        runners[v.key] = runner
        results[v.key] = {
            **asdict(v),
            "description": builders[v.model][0],
            "warmup_losses": losses,
            "warmup_s": warm,
            "cpu_s": [],
            "wall_s": [],
        }
        log(f"  warm-up {v.key}: {warm:.1f} s, losses {losses[0]:.5f} {losses[1]:.5f}")
    round_info = []
    keys = list(runners)
    for r in range(rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]  # rotate: no variant always runs first
        load0 = _load()
        for key in order:
            runner = runners[key]
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(steps):
                runner.step()
            runner.sync()
            results[key]["cpu_s"].append((time.process_time() - c0) / steps)
            results[key]["wall_s"].append((time.perf_counter() - w0) / steps)
        round_info.append({"load_start": load0, "load_end": _load()})
        log(f"  round {r + 1}/{rounds} done (load {load0:.1f} -> {round_info[-1]['load_end']:.1f})")
    for res in results.values():
        cpu, wall = statistics.median(res["cpu_s"]), statistics.median(res["wall_s"])
        res["images_per_s_per_core"] = batch_size / cpu
        res["images_per_s_wall"] = batch_size / wall
        res["median_step_cpu_s"], res["median_step_wall_s"] = cpu, wall
    judge_equivalence(results)
    ratios: Dict[str, float] = {}
    settings = sorted(
        {Variant(**{k: r[k] for k in ("model", "precision", "layout", "mode")}).setting for r in results.values()},
        key=lambda s: [i for i, v in enumerate(variants) if v.setting == s][0],
    )
    for s in settings:
        a, b = results.get(f"v1/{s}"), results.get(f"v2/{s}")
        if a and b:
            ratios[s] = a["images_per_s_per_core"] / b["images_per_s_per_core"]
    best = {}
    for m in ("v1", "v2"):
        mine = [r for r in results.values() if r["model"] == m]
        if mine:
            top = max(mine, key=lambda r: r["images_per_s_per_core"])
            best[m] = {
                "setting": f"{top['precision']}/{top['layout']}/{top['mode']}",
                "images_per_s_per_core": top["images_per_s_per_core"],
            }
    if "v1" in best and "v2" in best:
        best["ratio_v1_over_v2"] = best["v1"]["images_per_s_per_core"] / best["v2"]["images_per_s_per_core"]
    return {"variants": results, "ratios_v1_over_v2": ratios, "best": best, "rounds": round_info}


def judge_equivalence(results: Dict[str, Dict[str, Any]]) -> None:
    """Compare every variant's two warm-up losses with eager fp32 NCHW of the same model (adds the verdicts)."""
    for res in results.values():
        ref = results.get(f"{res['model']}/fp32/nchw/eager")
        if ref is None:
            continue
        (a1, a2), (b1, b2) = res["warmup_losses"], ref["warmup_losses"]
        res["loss_rel_diff_vs_eager_fp32"] = abs(a1 - b1) / max(abs(b1), 1e-12)
        res["update_rel_diff_vs_eager_fp32"] = abs((a2 - a1) - (b2 - b1)) / max(abs(b2 - b1), 1e-12)
        res["tolerances"] = {"loss": LOSS_RTOL[res["precision"]], "update": UPDATE_RTOL[res["precision"]]}
        res["same_loss"] = (
            res["loss_rel_diff_vs_eager_fp32"] <= LOSS_RTOL[res["precision"]]
            and res["update_rel_diff_vs_eager_fp32"] <= UPDATE_RTOL[res["precision"]]
        )


# --- profile ----------------------------------------------------------------------------------------------
def _layer_type(name: str, shapes: Sequence[Sequence[int]]) -> str:
    if "convolution" in name and shapes:
        bwd = "backward" in name
        x, w = (shapes[1], shapes[2]) if bwd else (shapes[0], shapes[1])
        if len(w) == 4 and len(x) == 4:
            if w[1] == 1 and w[2] > 1:
                kind = "depthwise 3x3 conv"
            elif w[2] == 1 and w[1] != x[1]:
                kind = "grouped 1x1 conv"
            elif w[2] == 1:
                kind = "dense 1x1 conv"
            else:
                kind = "stem 3x3 conv"
            return f"{kind} {'bwd' if bwd else 'fwd'}"
    if "batch_norm" in name:
        return f"BatchNorm {'bwd' if 'backward' in name else 'fwd'}"
    if name in ("aten::threshold_backward", "aten::clamp_min_", "aten::clamp_min", "aten::relu_", "aten::relu"):
        return "ReLU fwd+bwd"
    if "channel_shuffle" in name or name in ("aten::copy_", "aten::cat", "aten::clone", "aten::_to_copy"):
        return "shuffle/copy/concat"
    if "cpp_fused" in name or "kernel_" in name or "Compiled" in name or "compiled" in name:
        return "inductor kernels/compiled region"
    if "pool" in name:
        return "pooling fwd+bwd"
    if name in ("aten::add", "aten::add_", "aten::fill_", "aten::zero_", "aten::mul_", "aten::mul"):
        return "add/fill/optimizer elementwise"
    return "other"


def profile_step(runner: TrainRunner, steps: int = 1) -> Dict[str, float]:
    """Self CPU ms per training step of ``runner``, by layer type (torch.profiler, shapes recorded)."""
    from torch.profiler import ProfilerActivity, profile

    runner.step()
    runner.sync()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            runner.step()
    out: Dict[str, float] = collections.Counter()
    for ev in prof.key_averages(group_by_input_shape=True):
        out[_layer_type(ev.key, ev.input_shapes or [])] += ev.self_cpu_time_total / 1e3 / steps
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# --- data pipeline ----------------------------------------------------------------------------------------
def make_jpegs(out: Path, source: str, per_class: int, size: Optional[int]) -> Tuple[Path, str]:
    """An ImageFolder (``train/<class>/*``, one ``val`` image per class) to feed the loader; ``(root, description)``.

    ``photos``: the package's sample photos, one class each, ``per_class`` copies (real JPEGs, ~480x320).
    A directory with ``train/<class>/<image>``: used as it is, or with ``size``, its first ``per_class`` training
    images per class (sorted by name) re-encoded as ``size`` x ``size`` JPEG q90 (bicubic) under ``out``.
    """
    from PIL import Image

    if source == "photos":
        photos = sample_images()
        if not photos:
            raise BenchmarkError("no package sample photos found (shufflenet/resources/images)")
        for p in photos:
            d = out / "train" / p.stem
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shutil.copyfile(p, d / f"{i}{p.suffix}")
            (out / "val" / p.stem).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out / "val" / p.stem / f"0{p.suffix}")
        sizes = sorted({Image.open(p).size for p in photos})
        return (
            out,
            f"{len(photos)} package sample photos x {per_class} copies ({sizes[0][0]}-{sizes[-1][0]} x "
            f"{sizes[0][1]}-{sizes[-1][1]} px JPEG)",
        )
    root = Path(source)
    if not (root / "train").is_dir():
        raise BenchmarkError(f"--sources {source}: expected 'photos' or a folder with train/<class>/<image>")
    if size is None:
        return root, f"ImageFolder {root}"
    src = root / "train"
    for cls in sorted(p.name for p in src.iterdir() if p.is_dir()):
        files = sorted((src / cls).iterdir())
        for split, chosen in (("train", files[:per_class]), ("val", files[per_class : per_class + 1] or files[:1])):
            d = out / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                with Image.open(f) as im:
                    im.convert("RGB").resize((size, size), Image.BICUBIC).save(d / f"{f.stem}.JPEG", quality=90)
    return out, f"{root.name} train images ({per_class}/class) re-encoded at {size}x{size} JPEG q90"


def decode_augment_rate(root: Path, size: int, images: int) -> Dict[str, float]:
    """Images per CPU second of one process with one torch thread (a DataLoader worker): decode, augment, both."""
    ds = ImageFolderDataset(root / "train", transform=None)
    tf = train_transform(size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = min(images, len(ds.samples)) if images > 0 else len(ds.samples)
        decode = augment = 0.0
        torch.manual_seed(0)
        for i in range(n):
            path = ds.samples[i * len(ds.samples) // n][0]
            c0 = time.process_time()
            img = load_rgb(path)
            c1 = time.process_time()
            tf(img)
            c2 = time.process_time()
            decode += c1 - c0
            augment += c2 - c1
    finally:
        torch.set_num_threads(threads)
    return {
        "images": n,
        "decode_per_s": n / max(decode, 1e-9),
        "augment_per_s": n / max(augment, 1e-9),
        "decode_augment_per_s_per_worker": n / max(decode + augment, 1e-9),
    }


def loader_throughput(
    root: Path, workers: int, batch_size: int = 32, size: int = 224, batches: int = 20
) -> Dict[str, float]:
    """Wall-clock images/s of the training DataLoader (:class:`ImageFolderDataModule`) with ``workers`` workers."""
    dm = ImageFolderDataModule(
        str(root),
        batch_size=batch_size,
        num_workers=workers,
        image_size=size,
        resize_size=max(size, 256),
        persistent_workers=False,
        pin_memory=False,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    try:
        next(it)  # worker start-up is not throughput
        n, t0 = 0, time.perf_counter()
        for _ in range(batches):
            try:
                x = next(it)[0]
            except StopIteration:
                it = iter(loader)
                x = next(it)[0]
            n += x.shape[0]
        dt = time.perf_counter() - t0
    finally:  # stop the workers now: an unfinished iterator left them running until exit (one run hung there)
        it.close()  # a generator over the DataLoader's iterator: closing it drops (and so stops) that iterator
    return {"images_per_s_wall": n / dt, "images": n, "workers": workers, "batch_size": batch_size}


def data_pipeline(
    sources: Sequence[str],
    workers: Sequence[int],
    per_class: int,
    jpeg_size: Optional[int],
    size: int,
    batch_size: int,
    log: Callable[[str], None] = lambda s: None,
) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in sources:
            root, desc = make_jpegs(Path(tmp) / source.replace(os.sep, "_"), source, per_class, jpeg_size)
            log(f"data: {desc}")
            res: Dict[str, Any] = {"description": desc, **decode_augment_rate(root, size, images=0)}
            n_images = sum(1 for _ in (root / "train").glob("*/*"))
            for w in workers:
                res[f"loader_workers={w}"] = loader_throughput(
                    root, w, batch_size, size, batches=max(2, min(20, n_images // batch_size - 1))
                )
            out[source if source == "photos" else Path(source).name] = res
    return out


# --- report -------------------------------------------------------------------------------------------------
def format_table(result: Dict[str, Any]) -> str:
    train = result["train"]
    lines = []
    loads = [x for r in train["rounds"] for x in (r["load_start"], r["load_end"])]
    cfg = result["config"]
    lines.append(
        f"training: batch {cfg['batch_size']} at {cfg['size']}x{cfg['size']}, {cfg['threads']} thread(s), "
        f"median of {cfg['rounds']} interleaved rounds x {cfg['steps']} step(s); load (1-min avg) during the "
        f"rounds {min(loads):.1f}-{max(loads):.1f} on {result['machine']['cpus']} CPUs"
    )
    lines.append("")
    lines.append(
        "| setting (precision/layout/mode) | v1 img/s/core | v2 img/s/core | v1/v2 | v1 wall img/s | "
        "v2 wall img/s | loss/update rel. diff vs eager fp32 (v1, v2) |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    settings = list(dict.fromkeys(k.split("/", 1)[1] for k in train["variants"]))
    for setting in settings:
        a, b = train["variants"].get(f"v1/{setting}"), train["variants"].get(f"v2/{setting}")
        ratio = train["ratios_v1_over_v2"].get(setting)

        def eq(r: Optional[Dict[str, Any]], setting: str = setting) -> str:
            if r is None:
                return "-"
            d, u = r.get("loss_rel_diff_vs_eager_fp32"), r.get("update_rel_diff_vs_eager_fp32")
            return (
                "ref"
                if setting == "fp32/nchw/eager"
                else ("?" if d is None else f"{d:.0e}/{u:.0e} {'ok' if r['same_loss'] else 'DIFFERS'}")
            )

        def num(r: Optional[Dict[str, Any]], key: str) -> str:
            return "-" if r is None else f"{r[key]:.1f}"

        lines.append(
            f"| {setting} | {num(a, 'images_per_s_per_core')} | {num(b, 'images_per_s_per_core')} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} | {num(a, 'images_per_s_wall')} | "
            f"{num(b, 'images_per_s_wall')} | {eq(a)}, {eq(b)} |"
        )
    best = train["best"]
    if "ratio_v1_over_v2" in best:
        lines.append("")
        lines.append(
            f"fastest v1: {best['v1']['setting']} {best['v1']['images_per_s_per_core']:.1f} img/s/core; "
            f"fastest v2: {best['v2']['setting']} {best['v2']['images_per_s_per_core']:.1f}; "
            f"ratio {best['ratio_v1_over_v2']:.2f}"
        )
    compiled = [r for r in train["variants"].values() if r["mode"] == "compiled"]
    if compiled:
        lines.append(
            "compile + 2 warm-up steps (wall s): "
            + ", ".join(f"{r['model']}/{r['precision']}/{r['layout']} {r['warmup_s']:.0f}" for r in compiled)
        )
    if result.get("profile"):
        lines.append("")
        names = list(result["profile"])
        cats = sorted(
            {c for p in result["profile"].values() for c in p},
            key=lambda c: -max(p.get(c, 0.0) for p in result["profile"].values()),
        )
        lines.append("| self CPU ms per step (torch.profiler) | " + " | ".join(names) + " |")
        lines.append("|---|" + "---:|" * len(names))
        for c in cats:
            lines.append(f"| {c} | " + " | ".join(f"{result['profile'][n].get(c, 0.0):.0f}" for n in names) + " |")
        lines.append("| total | " + " | ".join(f"{sum(result['profile'][n].values()):.0f}" for n in names) + " |")
    if result.get("data"):
        lines.append("")
        fastest = max(r["images_per_s_per_core"] for r in train["variants"].values())
        lines.append(
            "| data pipeline (train transform, RandomResizedCrop) | decode/s | augment/s | "
            "decode+augment img/s per worker | workers per training core |"
        )
        lines.append("|---|---:|---:|---:|---:|")
        for r in result["data"].values():
            lines.append(
                f"| {r['description']} | {r['decode_per_s']:.0f} | {r['augment_per_s']:.0f} | "
                f"{r['decode_augment_per_s_per_worker']:.0f} | "
                f"{fastest / r['decode_augment_per_s_per_worker']:.2f} |"
            )
        for src, r in result["data"].items():
            for k, v in r.items():
                if k.startswith("loader_workers="):
                    lines.append(
                        f"  loader ({src}, {k.split('=')[1]} workers, wall clock): "
                        f"{v['images_per_s_wall']:.0f} images/s"
                    )
        lines.append(
            f"  ('workers per training core' = fastest training variant's {fastest:.1f} img/s/core / "
            f"one worker's decode+augment rate)"
        )
    return "\n".join(lines)


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = result["train"]
    settings = list(train["ratios_v1_over_v2"])
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(settings) + 2), 4))
    w = 0.38
    for j, (m, label) in enumerate((("v1", "ShuffleNet v1 1x g3"), ("v2", "ShuffleNetV2 1x"))):
        vals = [train["variants"][f"{m}/{s}"]["images_per_s_per_core"] for s in settings]
        bars = ax.bar([i + (j - 0.5) * w for i in range(len(settings))], vals, w, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels([s.replace("/", "\n") for s in settings], fontsize=8)
    ax.set_ylabel("training images/s per core")
    cfg = result["config"]
    ax.set_title(
        f"batch {cfg['batch_size']} at {cfg['size']}px, {cfg['threads']} thread(s); ratio v1/v2 under each bar group",
        fontsize=9,
    )
    for i, s in enumerate(settings):
        ax.text(i, 0, f"{train['ratios_v1_over_v2'][s]:.2f}x", ha="center", va="bottom", fontsize=8, color="white")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def machine_info(threads: int, device: str) -> Dict[str, Any]:
    cpu, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:  # pragma: no cover - not on Linux
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags.split(),
        "amx_bf16": "amx_bf16" in flags.split(),
        "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "threads": threads,
        "device": device,
        "torch": torch.__version__,
        "load_at_start": _load(),
    }


def _choices(values: Sequence[str], allowed: Sequence[str], what: str) -> List[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise BenchmarkError(f"unknown {what} {bad}; choose from {list(allowed)}")
    return list(dict.fromkeys(values))


def bf16_supported() -> bool:
    """Whether this CPU has native bf16 kernels (oneDNN); without them the bf16 variants are not worth timing."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.train_benchmark",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny models at 64x64, batch 8, 2 rounds (CI check)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the training loop")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over rounds)")
    p.add_argument("--steps", type=int, default=2, help="timed training steps per variant per round")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=list(PRECISIONS),
        help="fp32, bf16 (autocast) and/or bf16dw (autocast, depthwise convs kept in fp32)",
    )
    p.add_argument("--compiled-precisions", nargs="+", default=["fp32", "bf16"], help="precisions also compiled")
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), help="eager layouts: nchw and/or channels_last")
    p.add_argument("--modes", nargs="+", default=list(MODES), help="eager and/or compiled")
    p.add_argument("--compiled-layouts", nargs="+", default=["channels_last"], help="layouts of the compiled variants")
    p.add_argument("--device", default="cpu", help="torch device of the training loop (cpu; cuda untested here)")
    p.add_argument("--profile", action="store_true", help="per-layer-type CPU profile of one step per model")
    p.add_argument(
        "--profile-settings",
        nargs="+",
        default=[
            "fp32/nchw/eager",
            "fp32/channels_last/eager",
            "bf16/channels_last/eager",
            "bf16/channels_last/compiled",
        ],
        help="precision/layout/mode settings to profile (of those timed)",
    )
    p.add_argument(
        "--sources",
        nargs="+",
        default=["photos"],
        help="JPEG sources of the data benchmark: photos (the package's sample photos) and/or ImageFolder "
        "directories (train/<class>/<image>), e.g. tests/data/cifar10 with --jpeg-size 400",
    )
    p.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=None,
        help="DataLoader worker counts timed by wall clock (default 0 2; --quick: 0)",
    )
    p.add_argument("--images", type=int, default=32, help="JPEGs per class for the data benchmark")
    p.add_argument(
        "--jpeg-size",
        type=int,
        default=None,
        help="re-encode a folder source's first --images training images per class at this side (default: as is)",
    )
    p.add_argument("--no-data", action="store_true", help="skip the data pipeline part")
    p.add_argument("--out", type=Path, default=Path("outputs/classification/benchmark.json"))
    p.add_argument("--png", type=Path, default=None, help="bar chart (default: --out with .png)")
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="measure nothing: print the table (and write --png) of a saved result, verdicts re-judged",
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render is not None:
        try:
            result = json.loads(args.render.read_text())
            judge_equivalence(result["train"]["variants"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BenchmarkError(f"--render {args.render}: not a benchmark result ({type(e).__name__}: {e})") from None
        if args.png is not None:
            plot(result, args.png)
        print(format_table(result))
        return 0

    precisions = _choices(args.precisions, PRECISIONS, "precision")
    layouts = _choices(args.layouts, LAYOUTS, "layout")
    modes = _choices(args.modes, MODES, "mode")
    compiled_layouts = _choices(args.compiled_layouts, LAYOUTS, "compiled layout")
    compiled_precisions = _choices(args.compiled_precisions, PRECISIONS, "compiled precision")
    for name in ("threads", "batch_size", "size", "rounds", "steps", "images", "jpeg_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers is None:
        args.workers = [0] if args.quick else [0, 2]
    if any(w < 0 for w in args.workers):
        raise BenchmarkError(f"--workers must be >= 0, got {args.workers}")
    if args.quick:
        args.batch_size, args.size, args.rounds, args.steps = 8, 64, 2, 1
        args.images = 2
        args.jpeg_size = None if args.jpeg_size is None else 96
    if not args.no_data:
        for s in args.sources:
            if s != "photos" and not (Path(s) / "train").is_dir():
                raise BenchmarkError(f"--sources {s}: expected 'photos' or a folder with train/<class>/<image>")
    try:
        dev = torch.device(args.device)
    except RuntimeError as e:
        raise BenchmarkError(f"--device {args.device}: not a torch device ({e})") from None
    # What the machine can do is checked after every argument: a typo is reported as such, on any machine.
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda: no CUDA device here")
    if {"bf16", "bf16dw"} & set(precisions) and dev.type == "cpu" and not bf16_supported():
        raise BenchmarkError("bf16 asked for but this CPU has no native bf16 support (oneDNN); use --precisions fp32")
    threads = torch.get_num_threads()
    try:
        return _run(args, argv, precisions, layouts, modes, compiled_layouts, compiled_precisions)
    finally:
        torch.set_num_threads(threads)  # an in-process caller (a test, a notebook) keeps its thread count


def _run(args, argv, precisions, layouts, modes, compiled_layouts, compiled_precisions) -> int:
    if args.quick and "compiled" in modes:  # one small compile is enough to check the path
        compiled_layouts = compiled_layouts[:1]

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    builders = model_builders(args.quick)
    variants = variants_for(["v1", "v2"], precisions, layouts, modes, compiled_layouts, compiled_precisions)
    if args.quick and "compiled" in modes:  # compile v1 in fp32 only: the equivalence check, not a speed figure
        variants = [v for v in variants if v.mode == "eager" or (v.model == "v1" and v.precision == precisions[0])]
    result: Dict[str, Any] = {
        "machine": machine_info(args.threads, args.device),
        "config": {
            "batch_size": args.batch_size,
            "size": args.size,
            "rounds": args.rounds,
            "steps": args.steps,
            "threads": args.threads,
            "quick": args.quick,
            "models": {k: v[0] for k, v in builders.items()},
            "command": " ".join(["python -m tools.train_benchmark", *(argv if argv is not None else sys.argv[1:])]),
        },
    }
    log(
        f"training benchmark: {len(variants)} variants, {args.rounds} rounds x {args.steps} step(s), "
        f"batch {args.batch_size} at {args.size}, {args.threads} thread(s), load {_load():.1f}"
    )
    runners: Dict[str, TrainRunner] = {}
    result["train"] = benchmark_training(
        variants, builders, args.batch_size, args.size, args.rounds, args.steps, args.device, log, runners
    )
    if args.profile:
        result["profile"] = {}
        for setting in args.profile_settings:
            for m in ("v1", "v2"):
                if f"{m}/{setting}" in runners:
                    log(f"profiling {m}/{setting}")
                    result["profile"][f"{m} {setting}"] = profile_step(runners[f"{m}/{setting}"])
    runners.clear()
    if not args.no_data:
        result["data"] = data_pipeline(
            args.sources, args.workers, args.images, args.jpeg_size, args.size, args.batch_size, log
        )
    result["machine"]["load_at_end"] = _load()
    write_json_atomic(result, args.out)
    png = args.png or args.out.with_suffix(".png")
    plot(result, png)
    print(format_table(result))
    print(f"\nresults: {args.out}, chart: {png}")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tools.train_benchmark``: :func:`main` with the project's one-line errors."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
