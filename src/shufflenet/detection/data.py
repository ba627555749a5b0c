"""Datasets: COCO-format registration with checks, detectron2's builtin COCO names, and the demo data.

* :func:`register_coco` registers any COCO instances json + image folder (what ``--register-coco`` does).
  Its loader is detectron2's ``load_coco_json`` plus checks: a missing/empty/invalid json and images
  listed but absent are one clear message each.
* :func:`prepare_datasets` checks every dataset a config names before anything is built: unknown names
  list the registered ones; detectron2's builtin COCO names (``coco_2014_minival``, ``coco_2017_val`` ...)
  are resolved under ``$DETECTRON2_DATASETS`` *as it is now* (detectron2 reads it once at import), and a
  missing folder prints the expected layout; training sets need at least one usable (non-crowd) box.
* The demo: ``shufflenet_demo_train`` / ``shufflenet_demo_val``, rendered shapes (circle, square,
  triangle) with exact boxes, generated on first use into ``$SHUFFLENET_CACHE/detection-demo-v2``
  (default ``~/.cache/shufflenet``). Written to a temporary folder and renamed: never half-written.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..paths import cache_dir
from .config import DetectionError

__all__ = [
    "DatasetError",
    "BUILTIN_COCO",
    "DEMO_TRAIN",
    "DEMO_VAL",
    "DEMO_CLASSES",
    "register_coco",
    "load_coco_checked",
    "prepare_datasets",
    "datasets_root",
    "demo_root",
    "ensure_demo_data",
    "register_demo_datasets",
    "coco_layout_help",
    "check_trainable",
]

logger = logging.getLogger(__name__)


class DatasetError(DetectionError):
    pass


#: detectron2's builtin COCO detection splits (image folder, annotation json) under $DETECTRON2_DATASETS.
BUILTIN_COCO: Dict[str, Tuple[str, str]] = {
    "coco_2014_train": ("coco/train2014", "coco/annotations/instances_train2014.json"),
    "coco_2014_val": ("coco/val2014", "coco/annotations/instances_val2014.json"),
    "coco_2014_minival": ("coco/val2014", "coco/annotations/instances_minival2014.json"),
    "coco_2014_minival_100": ("coco/val2014", "coco/annotations/instances_minival2014_100.json"),
    "coco_2014_valminusminival": ("coco/val2014", "coco/annotations/instances_valminusminival2014.json"),
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
    "coco_2017_val_100": ("coco/val2017", "coco/annotations/instances_val2017_100.json"),
}

DEMO_TRAIN = "shufflenet_demo_train"
DEMO_VAL = "shufflenet_demo_val"
DEMO_CLASSES = ("circle", "square", "triangle")
_DEMO_VERSION = "detection-demo-v2"


def datasets_root() -> Path:
    """``$DETECTRON2_DATASETS`` (detectron2's default: ``./datasets``), resolved now."""
    return Path(os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))).resolve()


def coco_layout_help() -> str:
    return (
        "detectron2 finds its builtin COCO datasets under $DETECTRON2_DATASETS (default ./datasets; now "
        f"{datasets_root()}). Expected layout:\n"
        "  $DETECTRON2_DATASETS/coco/annotations/instances_{train,val}2014.json\n"
        "  $DETECTRON2_DATASETS/coco/annotations/instances_{minival,valminusminival}2014.json\n"
        "  $DETECTRON2_DATASETS/coco/annotations/instances_{train,val}2017.json\n"
        "  $DETECTRON2_DATASETS/coco/{train2014,val2014,train2017,val2017}/*.jpg\n"
        "Set DETECTRON2_DATASETS to the folder that holds coco/, or register a COCO-format dataset under "
        "your own name with --register-coco NAME JSON IMAGE_DIR."
    )


def load_coco_checked(json_file: str, image_root: str, name: str) -> List[dict]:
    """detectron2's ``load_coco_json`` with clear errors for bad files and missing images."""
    json_path = Path(json_file)
    if not json_path.is_file():
        raise DatasetError(f"dataset {name!r}: annotation file {json_path} not found")
    if json_path.stat().st_size == 0:
        raise DatasetError(
            f"dataset {name!r}: annotation file {json_path} is empty (0 bytes); expected a COCO instances "
            f"json with 'images', 'annotations' and 'categories'"
        )
    if not Path(image_root).is_dir():
        raise DatasetError(f"dataset {name!r}: image folder {image_root} not found")
    try:
        with open(json_path) as f:
            content = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(f"dataset {name!r}: {json_path} is not valid JSON ({e})") from None
    missing_keys = [k for k in ("images", "annotations", "categories") if k not in content]
    if not isinstance(content, dict) or missing_keys:
        raise DatasetError(
            f"dataset {name!r}: {json_path} is not a COCO instances file (missing {missing_keys or 'a dict'})"
        )
    if not content["categories"]:
        raise DatasetError(f"dataset {name!r}: {json_path} lists no categories")
    del content
    try:
        dicts = load_coco_json(str(json_path), str(image_root), name)
    except (KeyError, AssertionError, ValueError) as e:
        raise DatasetError(f"dataset {name!r}: {json_path} cannot be read as COCO instances ({e!r})") from None
    missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
    if missing:
        raise DatasetError(
            f"dataset {name!r}: {len(missing)} image(s) listed in {json_path} are missing, e.g. {missing[0]}"
            + (f" and {missing[1]}" if len(missing) > 1 else "")
        )
    return dicts


def register_coco(name: str, json_file: str, image_root: str, metadata: Optional[dict] = None) -> None:
    """Register a COCO-format dataset (json + image folder) under ``name``; replaces an older entry."""
    json_file, image_root = str(Path(json_file).expanduser().resolve()), str(Path(image_root).expanduser().resolve())
    if not Path(json_file).is_file():
        raise DatasetError(f"--register-coco {name}: annotation file {json_file} not found")
    if not Path(image_root).is_dir():
        raise DatasetError(f"--register-coco {name}: image folder {image_root} not found")
    _register(name, json_file, image_root, metadata or {})


def _register(name: str, json_file: str, image_root: str, metadata: dict) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        old = MetadataCatalog.get(name).as_dict()
        MetadataCatalog.remove(name)
        metadata = {**{k: v for k, v in old.items() if k not in ("name", "json_file", "image_root")}, **metadata}
    metadata = {k: v for k, v in metadata.items() if k not in ("name", "json_file", "image_root", "evaluator_type")}
    DatasetCatalog.register(name, lambda: load_coco_checked(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)


def _check_builtin(name: str) -> None:
    image_dir, json_rel = BUILTIN_COCO[name]
    root = datasets_root()
    json_file, image_root = root / json_rel, root / image_dir
    missing = [str(p) for p in (json_file, image_root) if not p.exists()]
    if missing:
        raise DatasetError(
            f"dataset {name!r} (detectron2 builtin) not found: missing {' and '.join(missing)}.\n" + coco_layout_help()
        )
    _register(name, str(json_file), str(image_root), {})  # $DETECTRON2_DATASETS as it is now, checked loader


def prepare_datasets(cfg, training: bool = True) -> None:
    """Check (and, for the demo, generate) every dataset in ``cfg.DATASETS``; raise one clear message.

    Every COCO-json dataset is (re-)registered with :func:`load_coco_checked` as its loader.
    """
    names = (list(cfg.DATASETS.TRAIN) if training else []) + list(cfg.DATASETS.TEST)
    for name in dict.fromkeys(names):
        if name in (DEMO_TRAIN, DEMO_VAL):
            if name not in DatasetCatalog.list():
                register_demo_datasets()
            ensure_demo_data(Path(MetadataCatalog.get(name).demo_root))
            continue
        if name in BUILTIN_COCO:
            _check_builtin(name)
            continue
        if name not in DatasetCatalog.list():
            coco_like = sorted(n for n in DatasetCatalog.list() if n.startswith(("coco_2014", "coco_2017")))
            raise DatasetError(
                f"dataset {name!r} is not registered. Register a COCO-format dataset with "
                f"--register-coco {name} JSON IMAGE_DIR (or shufflenet.detection.register_coco). Registered: "
                f"{', '.join([DEMO_TRAIN, DEMO_VAL] + coco_like)}, ... ({len(DatasetCatalog.list())} in all)"
            )
        meta = MetadataCatalog.get(name)
        json_file, image_root = getattr(meta, "json_file", None), getattr(meta, "image_root", None)
        if json_file and image_root:
            for path, what in ((json_file, "annotation file"), (image_root, "image folder")):
                if not Path(path).exists():
                    raise DatasetError(f"dataset {name!r}: {what} {path} not found")
            if getattr(meta, "evaluator_type", None) == "coco":
                _register(name, json_file, image_root, {})  # route through the checked loader
    if training:
        for name in dict.fromkeys(cfg.DATASETS.TRAIN):
            json_file = getattr(MetadataCatalog.get(name), "json_file", None)
            # Small files are checked now (one message before any process starts); a large one (full
            # COCO) is loaded once, by the trainer, which runs the same check (engine.Trainer).
            if not json_file or not Path(json_file).is_file() or Path(json_file).stat().st_size < EARLY_CHECK_BYTES:
                check_trainable(name, DatasetCatalog.get(name))


#: Training jsons below this size are loaded and checked by :func:`prepare_datasets` (before training).
EARLY_CHECK_BYTES = 50 * 1024 * 1024


def check_trainable(name: str, dicts: Sequence[dict]) -> None:
    """A training set needs at least one box that detectron2 trains on (non-crowd, non-zero area)."""
    for d in dicts:
        for a in d.get("annotations", ()):
            if not a.get("iscrowd", 0) and len(a.get("bbox", ())) == 4 and a["bbox"][2] > 0 and a["bbox"][3] > 0:
                return
    raise DatasetError(
        f"dataset {name!r} has no usable box for training: its {len(dicts)} image(s) have no annotation that is "
        f"non-crowd with a non-zero-area bbox (detectron2 trains on those only; crowd boxes are ignored "
        f"regions and zero-area boxes are dropped). It can still be used in DATASETS.TEST."
    )


# --- demo data: rendered shapes ------------------------------------------------------------------------


def demo_root() -> Path:
    """Where the demo data lives: the project's one cache folder (:func:`shufflenet.paths.cache_dir`)."""
    return cache_dir(_DEMO_VERSION)


def _render_image(rng: random.Random, size: int) -> Tuple[object, List[dict]]:
    from PIL import Image, ImageDraw, ImageFilter

    top = tuple(rng.randint(0, 255) for _ in range(3))
    bottom = tuple(rng.randint(0, 255) for _ in range(3))
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for y in range(size):  # vertical gradient background
        t = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(rng.randint(0, 4)):  # clutter: thin lines (not objects)
        pts = [(rng.randint(0, size), rng.randint(0, size)) for _ in range(2)]
        draw.line(pts, fill=tuple(rng.randint(0, 255) for _ in range(3)), width=rng.randint(1, 2))
    boxes: List[List[float]] = []
    anns = []
    for _ in range(rng.randint(1, 3)):
        for _attempt in range(20):
            s = rng.randint(size // 5, size // 2)  # 25-64 px at 128: a few cells of the stride-16 map
            x0, y0 = rng.randint(0, size - s), rng.randint(0, size - s)
            box = [x0, y0, x0 + s, y0 + s]
            if all(_iou(box, b) < 0.1 for b in boxes):
                break
        else:
            continue
        cls = rng.randrange(len(DEMO_CLASSES))
        color = tuple(rng.randint(0, 255) for _ in range(3))
        if cls == 0:
            draw.ellipse(box, fill=color)
            bbox = box
        elif cls == 1:
            draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=color)
            bbox = box
        else:
            pts = [(x0 + s / 2, y0), (x0, y0 + s - 1), (x0 + s - 1, y0 + s - 1)]
            draw.polygon(pts, fill=color)
            bbox = [x0, y0, x0 + s, y0 + s]
        boxes.append(box)
        anns.append({"category_id": cls + 1, "bbox": [bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1]]})
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    return img, anns


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _write_split(folder: Path, split: str, count: int, seed: int, size: int) -> None:
    rng = random.Random(seed)
    (folder / split).mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        img, anns = _render_image(rng, size)
        file_name = f"{i:05d}.png"
        img.save(folder / split / file_name)
        images.append({"id": i + 1, "file_name": file_name, "width": size, "height": size})
        for a in anns:
            w, h = a["bbox"][2], a["bbox"][3]
            annotations.append({**a, "id": len(annotations) + 1, "image_id": i + 1, "area": float(w * h), "iscrowd": 0})
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(DEMO_CLASSES)]
    (folder / "annotations").mkdir(exist_ok=True)
    with open(folder / "annotations" / f"{split}.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def ensure_demo_data(root: Optional[Path] = None, num_train: int = 600, num_val: int = 100, size: int = 128) -> Path:
    """Generate the demo data once (atomic: temp folder + rename); returns its folder."""
    root = Path(root) if root is not None else demo_root()
    if (root / "annotations" / "val.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        # Printed (not logged): this runs before detectron2's logger is set up by the trainer.
        print(f"Generating the detection demo data ({num_train} + {num_val} images) in {root} ...", file=sys.stderr)
        _write_split(tmp, "train", num_train, seed=1, size=size)
        _write_split(tmp, "val", num_val, seed=2, size=size)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / "annotations" / "val.json").is_file():  # not another process winning the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def register_demo_datasets(root: Optional[Path] = None) -> None:
    """Register ``shufflenet_demo_train`` / ``shufflenet_demo_val`` (data generated on first use)."""
    root = Path(root) if root is not None else demo_root()
    for name, split in ((DEMO_TRAIN, "train"), (DEMO_VAL, "val")):
        json_file, image_root = str(root / "annotations" / f"{split}.json"), str(root / split)

        def load(json_file=json_file, image_root=image_root, name=name) -> List[dict]:
            ensure_demo_data(root)
            return load_coco_checked(json_file, image_root, name)

        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=list(DEMO_CLASSES),
            demo_root=str(root),
        )
