"""``python classification/evaluate.py --checkpoint X --data.root Y``: the paper's single-crop evaluation.

Resize the short side to 256, center crop 224 (``--resize_size`` / ``--image_size``), top-1 and top-5
accuracy and error over ``val/`` (or ``test/``) of an ImageNet-layout folder. Writes JSON (atomically) and
prints the result as a row of the paper's tables (model, MFLOPs, top-1 error) beside the paper's figure.

``--checkpoint`` accepts a Lightning ``.ckpt`` of this project (``--weights ema`` / ``model`` picks the
copy; default: EMA when present), a package weights file (``model.pth`` of a run, or a checkpoint converted
with ``python -m shufflenet.convert``, whose stored config rebuilds the exact network), or a plain
state dict with ``--arch``. The label order is the sorted class-folder names (torchvision ImageFolder),
which for ImageNet's wnid folders is the standard order used by the converted checkpoints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from ..errors import run_cli
from ..fileio import write_json_atomic
from ..models import UnknownModelError, get_spec, model_from_weights
from ..weights import read_weights
from .data import DEFAULT_MAX_IMAGE_PIXELS, ImageFolderDataset, available_cpus, collate, eval_transform, find_split_dirs
from .errors import CheckpointMismatchError, ClassificationError

__all__ = ["load_classifier", "evaluate", "paper_row", "main", "cli"]


def load_classifier(path: str, arch: Optional[str] = None, weights: str = "auto") -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model stored in ``path`` and load its weights; returns ``(model.eval(), info)``.

    Reads the file with :func:`shufflenet.weights.read_weights` (the project's one reader) and builds the
    network with :func:`shufflenet.models.model_from_weights`. ``info`` has ``arch``, ``num_classes``,
    ``kind`` (lightning / package / state_dict), ``weights`` (model / ema / stored) and, for this project's
    runs, the evaluation transform and class names they were trained with.
    """
    wf = read_weights(path, use=weights if weights in ("model", "ema") else "auto")
    if wf.kind != "lightning" and weights == "ema":
        raise ClassificationError(f"{path}: --weights ema applies to a Lightning checkpoint; this is a {wf.kind} file")
    model = model_from_weights(wf, name=arch if wf.config is None else None)
    info: Dict[str, Any] = {
        "checkpoint": str(path),
        "kind": wf.kind,
        "weights": wf.weights,
        "arch": arch or wf.arch,
        "num_classes": _num_classes(model),
    }
    if wf.kind == "lightning":
        dm = wf.hparams.get("datamodule") or {}
        info.update(image_size=dm.get("image_size"), resize_size=dm.get("resize_size"))
    else:
        tf = wf.meta.get("eval_transform") or {}
        info.update(image_size=tf.get("image_size"), resize_size=tf.get("resize_size"), classes=wf.meta.get("classes"))
    return model.eval(), info


def _num_classes(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if n is None:
        n = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
    return int(n)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, progress: bool = True) -> Dict[str, Any]:
    top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
    top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
    skipped: Dict[str, str] = {}
    n, t0 = 0, time.perf_counter()
    for i, (x, y, bad) in enumerate(loader):
        if len(y):  # unreadable images are dropped from the batch (counted once, below), never replaced
            logits = model(x)
            top1.update(logits, y)
            top5.update(logits, y)
            n += len(y)
        for entry in bad:
            p, _, reason = entry.partition(": ")
            skipped.setdefault(p, reason)
        if progress:
            print(
                f"\r  {n}/{len(loader.dataset)} images, top-1 {100 * float(top1.compute()):.2f} %",
                end="",
                file=sys.stderr,
                flush=True,
            )
    if progress:
        print(file=sys.stderr)
    if n == 0:
        raise ClassificationError(f"{loader.dataset.root}: none of its {len(loader.dataset)} images could be read")
    a1, a5 = float(top1.compute()), float(top5.compute())
    return {
        "top1": a1,
        "top5": a5,
        "top1_err": 1 - a1,
        "top5_err": 1 - a5,
        "num_images": n,
        "seconds": time.perf_counter() - t0,
        "skipped_images": skipped,
        "num_skipped_images": len(skipped),
    }


def paper_row(arch: Optional[str], result: Mapping[str, Any]) -> str:
    """``| ShuffleNet 1x (g=3) | 140 MFLOPs | 32.40 | paper 32.6 |`` (a row of Tables 2/3/5)."""
    spec = None
    if arch:
        try:
            spec = get_spec(arch)
        except UnknownModelError:
            spec = None
    name = spec.description if spec and spec.description else (arch or "model")
    mflops = f"{spec.paper_mflops:g} MFLOPs" if spec and spec.paper_mflops else "- MFLOPs"
    paper = f"{spec.paper_err:g}" if spec and spec.paper_err is not None else "-"
    return (
        f"| Model | Complexity | top-1 err (%) | top-5 err (%) | paper top-1 err (%) |\n"
        f"| {name} | {mflops} | {100 * result['top1_err']:.2f} | {100 * result['top5_err']:.2f} | {paper} |"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="classification/evaluate.py",
        description="Single-crop ImageNet evaluation (resize 256, center crop 224): top-1/top-5 accuracy and error.",
    )
    p.add_argument("--checkpoint", required=True, help="Lightning .ckpt, package weights file or state dict")
    p.add_argument("--data.root", dest="root", required=True, help="ImageNet-layout folder (val/<class>/* or test/)")
    p.add_argument("--split", default=None, help="folder under the root to evaluate (default: val, else test)")
    p.add_argument("--arch", default=None, help="registered model name (needed for a plain state dict)")
    p.add_argument(
        "--weights",
        choices=("auto", "model", "ema"),
        default="auto",
        help="which copy of a Lightning checkpoint to evaluate (auto: EMA when present)",
    )
    p.add_argument("--image_size", type=int, default=None, help="center crop (default: the run's, else 224)")
    p.add_argument("--resize_size", type=int, default=None, help="short-side resize (default: the run's, else 256)")
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument(
        "--max_image_pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="images with more pixels (read from the header, before decoding) are skipped and counted "
        f"(default {DEFAULT_MAX_IMAGE_PIXELS:,})",
    )
    p.add_argument("--out", default=None, help="JSON file (default: <checkpoint>.eval.json)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Evaluate; prints the result, then writes the JSON (a failed write is one error after the result)."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.num_workers < 0 or args.max_image_pixels < 1:
        raise ClassificationError("--batch_size and --max_image_pixels must be >= 1, --num_workers >= 0")
    out_path = Path(args.out).expanduser() if args.out else Path(str(args.checkpoint) + ".eval.json")
    if out_path.is_dir():
        raise ClassificationError(f"--out {out_path} is a folder; name a JSON file")
    model, info = load_classifier(args.checkpoint, args.arch, args.weights)
    root = Path(args.root).expanduser()
    if args.split:
        split_dir = root / args.split
        if not split_dir.is_dir():
            raise ClassificationError(f"--split {args.split}: {split_dir} is not a folder")
    else:
        _, split_dir = find_split_dirs(root)
    image_size = args.image_size or info.get("image_size") or 224
    resize_size = args.resize_size or info.get("resize_size") or 256
    dataset = ImageFolderDataset(
        split_dir,
        eval_transform(image_size, resize_size),
        max_image_pixels=args.max_image_pixels,
        replace_unreadable=False,
    )
    if len(dataset.classes) != info["num_classes"]:
        raise CheckpointMismatchError(
            f"{args.checkpoint} has {info['num_classes']} classes but {split_dir} has {len(dataset.classes)} "
            f"class folders; evaluate on a dataset with the classes the model was trained on"
        )
    if info.get("classes") and list(info["classes"]) != dataset.classes:
        raise CheckpointMismatchError(
            f"{split_dir}: class folders {dataset.classes[:5]}... differ from the model's classes "
            f"{list(info['classes'])[:5]}..."
        )
    workers = min(args.num_workers, available_cpus())
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers, collate_fn=collate)
    result = evaluate(model, loader, info["num_classes"], progress=args.progress)
    out = {
        **{k: v for k, v in info.items() if k != "classes"},
        "data": str(split_dir),
        "protocol": f"resize {resize_size}, center crop {image_size}",
        **result,
    }
    print(paper_row(info.get("arch"), result))
    print(
        f"top-1 {100 * result['top1']:.2f} %  top-5 {100 * result['top5']:.2f} %  on {result['num_images']} images "
        f"({out['protocol']}); skipped unreadable: {result['num_skipped_images']}",
        flush=True,
    )
    try:
        write_json_atomic(out, out_path)
    except OSError as e:
        raise ClassificationError(
            f"cannot write the results to {out_path}: {e.strerror or e} (the result is "
            f"printed above; pass --out to write them elsewhere)"
        ) from None
    print(f"results: {out_path}")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``classification/evaluate.py`` and the ``shufflenet-eval`` console script."""
    return run_cli(main, argv)
