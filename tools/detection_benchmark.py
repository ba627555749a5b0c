"""CPU inference benchmark: ShuffleNet 1x/2x Faster R-CNN beside detectron2's R50-C4, per stage.

For every model, input size (shorter side 300 / longer <= 500, and 600 / 1000: paper Sec. 4.4) and test-time
proposal count (``MODEL.RPN.POST_NMS_TOPK_TEST``: 1000, detectron2's default, and 300, what the paper used
through py-faster-rcnn's test defaults), it reports the median ms/image

* ``eager``: detectron2's model in PyTorch, timed per stage: ``backbone`` (normalization + stem and stages
  2-3, or R50's res2-res4), ``rpn`` (RPN head, anchors, top-k, NMS) and ``roi_head`` (RoIAlign, stage 4 /
  res5 on every proposal, box predictor, per-class NMS);
* ``fused``: the same eager model after :func:`shufflenet.detection.modeling.fuse_for_inference` (frozen
  BatchNorm folded into the convolutions), timed per stage too;
* ``traced``: the fused detector through ``torch.jit.trace`` (:func:`shufflenet.detection.export.trace_detector`,
  checked against eager);
* ``ptl``: that traced module through ``torch.utils.mobile_optimizer.optimize_for_mobile`` and the lite
  interpreter (``_save_for_lite_interpreter`` / ``_load_for_lite_interpreter``), as ``mobile/export.py
  --detector`` ships a detector.

The ShuffleNet configs run eval mode on channels-last tensors (``MODEL.SHUFFLENET.CHANNELS_LAST``, default
on); pass ``MODEL.SHUFFLENET.CHANNELS_LAST False`` (ShuffleNet models only) to time the NCHW path.

Every detector is built from its config with random weights (no downloads; speed does not depend on the
values). The RPN box deltas are zeroed so that proposals are anchors (after NMS) and every model runs its RoI
head on the same number of boxes (measured and reported as ``rois``). R50-C4 is detectron2's
``COCO-Detection/faster_rcnn_R_50_C4_1x.yaml`` from its model zoo. Inputs are real photos: the package's
sample photos (``shufflenet.paths.sample_images()``) or ``--images DIR``, resized as at test time. Runs are
interleaved (repeat r: every model, size, proposal setting and runtime) so that load drifts hit all alike.

    python -m tools.detection_benchmark --threads 1 --repeats 3 --out outputs/detection/benchmark

A developer tool (it measures the package, it is not part of it): run from the repository root.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from shufflenet import paths
from shufflenet.detection import DetectionError, build_detector
from shufflenet.detection.engine import write_results
from shufflenet.detection.export import ExportError, trace_detector, traceable_detector
from shufflenet.detection.modeling import fuse_for_inference
from shufflenet.errors import run_cli
from shufflenet.fileio import atomic_write
from shufflenet.paths import IMAGE_SUFFIXES, sample_images

__all__ = ["MODELS", "SIZES", "PROPOSALS", "RUNTIMES", "STAGES", "run_benchmark", "format_table", "main", "cli"]

#: name -> config; "model_zoo:" configs come from detectron2's model zoo.
MODELS: Dict[str, str] = {
    "ShuffleNet 1x (g=3)": "coco_shufflenet1x",
    "ShuffleNet 2x (g=3)": "coco_shufflenet2x",
    "R50-C4 (detectron2)": "model_zoo:COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
}
#: shorter side -> longer-side cap (paper Sec. 4.4: 300 and 600).
SIZES = {300: 500, 600: 1000}
#: test-time proposals after NMS: detectron2's default and py-faster-rcnn's (the paper's).
PROPOSALS = (1000, 300)
RUNTIMES = ("eager", "fused", "traced", "ptl")
STAGES = ("backbone", "rpn", "roi_head")


def _build(config: str, short: int, long: int, proposals: int, extra: Sequence[str] = ()):
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "INPUT.MIN_SIZE_TEST",
        str(short),
        "INPUT.MAX_SIZE_TEST",
        str(long),
        "MODEL.WEIGHTS",
        "",
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        str(proposals),
        *extra,
    ]
    if config.startswith("model_zoo:"):
        from detectron2 import model_zoo
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(config[len("model_zoo:") :]))
        try:
            cfg.merge_from_list(opts)
        except (KeyError, ValueError, AssertionError) as e:
            raise DetectionError(f"bad config override in {list(extra)}: {e}") from None
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


#: ``wall``: time.perf_counter; ``thread``: time.thread_time, the CPU time of the calling thread, which is all
#: of the work when torch runs on one thread: it does not count the time other processes hold the core, so a
#: loaded shared machine still gives the single-thread cost.
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def _stages(model, image: torch.Tensor, clock: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    """One eager inference, timed per stage (ms); returns the stage times and the RoI count."""
    t0 = clock()
    images = model.preprocess_image([{"image": image}])
    features = model.backbone(images.tensor)
    t1 = clock()
    proposals, _ = model.proposal_generator(images, features, None)
    t2 = clock()
    model.roi_heads(images, features, proposals, None)
    t3 = clock()
    return {
        "backbone": (t1 - t0) * 1e3,
        "rpn": (t2 - t1) * 1e3,
        "roi_head": (t3 - t2) * 1e3,
        "total": (t3 - t0) * 1e3,
        "rois": len(proposals[0]),
    }


def image_files(folder: Optional[Path]) -> List[Path]:
    """``--images`` (a folder of photos) or the package's sample photos."""
    if folder is None:
        return sample_images()
    files = paths.image_files(folder)
    if not files:
        raise DetectionError(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _load_images(files: Sequence[Path], count: int, short: int, long: int, fmt: str) -> List[torch.Tensor]:
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image

    aug = T.ResizeShortestEdge(short, long)
    images = []
    for i in range(count):
        f = files[i % len(files)]
        try:
            img = read_image(str(f), format=fmt)
        except Exception as e:  # PIL: not an image, truncated ...
            raise DetectionError(f"{f}: cannot be read as an image ({type(e).__name__}: {e})") from None
        img = aug.get_transform(img).apply_image(img)
        images.append(torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1))).float())
    return images


def _to_bgr(image: torch.Tensor, fmt: str) -> torch.Tensor:
    return image.flip(0) if fmt == "RGB" else image  # the exported module takes BGR (export.py)


def _lite(traced: torch.jit.ScriptModule) -> Callable:
    from torch.jit.mobile import _load_for_lite_interpreter
    from torch.utils.mobile_optimizer import optimize_for_mobile

    optimized = optimize_for_mobile(traced)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "detector.ptl")
        optimized._save_for_lite_interpreter(path)
        return _load_for_lite_interpreter(path)


def run_benchmark(
    models: Dict[str, str] = MODELS,
    sizes: Dict[int, int] = SIZES,
    proposals: Sequence[int] = PROPOSALS,
    runtimes: Sequence[str] = ("eager", "fused"),
    repeats: int = 3,
    warmup: int = 1,
    images: Optional[Path] = None,
    progress=print,
    opts: Sequence[str] = (),
    clock: str = "wall",
) -> Dict:
    if clock not in CLOCKS:
        raise DetectionError(f"clock must be one of {list(CLOCKS)}, got {clock!r}")
    if clock == "thread" and torch.get_num_threads() != 1:
        raise DetectionError("the thread clock measures one thread's CPU time: use it with --threads 1")
    tick = CLOCKS[clock]
    files = image_files(images)
    runs = {}
    for name, config in models.items():
        for short, long in sizes.items():
            for k in proposals:
                model, cfg = _build(config, short, long, k, opts)
                fmt = cfg.INPUT.FORMAT
                imgs = _load_images(files, repeats + warmup, short, long, fmt)
                fused = fuse_for_inference(copy.deepcopy(model)) if set(runtimes) - {"eager"} else None
                traced, trace_note = None, ""
                if {"traced", "ptl"} & set(runtimes):  # traced once, checked against eager, for both runtimes
                    bgr = [_to_bgr(i, fmt) for i in imgs]
                    try:
                        traced = trace_detector(traceable_detector(fused, fuse=False), bgr[0], bgr[1:2])
                    except (ExportError, RuntimeError) as e:
                        trace_note = f"trace failed: {str(e).splitlines()[0][:200]}"
                        progress(f"{name} @ {short} / {k}: {trace_note}")
                for runtime in runtimes:
                    fn = None
                    note = ""
                    if runtime in ("traced", "ptl"):
                        note = trace_note
                        if traced is not None:
                            try:
                                fn = traced if runtime == "traced" else _lite(traced)
                            except RuntimeError as e:
                                note = f"{runtime} failed: {str(e).splitlines()[0][:200]}"
                                progress(f"{name} @ {short} / {k}: {note}")
                    runs[(name, short, k, runtime)] = dict(
                        model=fused if runtime == "fused" else model,
                        fn=fn,
                        images=imgs,
                        fmt=fmt,
                        times=[],
                        stages=[],
                        rois=None,
                        note=note,
                    )
    with torch.no_grad():
        for r in range(warmup + repeats):
            for (name, short, k, runtime), run in runs.items():
                img = run["images"][r]
                if runtime in ("eager", "fused"):
                    st = _stages(run["model"], img, tick)
                    ms, run["rois"] = st["total"], st["rois"]
                    if r >= warmup:
                        run["stages"].append(st)
                elif run["fn"] is not None:
                    x = _to_bgr(img, run["fmt"])
                    t0 = tick()
                    run["fn"](x)
                    ms = (tick() - t0) * 1e3
                else:
                    continue
                if r >= warmup:
                    run["times"].append(ms)
                progress(
                    f"[{'warmup' if r < warmup else f'repeat {r - warmup + 1}/{repeats}'}] {name} @ {short}, "
                    f"{k} proposals, {runtime}: {ms:.0f} ms ({tuple(img.shape[1:])})"
                )
    rows = []
    for (name, short, k, runtime), run in runs.items():
        row = dict(
            model=name,
            short_side=short,
            max_side=sizes[short],
            proposals=k,
            runtime=runtime,
            ms_per_image=statistics.median(run["times"]) if run["times"] else None,
            ms_all=[round(t, 1) for t in run["times"]],
        )
        if runtime in ("eager", "fused"):
            row["rois_per_image"] = run["rois"]
            row.update({f"{s}_ms": statistics.median(st[s] for st in run["stages"]) for s in STAGES})
        if run["note"]:
            row["note"] = run["note"]
        rows.append(row)
    ref = {
        (r["short_side"], r["proposals"]): r["ms_per_image"]
        for r in rows
        if r["model"].startswith("R50") and r["runtime"] == "eager"
    }
    for r in rows:
        base = ref.get((r["short_side"], r["proposals"]))
        r["ratio_to_r50_c4_eager"] = r["ms_per_image"] / base if base and r["ms_per_image"] else None
    return dict(
        rows=rows,
        repeats=repeats,
        warmup=warmup,
        clock=clock,
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        images=str(images) if images else f"package sample photos ({len(files)}: {', '.join(f.name for f in files)})",
        opts=list(opts),
        command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    )


def format_table(result: Dict) -> str:
    lines = [
        f"ms: median of {result['repeats']}, {result['clock']} clock, {result['torch_threads']} torch thread(s)",
        "",
        "| model | input (short/max) | proposals | runtime | ms / image | backbone | RPN | RoI head | x R50-C4 eager |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {r: i for i, r in enumerate(RUNTIMES)}
    for r in sorted(result["rows"], key=lambda r: (r["short_side"], -r["proposals"], r["model"], order[r["runtime"]])):
        ms = f"{r['ms_per_image']:.0f}" if r["ms_per_image"] is not None else r.get("note", "-")
        stages = [f"{r[s + '_ms']:.0f}" if r.get(s + "_ms") is not None else "" for s in STAGES]
        ratio = f"{r['ratio_to_r50_c4_eager']:.3f}" if r["ratio_to_r50_c4_eager"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['short_side']}/{r['max_side']} | {r['proposals']} | {r['runtime']} | {ms} | "
            + " | ".join(stages)
            + f" | {ratio} |"
        )
    return "\n".join(lines)


def plot(result: Dict, path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in result["rows"] if r["runtime"] == "eager" and r["ms_per_image"] is not None]
    if not rows:
        return None
    groups = sorted({(r["short_side"], r["proposals"]) for r in rows}, key=lambda g: (g[0], -g[1]))
    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(names)
    colors = {"backbone": "#4c72b0", "rpn": "#dd8452", "roi_head": "#55a868"}
    for i, name in enumerate(names):
        bottom = [0.0] * len(groups)
        for stage in STAGES:
            vals = [
                next(
                    (r[stage + "_ms"] for r in rows if r["model"] == name and (r["short_side"], r["proposals"]) == g),
                    0.0,
                )
                for g in groups
            ]
            ax.bar(
                [j + i * width for j in range(len(groups))],
                vals,
                width,
                bottom=bottom,
                color=colors[stage],
                edgecolor="white",
                label=stage if i == 0 else None,
            )
            bottom = [b + v for b, v in zip(bottom, vals)]
        for j, b in enumerate(bottom):
            ax.text(
                j + i * width,
                b,
                name.split(" (")[0].replace("ShuffleNet ", "SN "),
                ha="center",
                va="bottom",
                fontsize=6,
                rotation=90,
            )
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{s}px, {k} proposals" for s, k in groups], fontsize=8)
    ax.set_ylabel(f"ms / image (median, {result['clock']} clock), eager")
    ax.set_yscale("log")
    ax.set_title(f"Faster R-CNN inference per stage, {result['torch_threads']} thread(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model, size, proposals and runtime")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    parser.add_argument(
        "--proposals",
        type=int,
        nargs="+",
        default=list(PROPOSALS),
        help="test-time proposals after NMS (MODEL.RPN.POST_NMS_TOPK_TEST); default 1000 300",
    )
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        choices=list(MODELS),
        metavar="MODEL",
        help=f"subset of: {', '.join(MODELS)}",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="folder of photos (default: the package's sample photos, shufflenet/resources/images)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default=None,
        help="wall (perf_counter) or thread (the thread's CPU time; default with --threads 1)",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/detection/benchmark"), help="output folder")
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="detectron2 config overrides for every model, e.g. MODEL.ROI_HEADS.NMS_THRESH_TEST 0.5",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        raise DetectionError("--repeats must be >= 1 and --warmup >= 0")
    if any(k < 1 for k in args.proposals):
        raise DetectionError(f"--proposals must be >= 1, got {args.proposals}")
    if len(args.opts) % 2:
        raise DetectionError(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    if args.images is not None and not args.images.is_dir():
        raise DetectionError(f"--images {args.images}: no such folder")
    if args.out.exists() and not args.out.is_dir():
        raise DetectionError(f"--out {args.out}: exists and is not a folder")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = _run(args)
    finally:
        torch.set_num_threads(threads)  # a library call leaves the process's thread count as it found it
    table = format_table(result)
    print(table)
    try:
        write_results(args.out / "benchmark.json", result["rows"], {k: v for k, v in result.items() if k != "rows"})
        png = plot(result, args.out / "benchmark.png")
    except OSError as e:
        raise DetectionError(f"--out {args.out}: cannot write the results ({e.strerror or e})") from None
    print(f"written: {args.out / 'benchmark.json'}" + (f", {png}" if png else ""))
    return 0


def _run(args) -> dict:
    return run_benchmark(
        {m: MODELS[m] for m in args.models},
        {s: SIZES[s] for s in args.sizes},
        list(dict.fromkeys(args.proposals)),
        list(dict.fromkeys(args.runtimes)),
        args.repeats,
        args.warmup,
        args.images,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        opts=args.opts,
        clock=args.clock or ("thread" if torch.get_num_threads() == 1 else "wall"),
    )


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tools.detection_benchmark``: :func:`main` through :func:`shufflenet.errors.run_cli`."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
