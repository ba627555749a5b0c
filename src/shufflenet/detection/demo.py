"""Detection demo in detectron2's ``demo/demo.py`` convention: images in, images with boxes and class names out.

    python detection/demo.py --config coco_shufflenet2x.yaml --input photo.jpg more/*.jpg --output out/ \\
        --opts MODEL.WEIGHTS model_final.pth
    shufflenet-detect-demo --config demo_shapes --input a.png --output out/ --confidence-threshold 0.3 \\
        --opts MODEL.WEIGHTS outputs/detection/demo_shapes/model_final.pth

Each input image is read in the model's ``INPUT.FORMAT``, resized as at test time (``ResizeShortestEdge``),
detected, and drawn by detectron2's ``Visualizer`` (boxes, class names from the test dataset's metadata,
scores) into ``OUTPUT/<name>.png`` (an image smaller than :data:`MIN_DRAWN_SIZE` on its longer side is drawn
enlarged to it, so that its labels stay readable: a 128 px demo image is drawn at 512 px);
``OUTPUT/detections.json`` lists every image's detections (boxes in the original image's pixels, x0 y0 x1 y1).
``--confidence-threshold`` is ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, as in detectron2's demo. Needs OpenCV
(``opencv-python-headless``, in the ``detection`` extra), which detectron2's ``Visualizer`` imports.
"""

from __future__ import annotations

import argparse
import glob
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import run_cli
from ..fileio import atomic_write, check_output_dir, write_json_atomic
from ..paths import IMAGE_SUFFIXES
from .api import build_detector
from .config import DetectionError, list_configs

__all__ = ["MIN_DRAWN_SIZE", "build_argument_parser", "class_names", "detect_images", "main", "cli"]

#: Longer side, in pixels, at which a smaller image is drawn (boxes and labels scaled with it by the Visualizer).
MIN_DRAWN_SIZE = 512


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Detect objects in images and draw them (detectron2's demo/demo.py convention).",
        epilog=f"Packaged configs: {', '.join(list_configs())}",
    )
    parser.add_argument(
        "--config",
        "--config-file",
        dest="config",
        required=True,
        metavar="NAME|FILE",
        help="a packaged config name (e.g. coco_shufflenet2x.yaml) or a path",
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="IMAGE",
        help="image files, folders or glob patterns ('photos/*.jpg')",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="folder for <image>.png with the detections drawn and detections.json",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimum score of a shown detection (MODEL.ROI_HEADS.SCORE_THRESH_TEST; default 0.5)",
    )
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


def _expand(inputs: Sequence[str]) -> List[Path]:
    files: List[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            matched = sorted(Path(p) for p in glob.glob(os.path.expanduser(item)) if Path(p).is_file())
            if not matched:
                raise DetectionError(f"--input {item}: no such image file, folder or pattern")
            files += matched
    if not files:
        raise DetectionError(f"--input {' '.join(inputs)}: no images found")
    return files


def class_names(cfg) -> List[str]:
    """Class names from the metadata of the config's test (else train) dataset; ``class <i>`` where none."""
    from detectron2.data import MetadataCatalog

    from .data import DEMO_TRAIN, DEMO_VAL, register_demo_datasets

    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    if any(n in (DEMO_TRAIN, DEMO_VAL) for n in names) and DEMO_VAL not in MetadataCatalog.list():
        register_demo_datasets()  # metadata only: the demo images are generated when a dataset is loaded
    for name in names:
        classes = MetadataCatalog.get(name).get("thing_classes", None) if name in MetadataCatalog.list() else None
        if classes:
            return list(classes)
    return [f"class {i}" for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]


def detect_images(model, cfg, files: Sequence[Path], output: Path, log=print) -> List[Dict[str, Any]]:
    """Detect, draw and write ``output/<stem>.png`` per image; returns the per-image detection records."""
    from detectron2.data import MetadataCatalog
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image
    from detectron2.utils.visualizer import Visualizer

    names = class_names(cfg)
    metadata = MetadataCatalog.get("__shufflenet_demo")
    if not metadata.get("thing_classes", None):
        metadata.set(thing_classes=names)
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    records = []
    used = set()
    for path in files:
        try:
            image = read_image(str(path), format=cfg.INPUT.FORMAT)
        except Exception as e:  # PIL's errors for a non-image: skipped, listed
            log(f"skipped {path}: not a readable image ({type(e).__name__})")
            continue
        height, width = image.shape[:2]
        resized = resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
        with torch.no_grad():
            instances = model([{"image": tensor, "height": height, "width": width}])[0]["instances"].to("cpu")
        rgb = image[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else image
        scale = max(1.0, MIN_DRAWN_SIZE / max(height, width))
        drawn = Visualizer(rgb, metadata, scale=scale).draw_instance_predictions(instances).get_image()
        stem = path.stem
        while stem in used:
            stem += "_"
        used.add(stem)
        out_file = output / f"{stem}.png"
        with atomic_write(out_file, "wb") as f:
            Image.fromarray(drawn).save(f, format="PNG")
        boxes = instances.pred_boxes.tensor.tolist()
        dets = [
            {
                "class": names[c] if c < len(names) else str(c),
                "class_id": int(c),
                "score": round(float(s), 4),
                "box": [round(v, 2) for v in b],
            }
            for b, s, c in zip(boxes, instances.scores.tolist(), instances.pred_classes.tolist())
        ]
        records.append(
            {
                "image": str(path),
                "width": width,
                "height": height,
                "output": str(out_file),
                "drawn_scale": round(scale, 4),
                "detections": dets,
            }
        )
        log(f"{path}: {len(dets)} detections -> {out_file}")
    if not records:
        raise DetectionError("--input: none of the files is a readable image")
    return records


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_argument_parser().parse_args(argv)
    if not 0.0 <= args.confidence_threshold <= 1.0:
        raise DetectionError(f"--confidence-threshold {args.confidence_threshold}: expected a score in [0, 1]")
    opts = list(args.opts or [])
    if len(opts) % 2:
        raise DetectionError(f"--opts must be KEY VALUE pairs, got {opts}")
    files = _expand(args.input)
    output = check_output_dir(args.output, "--output", DetectionError)
    try:
        import cv2  # noqa: F401  (detectron2's Visualizer imports it)
    except ImportError:
        raise DetectionError(
            "the demo draws with detectron2's Visualizer, which needs OpenCV: pip install opencv-python-headless "
            "(in the project's detection extra)"
        ) from None
    opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.confidence_threshold), "MODEL.DEVICE", "cpu"]
    model, cfg = build_detector(args.config, opts=opts)
    if not cfg.MODEL.WEIGHTS:
        print("warning: no MODEL.WEIGHTS given: the detector has random weights (pass --opts MODEL.WEIGHTS FILE)")
    output.mkdir(parents=True, exist_ok=True)
    records = detect_images(model, cfg, files, output)
    summary = {
        "config": args.config,
        "weights": cfg.MODEL.WEIGHTS,
        "confidence_threshold": args.confidence_threshold,
        "images": records,
    }
    json_file = write_json_atomic(summary, output / "detections.json")
    print(f"wrote {len(records)} image(s) with detections drawn and {json_file}")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``shufflenet-detect-demo`` / ``detection/demo.py``: :func:`main` through :func:`shufflenet.errors.run_cli`."""
    with warnings.catch_warnings():
        # detectron2's anchor generator calls torch.meshgrid without `indexing`; it means "ij", the default
        warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)
        return run_cli(main, argv)
