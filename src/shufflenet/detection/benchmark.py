"""CPU inference benchmark: ShuffleNet 1x/2x Faster R-CNN beside detectron2's R50-C4, at 300 and 600.

Every detector is built from its config with random weights (no downloads; speed does not depend on the
values). The RPN box deltas are zeroed so that proposals are anchors and every model runs its RoI head on
the same number of boxes (``MODEL.RPN.POST_NMS_TOPK_TEST``, 1000 in all configs here; the count is
measured and reported as ``rois_per_image``). R50-C4 is detectron2's ``COCO-Detection/faster_rcnn_R_50_C4_1x.yaml``
from its model zoo. Inputs are real COCO images (``--images``; the repo's ``../shared/data/tiny_coco/val2017``
when present) resized as at test time (shorter side 300 / longer <= 500, or 600 / 1000). Runs are
interleaved (repeat r: every model at every size) so that machine load drifts hit all models alike; the
table reports the median ms/image and the ratio to R50-C4 at the same size.

    python detection/benchmark.py --repeats 3 --out outputs/detection/benchmark
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..fileio import atomic_write
from .api import build_detector
from .config import DetectionError
from .engine import write_results

__all__ = ["MODELS", "SIZES", "run_benchmark", "main"]

#: name -> (config, extra overrides); "model_zoo:" configs come from detectron2's model zoo.
MODELS: Dict[str, str] = {
    "ShuffleNet 1x (g=3)": "coco_shufflenet1x",
    "ShuffleNet 2x (g=3)": "coco_shufflenet2x",
    "R50-C4 (detectron2)": "model_zoo:COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
}
#: shorter side -> longer-side cap (paper Sec. 4.4: 300 and 600).
SIZES = {300: 500, 600: 1000}


def _default_images() -> Optional[Path]:
    here = Path(__file__).resolve()
    for root in (here.parents[3].parent / "shared" / "data" / "tiny_coco" / "val2017",):
        if root.is_dir():
            return root
    return None


def _build(config: str, short: int, long: int, extra: Sequence[str] = ()):
    opts = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", str(short), "INPUT.MAX_SIZE_TEST", str(long),
            "MODEL.WEIGHTS", "", *extra]
    if config.startswith("model_zoo:"):
        from detectron2 import model_zoo
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(config[len("model_zoo:"):]))
        cfg.merge_from_list(opts)
        model = build_model(cfg).eval()
    else:
        model, cfg = build_detector(config, opts=opts)
    _equal_proposals(model)
    return model, cfg


def _equal_proposals(model) -> None:
    """Zero the RPN box deltas: proposals are then anchors (after NMS), so every model runs its RoI head on
    the same number of boxes. Random R50 weights otherwise blow the deltas up until NMS leaves one box."""
    head = model.proposal_generator.rpn_head
    with torch.no_grad():
        head.anchor_deltas.weight.zero_()
        head.anchor_deltas.bias.zero_()


def _count_rois(model, image: torch.Tensor) -> int:
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        proposals, _ = model.proposal_generator(images, model.backbone(images.tensor), None)
    return len(proposals[0])


def _load_images(folder: Optional[Path], count: int, short: int, long: int, fmt: str) -> List[torch.Tensor]:
    from detectron2.data import transforms as T

    aug = T.ResizeShortestEdge(short, long)
    images = []
    if folder is not None:
        from detectron2.data.detection_utils import read_image

        files = sorted(folder.glob("*.jpg"))[:count]
        if not files:
            raise DetectionError(f"--images {folder}: no .jpg files")
        for f in files:
            img = read_image(str(f), format=fmt)
            img = aug.get_transform(img).apply_image(img)
            images.append(torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1))).float())
    else:  # no real images available: 4:3 noise
        g = torch.Generator().manual_seed(0)
        for _ in range(count):
            h, w = short, min(long, round(short * 4 / 3))
            images.append(torch.randint(0, 256, (3, h, w), generator=g).float())
    return images


def run_benchmark(
    models: Dict[str, str] = MODELS,
    sizes: Dict[int, int] = SIZES,
    repeats: int = 3,
    warmup: int = 1,
    images: Optional[Path] = None,
    progress=print,
    opts: Sequence[str] = (),
) -> Dict:
    runs = {}
    for name, config in models.items():
        for short, long in sizes.items():
            model, cfg = _build(config, short, long, opts)
            imgs = _load_images(images, repeats + warmup, short, long, cfg.INPUT.FORMAT)
            runs[(name, short)] = dict(model=model, images=imgs, times=[], rois=_count_rois(model, imgs[0]))
    with torch.no_grad():
        for r in range(warmup + repeats):
            for (name, short), run in runs.items():
                img = run["images"][r]
                t0 = time.perf_counter()
                run["model"].inference([{"image": img}], do_postprocess=False)
                ms = (time.perf_counter() - t0) * 1000
                if r >= warmup:
                    run["times"].append(ms)
                progress(f"[{'warmup' if r < warmup else f'repeat {r - warmup + 1}/{repeats}'}] {name} @ {short}: "
                         f"{ms:.0f} ms ({tuple(img.shape[1:])})")
    rows = []
    for (name, short), run in runs.items():
        rows.append(dict(model=name, short_side=short, max_side=sizes[short], ms_per_image=statistics.median(run["times"]),
                         ms_all=[round(t, 1) for t in run["times"]], rois_per_image=run["rois"]))
    ref = {r["short_side"]: r["ms_per_image"] for r in rows if r["model"].startswith("R50")}
    for r in rows:
        r["ratio_to_r50_c4"] = r["ms_per_image"] / ref[r["short_side"]] if r["short_side"] in ref else None
    return dict(
        rows=rows,
        repeats=repeats,
        warmup=warmup,
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        images=str(images) if images else "random 4:3 noise",
        opts=list(opts),
        command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    )


def format_table(result: Dict) -> str:
    lines = ["| model | input (short/max) | RoIs | ms / image (median) | x R50-C4 time |", "|---|---|---|---|---|"]
    for r in sorted(result["rows"], key=lambda r: (r["short_side"], r["model"])):
        ratio = f"{r['ratio_to_r50_c4']:.3f}" if r["ratio_to_r50_c4"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['short_side']}/{r['max_side']} | {r['rois_per_image']} | {r['ms_per_image']:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def plot(result: Dict, path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(dict.fromkeys(r["model"] for r in result["rows"]))
    sizes = sorted({r["short_side"] for r in result["rows"]})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [next((r["ms_per_image"] for r in result["rows"] if r["model"] == name and r["short_side"] == s), 0)
                for s in sizes]
        ax.bar([j + i * width for j in range(len(sizes))], vals, width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(sizes))])
    ax.set_xticklabels([f"shorter side {s}" for s in sizes])
    ax.set_ylabel("CPU ms / image (median)")
    ax.set_yscale("log")
    ax.set_title(f"Faster R-CNN inference, {result['torch_threads']} threads")
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model and size (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="MODEL",
                        help=f"subset of: {', '.join(MODELS)}")
    parser.add_argument("--images", type=Path, default=None, help="folder of .jpg images (default: tiny_coco val2017)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("outputs/detection/benchmark"), help="output folder")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="detectron2 config overrides for every model, e.g. MODEL.RPN.POST_NMS_TOPK_TEST 300")
    args = parser.parse_args(argv)
    try:
        if args.repeats < 1 or args.warmup < 0:
            raise DetectionError("--repeats must be >= 1 and --warmup >= 0")
        if len(args.opts) % 2:
            raise DetectionError(f"config overrides must be KEY VALUE pairs, got {args.opts}")
        if args.images is not None and not args.images.is_dir():
            raise DetectionError(f"--images {args.images}: no such folder")
        if args.threads:
            torch.set_num_threads(args.threads)
        result = run_benchmark(
            {m: MODELS[m] for m in args.models},
            {s: SIZES[s] for s in args.sizes},
            args.repeats,
            args.warmup,
            args.images or _default_images(),
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
            opts=args.opts,
        )
    except (DetectionError, KeyError, ValueError) as e:  # KeyError/ValueError: a bad KEY VALUE override
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = format_table(result)
    write_results(args.out / "benchmark.json", result["rows"], {k: v for k, v in result.items() if k != "rows"})
    png = plot(result, args.out / "benchmark.png")
    print(table)
    print(f"written: {args.out / 'benchmark.json'}" + (f", {png}" if png else ""))
    return 0
