"""Regenerate the real data the repository carries: ``tests/data`` and the package's sample photos.

    python -m tools.make_test_data --source /path/to/data      # default: $SHUFFLENET_DATA

``--source`` is the larger data folder (``cifar10/{train,test}/<class>/*.jpg`` and ``tiny_coco/``, see
``tests/data/README.md``). What it writes, always the same choice for the same source:

* ``tests/data/cifar10/{train,test}/<class>/`` -- the first ``--train-per-class`` / ``--test-per-class`` files of
  each class folder, sorted by name, copied byte for byte;
* ``tests/data/coco/{train2017,val2017}/`` -- the COCO images listed in ``COCO_TRAIN`` / ``COCO_VAL`` below, copied
  byte for byte, and ``annotations/instances_{train,val}2017.json`` -- the source JSON filtered to those images
  (every other key kept: ``info``, ``licenses``, all ``categories``; each image's annotations, crowd ones too;
  order as in the source);
* ``src/shufflenet/resources/images/<name>.jpg`` -- the COCO photos in ``PHOTOS`` (Flickr licenses that allow
  redistributing a modified copy), resized to 320 px on the short side (PIL, Lanczos, JPEG quality 90, no
  metadata), and ``ATTRIBUTION.md`` naming each one's source and license.

Existing output folders are replaced. Standard library + Pillow only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Train: 360772 and 191381 are the overfit test's two images (one toilet each); 204805 has a crowd box
# (license 7). The others are small files covering many categories.
COCO_TRAIN = (360772, 191381, 204805, 403013, 542145, 328757, 242611, 522418)
# Val: 463730 has a crowd box; 226111 has no annotation at all (as some COCO images); the first three by file
# name have different sizes (the detector export test traces on one and checks the others).
COCO_VAL = (463730, 122745, 37777, 6818, 85329, 308394, 443303, 25560, 226111)

# name -> (split, COCO image id). Licenses 4 (CC BY 2.0), 5 (CC BY-SA 2.0), 7 (no known copyright restrictions).
PHOTOS = {
    "cats": ("val", 555705),
    "elephants": ("val", 286994),
    "dogs": ("train", 173350),
    "train": ("val", 565778),
    "boat": ("train", 204805),
    "cows": ("val", 418281),
}
PHOTO_LICENSES = {4, 5, 7, 8}
SHORT_SIDE = 320
QUALITY = 90


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def make_cifar(src: Path, dst: Path, train: int, test: int) -> int:
    n = 0
    _fresh(dst)
    for split, count in (("train", train), ("test", test)):
        classes = sorted(p.name for p in (src / split).iterdir() if p.is_dir())
        for cls in classes:
            files = sorted(p for p in (src / split / cls).iterdir() if p.suffix.lower() == ".jpg")
            if len(files) < count:
                sys.exit(f"error: {src / split / cls} has {len(files)} images, {count} asked")
            out = dst / split / cls
            out.mkdir(parents=True)
            for f in files[:count]:
                shutil.copyfile(f, out / f.name)
                n += 1
    return n


def _clean_url(url: str) -> str:
    return url.replace("\\/", "/")  # the tiny_coco JSON stores escaped slashes


def make_coco(src: Path, dst: Path) -> dict:
    _fresh(dst)
    (dst / "annotations").mkdir()
    counts = {}
    for split, ids in (("train", COCO_TRAIN), ("val", COCO_VAL)):
        name = f"instances_{split}2017.json"
        content = json.loads((src / "annotations" / name).read_text())
        keep = set(ids)
        images = [im for im in content["images"] if im["id"] in keep]
        missing = keep - {im["id"] for im in images}
        if missing:
            sys.exit(f"error: image id(s) {sorted(missing)} not in {src / 'annotations' / name}")
        content["images"] = images
        content["annotations"] = [a for a in content["annotations"] if a["image_id"] in keep]
        (dst / f"{split}2017").mkdir()
        for im in images:
            shutil.copyfile(src / f"{split}2017" / im["file_name"], dst / f"{split}2017" / im["file_name"])
        (dst / "annotations" / name).write_text(json.dumps(content, separators=(",", ":")) + "\n")
        counts[split] = (len(images), len(content["annotations"]), sum(a["iscrowd"] for a in content["annotations"]))
    if (src / "LICENSE.repo").is_file():
        shutil.copyfile(src / "LICENSE.repo", dst / "LICENSE.repo")
    return counts


def make_photos(src: Path, dst: Path) -> list:
    from PIL import Image

    _fresh(dst)
    meta = {s: json.loads((src / "annotations" / f"instances_{s}2017.json").read_text()) for s in ("train", "val")}
    rows = []
    for name, (split, image_id) in PHOTOS.items():
        content = meta[split]
        im = next(i for i in content["images"] if i["id"] == image_id)
        lic = next(x for x in content["licenses"] if x["id"] == im["license"])
        if im["license"] not in PHOTO_LICENSES:
            sys.exit(f"error: COCO image {image_id} has license {im['license']} ({lic['name']}): not redistributable")
        with Image.open(src / f"{split}2017" / im["file_name"]) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = SHORT_SIDE / min(w, h)
            size = (round(w * scale), round(h * scale))
            img.resize(size, Image.LANCZOS).save(dst / f"{name}.jpg", "JPEG", quality=QUALITY)
        rows.append((f"{name}.jpg", image_id, split, im, lic, (w, h), size))
    lines = [
        "# Sample photos: sources and licenses",
        "",
        "Six photographs from MS-COCO 2017 (Lin et al., 2014; https://cocodataset.org), each from Flickr under the",
        "license its COCO entry names. Each file here is a **modified copy**: resized with Pillow (Lanczos) to",
        f"{SHORT_SIDE} px on the short side and re-encoded as JPEG (quality {QUALITY}, metadata dropped); nothing else",
        "changed. Regenerate with `python -m tools.make_test_data --source DATA` (see `tests/data/README.md`).",
        "",
        "| file | COCO id | original size -> here | license | COCO url | Flickr url |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fname, image_id, split, im, lic, (w, h), (nw, nh) in rows:
        lines.append(
            f"| `{fname}` | {image_id} ({split}2017) | {w}x{h} -> {nw}x{nh} | {lic['name']} ({_clean_url(lic['url'])}) "
            f"| {_clean_url(im['coco_url'])} | {_clean_url(im['flickr_url'])} |"
        )
    lines += [
        "",
        "License ids as in COCO's `licenses` list: 4 = Attribution License (CC BY 2.0), 5 = Attribution-ShareAlike",
        "License (CC BY-SA 2.0; the resized copies are shared under the same license), 7 = No known copyright",
        "restrictions (Flickr Commons). The photographers are the Flickr uploaders of the pages above. COCO's",
        "annotations are CC BY 4.0; none are used here.",
        "",
    ]
    (dst / "ATTRIBUTION.md").write_text("\n".join(lines))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--source",
        default=os.environ.get("SHUFFLENET_DATA"),
        help="data folder with cifar10/ and tiny_coco/ (default: $SHUFFLENET_DATA)",
    )
    p.add_argument("--repo", type=Path, default=REPO, help="repository root to write into (default: this one)")
    p.add_argument("--train-per-class", type=int, default=150)
    p.add_argument("--test-per-class", type=int, default=30)
    args = p.parse_args(argv)
    if not args.source:
        p.error("no --source and SHUFFLENET_DATA is not set")
    src = Path(args.source)
    for sub in ("cifar10/train", "cifar10/test", "tiny_coco/annotations"):
        if not (src / sub).is_dir():
            p.error(f"{src / sub}: no such folder")
    n = make_cifar(src / "cifar10", args.repo / "tests" / "data" / "cifar10", args.train_per_class, args.test_per_class)
    print(f"cifar10: {n} images")
    for split, (ni, na, nc) in make_coco(src / "tiny_coco", args.repo / "tests" / "data" / "coco").items():
        print(f"coco {split}2017: {ni} images, {na} annotations ({nc} crowd)")
    rows = make_photos(src / "tiny_coco", args.repo / "src" / "shufflenet" / "resources" / "images")
    print(f"photos: {', '.join(r[0] for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
