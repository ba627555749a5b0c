"""``python classification/benchmark.py``: training and data-loading throughput on this machine.

1. Training throughput (images/s) of ShuffleNet 1x (g=3) beside torchvision's ShuffleNetV2 1x under the same
   loop: batch 32 at 224x224, SGD momentum 0.9 + cross-entropy, forward + backward + step, random tensors
   (the model alone), ``--threads`` intra-op threads (default 2 = the 2 cores CI has).
2. Data-loading throughput of the real training pipeline (:class:`ImageFolderDataModule`: PIL decode,
   RandomResizedCrop 224 + flip + normalize, per-sample seeding, collate) over JPEGs made by upscaling the
   CIFAR-10 test images of ``../shared/data/cifar10`` to ``--jpeg-size`` (default 400x400, near ImageNet's
   average) or, without them, generated demo images; ``--workers`` DataLoader workers.

If data loading (2) is slower than training (1) the model is starved by decoding. Results as JSON
(``--out``, atomic) and a table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..models import create_model
from ..fileio import write_json_atomic
from .data import ImageFolderDataModule

__all__ = ["train_throughput", "loader_throughput", "main"]

DEFAULT_CIFAR = Path(__file__).resolve().parents[4] / "shared" / "data" / "cifar10"


def train_throughput(model: torch.nn.Module, batch_size: int = 32, size: int = 224, steps: int = 10,
                     warmup: int = 2) -> Dict[str, float]:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, size, size, generator=g)
    y = torch.randint(0, 1000, (batch_size,), generator=g)
    times: List[float] = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        print(f"\r  step {i + 1}/{warmup + steps}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    times.sort()
    median = times[len(times) // 2]
    return {"images_per_s": batch_size / median, "median_step_s": median, "steps": steps, "batch_size": batch_size}


def make_jpegs(out: Path, source: Optional[Path], per_class: int, size: int) -> Path:
    """An ImageNet-layout folder of ``size``x``size`` JPEGs (quality 90): upscaled CIFAR or generated images."""
    from PIL import Image

    from .demo import DEMO_CLASSES, render

    for split in ("train", "val"):
        if source is not None and (source / "test").is_dir():
            classes = sorted(p.name for p in (source / "test").iterdir() if p.is_dir())
            for cls in classes:
                d = out / split / cls
                d.mkdir(parents=True, exist_ok=True)
                files = sorted((source / "test" / cls).iterdir())[: per_class if split == "train" else 1]
                for f in files:
                    with Image.open(f) as im:
                        im.convert("RGB").resize((size, size), Image.BICUBIC).save(d / f"{f.stem}.JPEG", quality=90)
        else:
            for label, cls in enumerate(DEMO_CLASSES):
                d = out / split / cls
                d.mkdir(parents=True, exist_ok=True)
                for i in range(per_class if split == "train" else 1):
                    render(label, label * 1000 + i, 48).resize((size, size), Image.BICUBIC).save(
                        d / f"{i}.JPEG", quality=90)
    return out


def loader_throughput(root: Path, workers: int, batch_size: int = 32, size: int = 224, batches: int = 20) -> Dict[str, float]:
    dm = ImageFolderDataModule(str(root), batch_size=batch_size, num_workers=workers, image_size=size,
                               resize_size=max(size, 256), persistent_workers=False, pin_memory=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            x, _, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _, _ = next(it)
        n += x.shape[0]
    dt = time.perf_counter() - t0
    return {"images_per_s": n / dt, "images": n, "workers": workers, "batch_size": batch_size}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="classification/benchmark.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads for the training loop")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=8, help="timed training steps per model (after 2 warm-up steps)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to measure")
    p.add_argument("--cifar", type=Path, default=DEFAULT_CIFAR, help="CIFAR-10 ImageFolder to upscale")
    p.add_argument("--jpeg-size", type=int, default=400)
    p.add_argument("--images", type=int, default=32, help="JPEGs per class for the loader benchmark")
    p.add_argument("--out", type=Path, default=Path("outputs/classification/benchmark.json"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    result: Dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads,
                    "torch": torch.__version__},
        "train": {}, "data": {},
    }
    import torchvision

    models = {
        "shufflenet_v1_x1_0_g3 (this project)": lambda: create_model("shufflenet_v1_x1_0_g3"),
        "torchvision shufflenet_v2_x1_0": lambda: torchvision.models.shufflenet_v2_x1_0(weights=None),
    }
    for name, build in models.items():
        print(f"training {name}: batch {args.batch_size} at {args.size}x{args.size}, {args.threads} threads",
              file=sys.stderr)
        torch.manual_seed(0)
        result["train"][name] = train_throughput(build(), args.batch_size, args.size, args.steps)
    v1, v2 = (r["images_per_s"] for r in result["train"].values())
    result["train_ratio_v1_over_v2"] = v1 / v2

    with tempfile.TemporaryDirectory() as tmp:
        source = args.cifar if args.cifar.is_dir() else None
        print(f"writing {args.images * 10} {args.jpeg_size}x{args.jpeg_size} JPEGs from "
              f"{source or 'generated demo images'} ...", file=sys.stderr)
        root = make_jpegs(Path(tmp) / "jpegs", source, args.images, args.jpeg_size)
        result["data"]["source"] = f"{'CIFAR-10 test images' if source else 'demo images'} upscaled to " \
                                   f"{args.jpeg_size}x{args.jpeg_size} JPEG q90"
        for w in args.workers:
            print(f"data loading with {w} workers ...", file=sys.stderr)
            result["data"][f"workers={w}"] = loader_throughput(root, w, args.batch_size, args.size,
                                                               batches=max(4, args.images * 10 // args.batch_size - 1))
    write_json_atomic(result, args.out)

    print(f"\n| {'measurement':<52} | {'images/s':>9} |")
    print(f"|{'-' * 54}|{'-' * 11}|")
    for name, r in result["train"].items():
        print(f"| {'train ' + name:<52} | {r['images_per_s']:>9.1f} |")
    for key, r in result["data"].items():
        if isinstance(r, dict):
            print(f"| {'data loading (' + key + ', RandomResizedCrop 224)':<52} | {r['images_per_s']:>9.1f} |")
    print(f"\nShuffleNet v1 1x g3 / ShuffleNetV2 1x training throughput: {result['train_ratio_v1_over_v2']:.2f}x")
    print(f"results: {args.out}")
    return 0
