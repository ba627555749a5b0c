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

from ..models import InvalidConfigError, UnknownModelError, create_model, get_spec
from ..convert import load_converted
from ..weights import WeightsError, extract_state_dict, load_state_dict_strict, read_checkpoint
from ..fileio import write_json_atomic
from .data import ImageFolderDataset, collate, eval_transform, find_split_dirs
from .errors import CheckpointMismatchError, ClassificationError

__all__ = ["load_classifier", "evaluate", "paper_row", "main"]


def load_classifier(path: str, arch: Optional[str] = None, weights: str = "auto") -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model stored in ``path`` and load its weights; returns ``(model.eval(), info)``.

    ``info`` has ``arch``, ``num_classes``, ``kind`` (lightning / package / state_dict), ``weights`` (model /
    ema) and, for this project's runs, the evaluation transform and class names they were trained with.
    """
    obj = read_checkpoint(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    info: Dict[str, Any] = {"checkpoint": str(path)}
    if "pytorch-lightning_version" in obj or "hyper_parameters" in obj:
        hp = obj.get("hyper_parameters", {})
        sd = obj.get("state_dict", {})
        has_ema = any(k.startswith("model_ema.module.") for k in sd)
        use = "ema" if (weights == "ema" or (weights == "auto" and has_ema)) else "model"
        if use == "ema" and not has_ema:
            raise WeightsError(f"{path}: --weights ema, but the checkpoint has no EMA weights (model.ema was off)")
        prefix = "model_ema.module." if use == "ema" else "model."
        arch = arch or hp.get("arch")
        if arch is None:
            raise WeightsError(f"{path}: no 'arch' in the checkpoint's hyper_parameters; pass --arch")
        num_classes = int(hp.get("num_classes", 1000))
        model = create_model(arch, num_classes=num_classes, **(hp.get("model_kwargs") or {}))
        load_state_dict_strict(model, {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, str(path))
        dm = obj.get("datamodule_hyper_parameters", {})
        info.update(kind="lightning", weights=use, arch=arch, num_classes=num_classes,
                    image_size=dm.get("image_size"), resize_size=dm.get("resize_size"))
    elif obj.get("format", "").startswith("shufflenet-weights"):
        config, stored_arch = obj.get("config"), obj.get("arch")
        arch = arch or stored_arch
        sd = extract_state_dict(obj, str(path))
        if isinstance(config, Mapping) and "groups" in config:
            model = load_converted(path)  # the exact stored network (converted megvii/mmpretrain models included)
        elif arch is not None:
            fc = [v for k, v in sd.items() if v.ndim == 2]
            model = create_model(arch, num_classes=int(fc[-1].shape[0]) if fc else 1000)
            load_state_dict_strict(model, sd, str(path))
        else:
            raise WeightsError(f"{path}: weights file has neither a config nor an arch; pass --arch")
        meta = obj.get("meta") or {}
        tf = meta.get("eval_transform") or {}
        info.update(kind="package", weights="stored", arch=arch, num_classes=_num_classes(model),
                    image_size=tf.get("image_size"), resize_size=tf.get("resize_size"), classes=meta.get("classes"))
    else:
        if arch is None:
            raise WeightsError(f"{path}: a plain state dict does not say its architecture; pass --arch NAME")
        sd = extract_state_dict(obj, str(path))
        fc = [v for k, v in sd.items() if v.ndim == 2]
        model = create_model(arch, num_classes=int(fc[-1].shape[0]) if fc else 1000)
        load_state_dict_strict(model, sd, str(path))
        info.update(kind="state_dict", weights="stored", arch=arch, num_classes=_num_classes(model))
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
        logits = model(x)
        top1.update(logits, y)
        top5.update(logits, y)
        n += len(y)
        for entry in bad:
            p, _, reason = entry.partition(": ")
            skipped.setdefault(p, reason)
        if progress:
            print(f"\r  {n}/{len(loader.dataset)} images, top-1 {100 * float(top1.compute()):.2f} %",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    a1, a5 = float(top1.compute()), float(top5.compute())
    return {"top1": a1, "top5": a5, "top1_err": 1 - a1, "top5_err": 1 - a5, "num_images": n,
            "seconds": time.perf_counter() - t0, "skipped_images": skipped, "num_skipped_images": len(skipped)}


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
    return (f"| Model | Complexity | top-1 err (%) | top-5 err (%) | paper top-1 err (%) |\n"
            f"| {name} | {mflops} | {100 * result['top1_err']:.2f} | {100 * result['top5_err']:.2f} | {paper} |")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="classification/evaluate.py",
        description="Single-crop ImageNet evaluation (resize 256, center crop 224): top-1/top-5 accuracy and error.",
    )
    p.add_argument("--checkpoint", required=True, help="Lightning .ckpt, package weights file or state dict")
    p.add_argument("--data.root", dest="root", required=True, help="ImageNet-layout folder (val/<class>/* or test/)")
    p.add_argument("--split", default=None, help="folder under the root to evaluate (default: val, else test)")
    p.add_argument("--arch", default=None, help="registered model name (needed for a plain state dict)")
    p.add_argument("--weights", choices=("auto", "model", "ema"), default="auto",
                   help="which copy of a Lightning checkpoint to evaluate (auto: EMA when present)")
    p.add_argument("--image_size", type=int, default=None, help="center crop (default: the run's, else 224)")
    p.add_argument("--resize_size", type=int, default=None, help="short-side resize (default: the run's, else 256)")
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON file (default: <checkpoint>.eval.json)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
        dataset = ImageFolderDataset(split_dir, eval_transform(image_size, resize_size))
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
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate)
        result = evaluate(model, loader, info["num_classes"], progress=args.progress)
    except (ClassificationError, WeightsError, InvalidConfigError, UnknownModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = {**{k: v for k, v in info.items() if k != "classes"}, "data": str(split_dir),
           "protocol": f"resize {resize_size}, center crop {image_size}", **result}
    out_path = Path(args.out) if args.out else Path(str(args.checkpoint) + ".eval.json")
    write_json_atomic(out, out_path)
    print(paper_row(info.get("arch"), result))
    print(f"top-1 {100 * result['top1']:.2f} %  top-5 {100 * result['top5']:.2f} %  on {result['num_images']} images "
          f"({out['protocol']}); skipped unreadable: {result['num_skipped_images']}")
    print(f"results: {out_path}")
    return 0
