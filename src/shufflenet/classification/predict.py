"""``shufflenet-predict IMAGE|FOLDER ... --model NAME --weights DEFAULT|FILE``: what is in a photo.

Prints the top-k class names with their probabilities for each image (a folder: its images, sorted, in
subfolders too) and, with ``--json FILE``, writes them (atomically) as ``{"weights", "arch", "num_classes",
"top_k", "predictions": [{"path", "top_k": [{"index", "name", "prob"}]}], "skipped"}``: the rows have the layout
of ``shufflenet-train predict``'s (:func:`top_k_rows`). ``--weights`` takes published weights
(``DEFAULT`` or a weights name of ``--model``; downloaded once into torch.hub's cache) or a file: this
project's weights file or Lightning ``.ckpt`` (class names from the file when it carries them), an original
or converted public checkpoint (the 1000 ImageNet class names). Preprocessing is the weights' own evaluation
transform (resize the short side, centre crop; 256 / 224 unless the file says otherwise). Images that cannot
be read are listed and skipped; bad input (no such file, unknown weights) is one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import run_cli
from ..fileio import write_json_atomic
from ..models import IMAGENET_CATEGORIES, get_spec, model_from_weights
from ..models.pretrained import ShuffleNetWeights, resolve_weights, weights_file
from ..paths import IMAGE_SUFFIXES, image_files
from .data import eval_transform
from .errors import ClassificationError
from .imagefiles import load_rgb

__all__ = ["Prediction", "top_k_rows", "load_predictor", "find_images", "predict", "main", "cli"]

Prediction = Dict[str, Any]


def top_k_rows(
    paths: Sequence[Any], probs: torch.Tensor, k: int, names: Optional[Sequence[str]] = None
) -> List[Prediction]:
    """The one layout of a prediction, for ``shufflenet-predict`` and ``shufflenet-train predict`` alike:
    ``{"path", "top_k": [{"index", "name", "prob"}, ...]}`` per image (``probs``: one row of class probabilities
    per path; ``name`` is ``None`` without class names; ``prob`` rounded to 6 decimals)."""
    k = max(1, min(int(k), probs.shape[1]))
    top = probs.float().topk(k, dim=1)
    return [
        {
            "path": str(path),
            "top_k": [
                {"index": i, "name": names[i] if names and i < len(names) else None, "prob": round(q, 6)}
                for q, i in zip(ps, ids)
            ],
        }
        for path, ps, ids in zip(paths, top.values.tolist(), top.indices.tolist())
    ]


def load_predictor(
    weights: str, model: Optional[str] = None, progress: bool = True
) -> Tuple[nn.Module, Callable[[Any], torch.Tensor], List[str], Dict[str, Any]]:
    """``(model.eval(), transform, class names, info)`` for ``--weights`` / ``--model``."""
    if model is not None:
        get_spec(model)  # a misspelled --model is "unknown model" (with close matches), whatever --weights says
    found = resolve_weights(weights, model)
    wf = weights_file(found, model, progress=progress)
    net = model_from_weights(wf, model).eval()
    num_classes = int(getattr(net, "num_classes", 0) or 0)
    if isinstance(found, ShuffleNetWeights):
        transform = found.transforms()
        classes = list(found.meta["categories"])
        source = f"{type(found).__name__}.{found.name}"
    else:
        tf = wf.meta.get("eval_transform") or {}
        if wf.kind == "lightning":
            tf = wf.hparams.get("datamodule") or {}
        transform = eval_transform(int(tf.get("image_size") or 224), int(tf.get("resize_size") or 256))
        classes = list(wf.meta.get("classes") or [])
        if not classes and num_classes == 1000 and wf.meta.get("layout") in ("megvii", "mmpretrain"):
            classes = list(IMAGENET_CATEGORIES)  # both public sets use the standard ImageNet-1k order
        source = str(wf.path)
    if classes and len(classes) != num_classes:
        raise ClassificationError(f"{source}: {len(classes)} class names for a classifier of {num_classes} classes")
    classes = classes or [f"class {i}" for i in range(num_classes)]
    info = {"weights": source, "arch": wf.arch or model, "num_classes": num_classes}
    return net, transform, classes, info


def find_images(inputs: Sequence[str]) -> List[Path]:
    """The image files named (a folder: its images with a known suffix, recursively, sorted)."""
    files: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise ClassificationError(f"{path}: no images in this folder (suffixes {', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ClassificationError(f"{path}: no such image file or folder")
    return files


@torch.no_grad()
def predict(
    net: nn.Module,
    transform: Callable[[Any], torch.Tensor],
    classes: Sequence[str],
    images: Sequence[Path],
    topk: int = 5,
    batch_size: int = 16,
) -> Tuple[List[Prediction], Dict[str, str]]:
    """:func:`top_k_rows` of every readable image, and ``{image: reason}`` of the images that could not be read
    (skipped)."""
    results: List[Prediction] = []
    skipped: Dict[str, str] = {}
    batch: List[Tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        probs = net(torch.stack([x for _, x in batch])).float().softmax(1)
        results.extend(top_k_rows([path for path, _ in batch], probs, topk, classes))
        batch.clear()

    for path in images:
        try:
            batch.append((path, transform(load_rgb(path))))
        except (OSError, ValueError) as e:  # not an image, truncated, too large
            skipped[str(path)] = f"{type(e).__name__}: {e}"
            continue
        if len(batch) == batch_size:
            flush()
    flush()
    return results, skipped


def format_predictions(results: Sequence[Prediction]) -> str:
    lines = []
    for r in results:
        lines.append(r["path"])
        lines += [f"  {100 * t['prob']:6.2f} %  {t['name']}" for t in r["top_k"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shufflenet-predict",
        description="Top-k ImageNet (or the weights' own) classes of images, with probabilities.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE|FOLDER", help="image files or folders of images")
    parser.add_argument(
        "--model",
        default=None,
        help="registered model name (default: the network the weights file holds; needed for published weights, "
        "e.g. shufflenet_v1_x1_0_g3)",
    )
    parser.add_argument(
        "--weights",
        required=True,
        help="DEFAULT or a weights name of --model (published weights, downloaded once), or a weights file",
    )
    parser.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the predictions as JSON")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.topk < 1 or args.batch_size < 1:
        raise ClassificationError(f"--topk and --batch-size must be >= 1, got {args.topk} and {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    images = find_images(args.inputs)
    net, transform, classes, info = load_predictor(args.weights, args.model, progress=not args.no_progress)
    results, skipped = predict(net, transform, classes, images, args.topk, args.batch_size)
    for path, reason in skipped.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not results:
        raise ClassificationError(f"none of the {len(images)} images could be read (first: {next(iter(skipped))})")
    print(format_predictions(results))
    if args.json:
        doc = {**info, "top_k": args.topk, "predictions": results, "skipped": skipped}
        try:
            write_json_atomic(doc, args.json)
        except OSError as e:
            raise ClassificationError(f"--json {args.json}: cannot write ({e.strerror or e})") from None
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``shufflenet-predict``."""
    return run_cli(main, argv)
