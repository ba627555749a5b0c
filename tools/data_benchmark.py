"""Images/s per CPU core of the classification input pipeline: PIL, tensor, DALI (CPU operators) and shards.

``python -m tools.data_benchmark --folder DIR ... --out OUT`` decodes and augments real JPEGs with the training
transform of the paper's recipe (RandomResizedCrop 224, area 25-100 %, horizontal flip, normalization), one
process with one torch thread (one DataLoader worker's work), and divides the images by the CPU seconds the
process used (``time.process_time``: all its threads, so DALI's worker thread counts too). The backends run in
turns, round after round, so that a busy machine slows them alike; the reported rate is the median of the rounds.

``pil`` is the yardstick: a plain-PIL baseline built here (PIL decode, crop and resize of the PIL image, then
``ToImage`` + ``ToDtype`` + ``Normalize``; the package's decode before the ``tensor`` backend, not a
``data.backend``); ``tensor`` is the package's decode (``--data.backend tensor``).

Sources: the package's sample photos (JPEG, 427-552 x 320), and each ``--folder`` (searched recursively for JPEGs:
a slice of ImageNet, the COCO images of the test data, ...). ``shards`` writes the source into litdata shards
first (not timed) and times reading + decoding + augmenting from them with ``--data.shards``'s dataset.

Writes ``OUT/data_benchmark.json``, ``OUT/data_benchmark.md`` (the table) and ``OUT/data_benchmark.png``. The
GPU end-to-end rate (DALI ``mixed`` decode feeding a ShuffleNet at bf16) needs a GPU machine: without one it is
reported as not measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from shufflenet.classification.data import train_transform
from shufflenet.classification.imagefiles import decode_rgb, list_images, load_rgb
from shufflenet.data.stream import augmentation_seed

BACKENDS = ("pil", "tensor", "dali-cpu", "shards")


def photo_files() -> List[str]:
    folder = resources.files("shufflenet").joinpath("resources/images")
    return sorted(str(p) for p in folder.iterdir() if p.name.endswith(".jpg"))


def describe(files: Sequence[str]) -> Dict[str, Any]:
    from PIL import Image

    sizes = [Image.open(f).size for f in files]
    px = sorted(w * h for w, h in sizes)
    return {"files": len(files), "median_pixels": px[len(px) // 2], "min_size": min(sizes), "max_size": max(sizes)}


def _cpu_rate(fn: Callable[[], int]) -> float:
    c0 = time.process_time()
    n = fn()
    return n / max(time.process_time() - c0, 1e-9)


def previous_train_transform(size: int) -> Any:
    """The baseline's training transform: PIL crop/resize, then ToImage + ToDtype + Normalize."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    from shufflenet.constants import IMAGENET_MEAN, IMAGENET_STD

    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.RandomHorizontalFlip(0.5),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def folder_runner(files: Sequence[str], backend: str, size: int) -> Callable[[], int]:
    tf = previous_train_transform(size) if backend == "pil" else train_transform(size)
    decode = decode_rgb if backend == "tensor" else load_rgb

    def run() -> int:
        for i, f in enumerate(files):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(augmentation_seed(0, 0, i))
                tf(decode(f))
        return len(files)

    return run


def dali_runner(files: Sequence[str], size: int, batch: int = 16) -> Optional[Callable[[], int]]:
    try:
        from shufflenet.classification.data_dali import DaliLoader
    except ImportError:
        return None
    from shufflenet.classification.data_dali import dali_available

    if not dali_available():
        return None

    class _Files:  # the attributes DaliLoader reads from a dataset
        samples = [(f, 0) for f in files]
        transform = train_transform(size)
        seed = 0
        max_image_pixels = None
        root = "benchmark"

    n = len(files) - len(files) % batch
    loader = DaliLoader(_Files(), [(0, i) for i in range(n)], batch, True, size, 256, 1, True, None)

    def run() -> int:
        for _ in loader:
            pass
        return n

    return run


def shards_runner(files: Sequence[str], size: int, tmp: Path) -> Optional[Callable[[], int]]:
    try:
        import litdata  # noqa: F401
    except ImportError:
        return None
    from shufflenet.classification.shards import ShardDataset, write_shards

    root = tmp / "tree"
    for split in ("train", "val"):
        for i, f in enumerate(files):
            d = root / split / "c0"
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, d / f"{i:06d}{Path(f).suffix}")
    write_shards(str(root), str(tmp / "shards"), num_workers=1, splits=("train",))
    shutil.rmtree(root)
    ds = ShardDataset.open(str(tmp / "shards"), "train", train_transform(size), shuffle=True, cache_dir=str(tmp / "c"))

    def run() -> int:
        n = 0
        for _ in ds:
            n += 1
        return n

    return run


def measure(sources: Dict[str, List[str]], rounds: int, size: int, backends: Sequence[str]) -> Dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: Dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="shufflenet-data-bench-"))
    try:
        for name, files in sources.items():
            runners: Dict[str, Optional[Callable[[], int]]] = {}
            for b in backends:
                if b in ("pil", "tensor"):
                    runners[b] = folder_runner(files, b, size)
                elif b == "dali-cpu":
                    runners[b] = dali_runner(files, size)
                elif b == "shards":
                    runners[b] = shards_runner(files, size, tmp / name)
            for r in runners.values():  # warm-up (imports, DALI pipeline build, page cache)
                if r is not None:
                    r()
            rates: Dict[str, List[float]] = {b: [] for b, r in runners.items() if r is not None}
            for i in range(rounds):
                for b in rates:
                    rates[b].append(_cpu_rate(runners[b]))
                print(f"{name} round {i + 1}/{rounds}: " + ", ".join(f"{b} {v[-1]:.0f}/s" for b, v in rates.items()))
            res = {"source": describe(files), "images_per_s_per_core": {}, "rounds": rates}
            for b in backends:
                res["images_per_s_per_core"][b] = statistics.median(rates[b]) if b in rates else None
            pil = res["images_per_s_per_core"].get("pil")
            res["speedup_vs_pil"] = {
                b: (v / pil if v and pil else None) for b, v in res["images_per_s_per_core"].items()
            }
            out[name] = res
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def table(result: Dict[str, Any]) -> str:
    backends = result["backends"]
    lines = [
        f"Images/s per CPU core (decode + RandomResizedCrop {result['image_size']} + flip + normalize; one process, "
        f"one torch thread; median of {result['rounds']} interleaved rounds; {result['host']}).",
        "",
        "| source | images | " + " | ".join(backends) + " |",
        "|---|---:|" + "---:|" * len(backends),
    ]
    for name, r in result["sources"].items():
        cells = []
        for b in backends:
            v, s = r["images_per_s_per_core"][b], r["speedup_vs_pil"][b]
            cells.append("not installed" if v is None else f"{v:.0f} ({s:.2f}x)")
        lines.append(
            f"| {name} ({r['source']['median_pixels'] / 1e3:.0f} kpx median) | {r['source']['files']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", f"GPU end to end: {result['gpu_end_to_end']}"]
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["sources"])
    backends = result["backends"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(backends)
    for j, b in enumerate(backends):
        vals = [result["sources"][n]["images_per_s_per_core"][b] or 0 for n in names]
        ax.bar([i + j * width for i in range(len(names))], vals, width, label=b)
    ax.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel("images/s per CPU core")
    ax.set_title("decode + augment (train transform), 1 thread")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", action="append", default=[], help="a folder of JPEGs (recursive); repeatable")
    p.add_argument("--no-photos", action="store_true", help="leave out the package's sample photos")
    p.add_argument("--images", type=int, default=60, help="images per source (photos are repeated to this count)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--out", default="data_benchmark")
    args = p.parse_args(argv)
    sources: Dict[str, List[str]] = {}
    if not args.no_photos:
        photos = photo_files()
        sources["photos"] = [photos[i % len(photos)] for i in range(args.images)]
    for folder in args.folder:
        files = [f for f in list_images(folder) if f.lower().endswith((".jpg", ".jpeg"))][: args.images]
        if not files:
            print(f"error: {folder} holds no JPEG files", file=sys.stderr)
            return 2
        sources[Path(folder).name] = files
    if not sources:
        print("error: no source: give --folder DIR or leave out --no-photos", file=sys.stderr)
        return 2
    result = {
        "host": f"{platform.machine()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"torch {torch.__version__}",
        "image_size": args.image_size,
        "rounds": args.rounds,
        "backends": list(args.backends),
        "command": "python -m tools.data_benchmark " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sources": measure(sources, args.rounds, args.image_size, args.backends),
        "gpu_end_to_end": "not measured (no GPU on this machine)"
        if not torch.cuda.is_available()
        else "not measured (this tool measures the CPU rates; run the DALI mixed backend on the GPU machine)",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    md = table(result)
    (out / "data_benchmark.md").write_text(md)
    plot(result, out / "data_benchmark.png")
    print(md)
    print(f"wrote {out}/data_benchmark.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
