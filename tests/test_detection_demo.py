"""detection/demo.py (shufflenet-detect-demo): detectron2's demo convention on a real COCO image of tests/data."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image  # noqa: E402

from shufflenet.detection.demo import cli  # noqa: E402

VAL = Path(__file__).resolve().parent / "data" / "coco" / "val2017"
TINY = ["MODEL.SHUFFLENET.NAME", "shufflenet_v1_x0_25_g3", "MODEL.RPN.POST_NMS_TOPK_TEST", "30"]


def test_demo_writes_drawn_png_and_json(tmp_path, capsys):
    image = sorted(VAL.glob("*.jpg"))[0]
    out = tmp_path / "out"
    rc = cli(
        [
            "--config",
            "coco2017_shufflenet1x_300",
            "--input",
            str(image),
            "--output",
            str(out),
            "--confidence-threshold",
            "0.0",
            "--opts",
            *TINY,
        ]
    )  # random weights: threshold 0 keeps their low-score boxes, so something is drawn
    assert rc == 0, capsys.readouterr().err
    png = out / f"{image.stem}.png"
    with Image.open(png) as drawn, Image.open(image) as original:
        assert drawn.format == "PNG" and drawn.size == original.size
        # boxes and labels were drawn: the picture differs from the photo
        assert list(drawn.convert("RGB").getdata()) != list(original.convert("RGB").getdata())
    result = json.loads((out / "detections.json").read_text())
    (record,) = result["images"]
    assert record["image"] == str(image) and record["output"] == str(png)
    dets = record["detections"]
    assert dets and all(d["score"] >= 0.0 for d in dets)
    from detectron2.data import MetadataCatalog

    coco_names = MetadataCatalog.get("coco_2017_val").thing_classes
    assert all(d["class"] == coco_names[d["class_id"]] for d in dets)  # COCO class names, not indices
    w, h = record["width"], record["height"]
    assert all(-1 <= d["box"][0] <= d["box"][2] <= w + 1 and -1 <= d["box"][1] <= d["box"][3] <= h + 1 for d in dets)
    assert "detections.json" in capsys.readouterr().out


def test_demo_bad_input_is_one_line(tmp_path, capsys):
    assert cli(["--config", "demo_shapes", "--input", str(tmp_path / "nope.jpg"), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --input {tmp_path / 'nope.jpg'}: no such image file, folder or pattern"
    assert cli(["--config", "nosuch", "--input", str(VAL), "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown detection config 'nosuch'")
    assert not (tmp_path / "o").exists()
