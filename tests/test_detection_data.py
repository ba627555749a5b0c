"""Detection datasets on the repository's real COCO slice (tests/data/coco): registration, bad input, evaluation."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog, get_detection_dataset_dicts  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from proc import run as watched_run

import shufflenet.detection as det  # noqa: E402
from shufflenet.detection import data as ddata  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COCO = REPO / "tests" / "data" / "coco"  # the conftest's coco_root (module-level: used in helpers below)
VAL_JSON = COCO / "annotations" / "instances_val2017.json"
VAL_IMAGES = COCO / "val2017"


def _cfg(train=(), test=(), opts=()):
    return det.get_detection_cfg(
        "coco_shufflenet1x_300",
        ["DATASETS.TRAIN", str(tuple(train)), "DATASETS.TEST", str(tuple(test)), *opts],
    )


def _write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


@pytest.fixture(scope="module")
def val_json():
    return json.loads(VAL_JSON.read_text())


def test_builtin_names_resolve_under_detectron2_datasets(coco_datasets_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(coco_datasets_root))
    cfg = _cfg(train=["coco_2017_val"], test=["coco_2017_val"])
    ddata.prepare_datasets(cfg)
    dicts = DatasetCatalog.get("coco_2017_val")
    assert len(dicts) == 9 and all(Path(d["file_name"]).is_file() for d in dicts)
    meta = MetadataCatalog.get("coco_2017_val")
    assert len(meta.thing_classes) == 80 and meta.evaluator_type == "coco"
    assert sum(len(d["annotations"]) for d in dicts) == 51


def test_missing_dataset_folder_names_detectron2_datasets_and_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(det.DatasetError) as info:
        ddata.prepare_datasets(_cfg(train=["coco_2014_train"], test=["coco_2014_minival"]))
    msg = str(info.value)
    assert "DETECTRON2_DATASETS" in msg and str(tmp_path / "nowhere") in msg
    assert "coco/annotations/instances_train2014.json" in msg and "coco/{train2014,val2014" in msg


def test_cli_missing_dataset_folder(tmp_path):
    proc = watched_run(
        [sys.executable, str(REPO / "detection" / "train_net.py"), "--config", "coco_shufflenet1x_300"],
        cwd=tmp_path,
        env={**__import__("os").environ, "DETECTRON2_DATASETS": str(tmp_path / "nowhere")},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: dataset 'coco_2014_train' (detectron2 builtin) not found")
    assert "DETECTRON2_DATASETS" in proc.stderr and "Traceback" not in proc.stderr


def test_unregistered_dataset_name():
    with pytest.raises(det.DatasetError, match="'my_set' is not registered.*--register-coco my_set"):
        ddata.prepare_datasets(_cfg(train=["my_set"]))


def test_image_listed_but_absent(tmp_path, val_json):
    content = copy.deepcopy(val_json)
    content["images"].append({**content["images"][0], "id": 999999999, "file_name": "000000000042.jpg"})
    det.register_coco("tiny_missing_image", _write_json(tmp_path / "a.json", content), VAL_IMAGES)
    with pytest.raises(det.DatasetError, match=r"1 image\(s\) listed in .*a.json are missing, e.g. .*000000000042.jpg"):
        DatasetCatalog.get("tiny_missing_image")


def test_empty_annotation_file(tmp_path):
    (tmp_path / "empty.json").write_text("")
    det.register_coco("tiny_empty_file", tmp_path / "empty.json", VAL_IMAGES)
    with pytest.raises(det.DatasetError, match="empty.json is empty"):
        DatasetCatalog.get("tiny_empty_file")
    with pytest.raises(det.DatasetError, match="not found"):
        det.register_coco("tiny_absent", tmp_path / "absent.json", VAL_IMAGES)


def test_annotation_file_without_annotations(tmp_path, val_json):
    """No boxes at all: nothing to train on (one message); evaluation gives NaN AP as detectron2 does."""
    content = {**val_json, "images": val_json["images"][:2], "annotations": []}
    det.register_coco("tiny_no_boxes", _write_json(tmp_path / "none.json", content), VAL_IMAGES)
    with pytest.raises(det.DatasetError, match="'tiny_no_boxes' has no usable.*non-crowd"):
        ddata.prepare_datasets(_cfg(train=["tiny_no_boxes"]))
    ddata.prepare_datasets(_cfg(test=["tiny_no_boxes"]), training=False)  # evaluation may use it
    assert len(DatasetCatalog.get("tiny_no_boxes")) == 2
    from detectron2.evaluation import COCOEvaluator

    ev = COCOEvaluator(
        "tiny_no_boxes",
        tasks=("bbox",),
        distributed=False,
        output_dir=str(tmp_path / "ev"),
        use_fast_impl=det.HAS_COMPILED_OPS,
    )
    ev.reset()
    d = DatasetCatalog.get("tiny_no_boxes")[0]
    inst = Instances(
        (d["height"], d["width"]),
        pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 50.0, 50.0]])),
        scores=torch.tensor([0.9]),
        pred_classes=torch.tensor([0]),
    )
    ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    res = ev.evaluate()
    assert math.isnan(res["bbox"]["AP"])


def test_zero_area_and_crowd_boxes_are_dropped_for_training(tmp_path, val_json):
    content = copy.deepcopy(val_json)
    images = content["images"][:3]
    ids = [im["id"] for im in images]
    anns = [a for a in content["annotations"] if a["image_id"] == ids[0] and not a["iscrowd"]][:2]
    zero = {**anns[0], "id": 10**9, "bbox": [30.0, 40.0, 0.0, 12.0], "area": 0.0}
    crowd = {**anns[0], "id": 10**9 + 1, "iscrowd": 1, "bbox": [5.0, 5.0, 60.0, 60.0], "area": 3600.0}
    crowd_only = {**anns[0], "id": 10**9 + 2, "image_id": ids[1], "iscrowd": 1}
    zero_only = {**anns[0], "id": 10**9 + 3, "image_id": ids[2], "bbox": [10.0, 10.0, 0.0, 0.0], "area": 0.0}
    content.update(images=images, annotations=anns + [zero, crowd, crowd_only, zero_only])
    det.register_coco("tiny_odd_boxes", _write_json(tmp_path / "odd.json", content), VAL_IMAGES)
    ddata.prepare_datasets(_cfg(train=["tiny_odd_boxes"]))
    dicts = DatasetCatalog.get("tiny_odd_boxes")
    assert {d["image_id"]: len(d["annotations"]) for d in dicts} == {ids[0]: 4, ids[1]: 1, ids[2]: 1}
    # As detectron2 does: images with only crowd boxes are dropped from training (FILTER_EMPTY_ANNOTATIONS) ...
    kept = get_detection_dataset_dicts(["tiny_odd_boxes"], filter_empty=True)
    assert sorted(d["image_id"] for d in kept) == sorted([ids[0], ids[2]])
    # ... and the mapper removes crowd boxes and empty (zero-area) boxes from the training targets.
    cfg = _cfg(train=["tiny_odd_boxes"], opts=["INPUT.RANDOM_FLIP", "none"])
    mapper = DatasetMapper(cfg, is_train=True)
    first = mapper(copy.deepcopy(next(d for d in kept if d["image_id"] == ids[0])))
    assert len(first["instances"]) == 2
    only_zero = mapper(copy.deepcopy(next(d for d in kept if d["image_id"] == ids[2])))
    assert len(only_zero["instances"]) == 0


def test_only_crowd_boxes_is_an_error_for_training(tmp_path, val_json):
    content = copy.deepcopy(val_json)
    content["annotations"] = [{**a, "iscrowd": 1} for a in content["annotations"][:5]]
    det.register_coco("tiny_all_crowd", _write_json(tmp_path / "crowd.json", content), VAL_IMAGES)
    with pytest.raises(det.DatasetError, match="no usable"):
        ddata.prepare_datasets(_cfg(train=["tiny_all_crowd"]))


def test_coco_evaluator_on_real_val2017_ground_truth_as_predictions(tmp_path, monkeypatch, coco_datasets_root):
    """COCOEvaluator (pycocotools) through the registered builtin name: perfect boxes give AP 100."""
    from detectron2.evaluation import COCOEvaluator

    monkeypatch.setenv("DETECTRON2_DATASETS", str(coco_datasets_root))
    ddata.prepare_datasets(_cfg(test=["coco_2017_val"]), training=False)
    ev = COCOEvaluator(
        "coco_2017_val",
        tasks=("bbox",),
        distributed=False,
        output_dir=str(tmp_path / "ev"),
        use_fast_impl=det.HAS_COMPILED_OPS,
    )
    ev.reset()
    for d in DatasetCatalog.get("coco_2017_val"):
        anns = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        boxes = torch.tensor(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        ).reshape(-1, 4)
        inst = Instances(
            (d["height"], d["width"]),
            pred_boxes=Boxes(boxes),
            scores=torch.ones(len(anns)),
            pred_classes=torch.tensor([a["category_id"] for a in anns], dtype=torch.long),
        )
        ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    res = ev.evaluate()["bbox"]
    assert res["AP"] > 99.0 and res["AP50"] > 99.0
    assert (tmp_path / "ev" / "coco_instances_results.json").is_file()


def test_demo_data_is_generated_once_and_valid(tmp_path):
    """The demo's generated COCO data: exact boxes inside the image, written once, loadable by detectron2."""
    root = ddata.ensure_demo_data(tmp_path / "demo", num_train=6, num_val=3, size=96)
    train = json.loads((root / "annotations" / "train.json").read_text())
    assert len(train["images"]) == 6 and [c["name"] for c in train["categories"]] == list(ddata.DEMO_CLASSES)
    assert train["annotations"] and all(a["iscrowd"] == 0 for a in train["annotations"])
    for a in train["annotations"]:
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96
    stamp = (root / "annotations" / "val.json").stat().st_mtime_ns
    assert ddata.ensure_demo_data(root) == root  # second call: nothing regenerated
    assert (root / "annotations" / "val.json").stat().st_mtime_ns == stamp
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    ddata.register_demo_datasets(root)
    dicts = DatasetCatalog.get(ddata.DEMO_VAL)
    assert len(dicts) == 3 and MetadataCatalog.get(ddata.DEMO_VAL).thing_classes == list(ddata.DEMO_CLASSES)
    cfg = det.get_detection_cfg("demo_shapes")
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(ddata.DEMO_CLASSES)
    assert tuple(cfg.DATASETS.TRAIN) == (ddata.DEMO_TRAIN,) and tuple(cfg.DATASETS.TEST) == (ddata.DEMO_VAL,)


def test_cli_missing_weights_file(tmp_path, capsys, coco_datasets_root, monkeypatch):
    from shufflenet.detection.engine import cli

    monkeypatch.setenv("DETECTRON2_DATASETS", str(coco_datasets_root))
    missing = tmp_path / "nope.pth"
    assert cli(["--config", "coco2017_shufflenet1x_300", "--eval-only", "MODEL.WEIGHTS", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: MODEL.WEIGHTS={missing}: no such file") and "Traceback" not in err
