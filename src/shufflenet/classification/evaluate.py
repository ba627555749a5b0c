"""``shufflenet-eval RUN`` or ``shufflenet-eval --checkpoint X --data-root Y``: the paper's single-crop evaluation.

Resize the short side to 256, center crop 224 (``--resize-size`` / ``--image-size``), top-1 and top-5
accuracy and error over ``val/`` (or ``test/``) of an ImageNet-layout folder. Writes JSON (atomically) and
prints the result as a row of the paper's tables (model, MFLOPs, top-1 error); the paper's figure is shown
beside it only for ImageNet-scale results (1000 classes, 224-px crops or larger).

``RUN`` / ``--checkpoint`` accepts a run folder of ``shufflenet-train`` (its ``model.pth``, else
``checkpoints/best.ckpt``; the data root and image size come from the run's record, so no other flag is
needed), a Lightning ``.ckpt`` of this project (``--weights ema`` / ``model`` picks the copy; default: EMA
when present), a package weights file (``model.pth`` of a run, or a checkpoint converted with
``shufflenet-convert``, whose stored config rebuilds the exact network), a plain state dict with ``--arch``,
or a registered model name (its pretrained weights where the package has them, else random weights with a
warning). ``--config NAME`` takes the model and image size of a packaged training config. The label order is
the sorted class-folder names (torchvision ImageFolder), which for ImageNet's wnid folders is the standard
order used by the converted checkpoints.

Flags are hyphenated (``--data-root``, ``--batch-size``, ``--image-size``, ``--resize-size``,
``--num-workers``, ``--max-image-pixels``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from ..data.workers import available_cpus
from ..errors import ShuffleNetError, run_cli
from ..fileio import write_json_atomic
from ..models import UnknownModelError, create_model, get_spec, list_models, model_from_weights
from ..weights import NotAWeightsFileError, read_weights
from .data import ImageFolderDataset, eval_transform
from .errors import ClassificationError
from .imagefiles import DEFAULT_MAX_IMAGE_PIXELS, collate, find_split_dirs

__all__ = ["load_classifier", "evaluate", "paper_row", "main", "cli"]


def load_classifier(path: str, arch: Optional[str] = None, weights: str = "auto") -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model stored in ``path`` (or named by it) and load its weights; returns ``(model.eval(), info)``.

    A file is read with :func:`shufflenet.weights.read_weights` (the project's one reader) and its network built
    with :func:`shufflenet.models.model_from_weights`; a registered model name that is not a file goes through
    :func:`shufflenet.models.create_model` (pretrained weights where the package has them, else random weights
    and a warning). ``info`` has ``arch``, ``num_classes``, ``kind`` (lightning / package / state_dict / name),
    ``weights`` (model / ema / stored / pretrained / random) and, for this project's runs, the evaluation
    transform, class names and data root they were trained with.
    """
    if not os.path.exists(path) and path in set(list_models()):
        return _named_model(path)
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
        info.update(image_size=dm.get("image_size"), resize_size=dm.get("resize_size"), data_root=dm.get("root"))
    else:
        tf = wf.meta.get("eval_transform") or {}
        info.update(
            image_size=tf.get("image_size"),
            resize_size=tf.get("resize_size"),
            classes=wf.meta.get("classes"),
            data_root=wf.meta.get("data_root"),
        )
    return model.eval(), info


def _named_model(name: str) -> Tuple[nn.Module, Dict[str, Any]]:
    """A registered model by name: its pretrained weights (``weights="DEFAULT"``) where it has them, else random."""
    try:
        model, kind = create_model(name, weights="DEFAULT"), "pretrained"
    except (ShuffleNetError, OSError):
        print(
            f"warning: {name} has no pretrained weights here: evaluating random weights (expect chance accuracy)",
            file=sys.stderr,
            flush=True,
        )
        model, kind = create_model(name), "random"
    info = {"checkpoint": name, "kind": "name", "weights": kind, "arch": name, "num_classes": _num_classes(model)}
    return model.eval(), info


def find_run_checkpoint(path: Path) -> Path:
    """A run folder's weights: ``model.pth``, else ``checkpoints/best.ckpt``, else ``checkpoints/last.ckpt``."""
    for rel in ("model.pth", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        if (path / rel).is_file():
            return path / rel
    raise ClassificationError(
        f"{path} is a folder but not a run folder of shufflenet-train (no model.pth or checkpoints/*.ckpt); "
        f"give a checkpoint file, a run folder or a model name"
    )


def run_data_root(checkpoint: Path) -> Optional[Path]:
    """The data root the run of ``checkpoint`` trained on, from the run's record (``metrics.json`` or
    ``config.yaml`` of its run folder; ``data.root: null`` is the generated demo dataset)."""
    import json

    import yaml

    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    metrics = run / "metrics.json"
    if metrics.is_file():
        try:
            root = json.loads(metrics.read_text()).get("data_root")
            if root:
                return Path(root)
        except (OSError, ValueError):
            pass
    config = run / "config.yaml"
    if config.is_file():
        try:
            data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
        except (OSError, yaml.YAMLError):
            return None
        if "root" in data:
            if data["root"] is None:
                from .demo import ensure_demo_dataset

                return ensure_demo_dataset()
            return Path(data["root"]).expanduser()
    return None


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
    for x, y, bad in loader:
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


def imagenet_scale(num_classes: Optional[int], image_size: Optional[int]) -> bool:
    """Whether a result can stand beside the paper's ImageNet figures: 1000 classes at 224-px crops or larger."""
    return num_classes == 1000 and (image_size or 0) >= 224


def paper_row(arch: Optional[str], result: Mapping[str, Any], compare: bool = True) -> str:
    """``| ShuffleNet 1x (g=3) | 140 MFLOPs | 32.40 | 11.90 | 32.6 |`` (a row of Tables 2/3/5); the paper's
    column only when ``compare`` (an ImageNet-scale result), else ``-`` and a note."""
    spec = None
    if arch:
        try:
            spec = get_spec(arch)
        except UnknownModelError:
            spec = None
    name = spec.description if spec and spec.description else (arch or "model")
    mflops = f"{spec.paper_mflops:g} MFLOPs" if spec and spec.paper_mflops else "- MFLOPs"
    paper = f"{spec.paper_err:g}" if compare and spec and spec.paper_err is not None else "-"
    row = (
        f"| Model | Complexity | top-1 err (%) | top-5 err (%) | paper top-1 err (%) |\n"
        f"| {name} | {mflops} | {100 * result['top1_err']:.2f} | {100 * result['top5_err']:.2f} | {paper} |"
    )
    if not compare and spec and spec.paper_err is not None:
        row += "\n(the paper's ImageNet figure is not shown: this is not a 1000-class, 224-px evaluation)"
    return row


ACCEPTED = (
    "shufflenet-eval takes a run folder of shufflenet-train, a Lightning .ckpt, a package weights file (model.pth, "
    "a converted checkpoint), a plain state dict with --arch, or a registered model name"
)


def prog_name(argv0: Optional[str] = None) -> str:
    """The command the user typed, for usage lines: ``shufflenet-eval`` or ``classification/evaluate.py``."""
    script = argv0 if argv0 is not None else (sys.argv[0] if sys.argv and sys.argv[0] else "")
    if not script or script in ("-c", "-m"):
        return "shufflenet-eval"
    return script if script.endswith(".py") else os.path.basename(script)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or prog_name(),
        description="Single-crop ImageNet evaluation (resize 256, center crop 224): top-1/top-5 accuracy and error.",
    )
    p.add_argument(
        "run",
        nargs="?",
        default=None,
        help="run folder of shufflenet-train, checkpoint file or model name (same as --checkpoint)",
    )
    p.add_argument(
        "--checkpoint", default=None, help="run folder, Lightning .ckpt, package weights file, state dict or model name"
    )
    p.add_argument(
        "--data-root",
        dest="root",
        default=None,
        help="ImageNet-layout folder (val/<class>/* or test/); default: the run's own data root",
    )
    p.add_argument("--split", default=None, help="folder under the root to evaluate (default: val, else test)")
    p.add_argument("--arch", default=None, help="registered model name (needed for a plain state dict)")
    p.add_argument("--config", default=None, help="a training config (file or packaged name): its model and image size")
    p.add_argument(
        "--weights",
        choices=("auto", "model", "ema"),
        default="auto",
        help="which copy of a Lightning checkpoint to evaluate (auto: EMA when present)",
    )
    p.add_argument("--image-size", type=int, default=None, help="center crop (default: the run's, else 224)")
    p.add_argument("--resize-size", type=int, default=None, help="short-side resize (default: the run's, else 256)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="images with more pixels (read from the header, before decoding) are skipped and counted "
        f"(default {DEFAULT_MAX_IMAGE_PIXELS:,})",
    )
    p.add_argument("--out", default=None, help="JSON file (default: <checkpoint>.eval.json)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def _config_defaults(name: str) -> Dict[str, Any]:
    """``arch``, ``image_size``, ``resize_size`` of a training config (file or packaged name), over base.yaml."""
    import yaml

    from ..paths import configs_dir

    path = Path(name).expanduser()
    if not path.is_file():
        stem = name[:-5] if name.endswith(".yaml") else name
        path = configs_dir("classification") / f"{stem}.yaml"
        if "/" in name or not path.is_file():
            raise ClassificationError(f"--config {name}: no such file, and not a packaged classification config")
    merged: Dict[str, Any] = {}
    for f in (configs_dir("classification") / "base.yaml", path):
        cfg = yaml.safe_load(f.read_text()) or {}
        for section in ("model", "data"):
            merged.update({f"{section}.{k}": v for k, v in (cfg.get(section) or {}).items()})
    return {
        "arch": merged.get("model.arch"),
        "image_size": merged.get("data.image_size"),
        "resize_size": merged.get("data.resize_size"),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Evaluate; prints the result, then writes the JSON (a failed write is one error after the result)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run and args.checkpoint:
        raise ClassificationError(f"give the run or checkpoint once: {args.run!r} and --checkpoint {args.checkpoint!r}")
    target = args.checkpoint or args.run
    if not target:
        parser.error("give a run folder, a checkpoint or a model name (RUN or --checkpoint)")
    if args.batch_size < 1 or args.num_workers < 0 or args.max_image_pixels < 1:
        raise ClassificationError("--batch-size and --max-image-pixels must be >= 1, --num-workers >= 0")
    from_config = _config_defaults(args.config) if args.config else {}
    if Path(target).expanduser().is_dir():
        target = str(find_run_checkpoint(Path(target).expanduser()))
        print(f"evaluating {target}", flush=True)
    out_path = Path(args.out).expanduser() if args.out else Path(str(target) + ".eval.json")
    if out_path.is_dir():
        raise ClassificationError(f"--out {out_path} is a folder; name a JSON file")
    try:
        model, info = load_classifier(target, args.arch or from_config.get("arch"), args.weights)
    except NotAWeightsFileError as e:
        raise ClassificationError(f"{e}; {ACCEPTED}") from None
    if info["kind"] == "name" and not args.out:
        out_path = Path(f"{target}.eval.json")
    if args.root:
        root = Path(args.root).expanduser()
    else:
        found = run_data_root(Path(target)) if info["kind"] != "name" else None
        recorded = info.get("data_root")
        if found is None and recorded:
            found = Path(recorded).expanduser()
        if found is None:
            raise ClassificationError(
                f"{target}: no run record names its data; pass --data-root FOLDER (ImageNet layout: val/<class>/*)"
            )
        root = found
        print(f"data root from the run's record: {root}", flush=True)
    if args.split:
        split_dir = root / args.split
        if not split_dir.is_dir():
            raise ClassificationError(f"--split {args.split}: {split_dir} is not a folder")
    else:
        _, split_dir = find_split_dirs(root)
    image_size = args.image_size or info.get("image_size") or from_config.get("image_size") or 224
    resize_size = args.resize_size or info.get("resize_size") or from_config.get("resize_size") or 256
    dataset = ImageFolderDataset(
        split_dir,
        eval_transform(image_size, resize_size),
        max_image_pixels=args.max_image_pixels,
        replace_unreadable=False,
    )
    if len(dataset.classes) != info["num_classes"]:
        raise ClassificationError(
            f"{target} has {info['num_classes']} classes but {split_dir} has {len(dataset.classes)} "
            f"class folders; evaluate on a dataset with the classes the model was trained on"
        )
    if info.get("classes") and list(info["classes"]) != dataset.classes:
        raise ClassificationError(
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
    print(paper_row(info.get("arch"), result, compare=imagenet_scale(info["num_classes"], image_size)))
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
