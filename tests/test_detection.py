"""Detection integration: the installed detectron2, registration, backbone/RoI-head structure, configs, transfer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from proc import run as watched_run

import shufflenet.detection as det  # noqa: E402
from shufflenet import ShuffleUnit, create_model, save_weights  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = "shufflenet_v1_x0_25_g3"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)  # the classifier's input normalization (RGB, 0-1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
SMALL_OPTS = ["MODEL.SHUFFLENET.NAME", TINY, "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.DEVICE", "cpu"]


# --- the installed detectron2 ------------------------------------------------------------------------------
# Each test here checks what holds for the install it runs on: the project's patched 0.6 copy
# (scripts/install_detectron2.py) or an upstream detectron2 built from source (compat.install_kind()).

INSTALL = det.compat.install_kind()
D2_MODULES = [
    "detectron2.checkpoint",
    "detectron2.config",
    "detectron2.data",
    "detectron2.data.transforms",
    "detectron2.engine",
    "detectron2.evaluation",
    "detectron2.export",
    "detectron2.export.torchscript_patch",
    "detectron2.layers",
    "detectron2.modeling",
    "detectron2.structures",
    "detectron2.utils.visualizer" if importlib.util.find_spec("cv2") else "detectron2.utils.events",
]


def _python(code: str) -> subprocess.CompletedProcess:
    return watched_run([sys.executable, "-c", code], cwd=REPO)


def test_install_is_one_the_project_supports():
    assert INSTALL in ("patched-0.6", "upstream"), det.compat.unpatched_reason()


def test_detectron2_imports_on_its_own():
    """Without the project imported, detectron2's modules the project uses import (the 0.6 copy: thanks to the
    install patch; upstream: as shipped), and the resize transform works on today's Pillow."""
    code = (
        "import sys, numpy as np\n"
        f"import {', '.join(D2_MODULES)}\n"
        "from detectron2.data import transforms as T\n"
        "img = np.zeros((40, 60, 3), np.uint8)\n"
        "out = T.ResizeShortestEdge(20, 100).get_transform(img).apply_image(img)\n"
        "assert out.shape == (20, 30, 3), out.shape\n"
        "assert not [m for m in sys.modules if m.startswith('shufflenet')]\n"
        "print('ok')\n"
    )
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_ops_of_the_cpp_extension():
    """Upstream (extension built): a rotated-box op computes. The patched 0.6 copy (no extension): the op fails with
    one message naming the op, what needs it and how to get it; the patch marker lists every change."""
    import detectron2
    from detectron2.layers import batched_nms_rotated
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[10.0, 10.0, 8.0, 4.0, 30.0]])
    if INSTALL == "upstream":
        assert det.HAS_COMPILED_OPS
        assert torch.allclose(pairwise_iou_rotated(boxes, boxes), torch.ones(1, 1))
        return
    assert not det.HAS_COMPILED_OPS
    with pytest.raises(RuntimeError, match="box_iou_rotated.*rotated boxes.*build detectron2 from source"):
        pairwise_iou_rotated(boxes, boxes)
    with pytest.raises(RuntimeError, match="nms_rotated"):
        batched_nms_rotated(boxes, torch.ones(1), torch.zeros(1, dtype=torch.long), 0.5)
    marker = Path(detectron2.__file__).parent / det.compat.PATCH_MARKER
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import install_detectron2
    finally:
        sys.path.pop(0)
    listed = marker.read_text()
    for rel, what, _ in install_detectron2.PATCHES:
        assert f"{rel}: {what}" in listed


def test_importing_shufflenet_detection_changes_nothing_in_detectron2():
    """In a fresh interpreter: import detectron2 (every module the package uses), PIL.Image and numpy, snapshot every
    attribute of every loaded detectron2/PIL/numpy/torch/fvcore module and every sys.modules entry, import
    shufflenet.detection, compare (a package gaining a submodule it imports for the first time, e.g.
    PIL.ImageChops, is import itself, not a change). The only change allowed is detectron2's extension point:
    the three ShuffleNet builders added to BACKBONE_REGISTRY and ROI_HEADS_REGISTRY."""
    probe = _python(
        "import sys, shufflenet.detection\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'detectron2')))"
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    used = probe.stdout.split()
    assert "detectron2.modeling" in used
    code = f"""
import importlib, sys
for name in {used!r} + ["PIL.Image", "numpy"]:
    importlib.import_module(name)
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY
watched = lambda: [n for n in sys.modules if n.split(".")[0] in ("detectron2", "PIL", "numpy", "torch", "fvcore")]
def snapshot():
    out = {{}}
    for n in watched():
        m = sys.modules[n]
        try:
            out[n] = {{k: id(v) for k, v in vars(m).items()}}
        except TypeError:
            out[n] = {{}}
    return out
before, entries = snapshot(), {{n: id(m) for n, m in sys.modules.items()}}
regs = {{r._name: set(r._obj_map) for r in (BACKBONE_REGISTRY, ROI_HEADS_REGISTRY)}}
import shufflenet.detection
after = snapshot()
replaced = [n for n, i in entries.items() if n not in sys.modules or id(sys.modules[n]) != i]
newly_imported = {{f"{{n}}.{{k}}" for n in before for k in set(after[n]) - set(before[n])}} - set(entries)
changed = [f"{{n}}.{{k}}" for n, attrs in before.items() for k in set(attrs) | set(after[n])
           if attrs.get(k) != after[n].get(k) and not k.startswith("__")
           and f"{{n}}.{{k}}" not in newly_imported]  # a submodule imported for the first time is no change
added = {{r._name: sorted(set(r._obj_map) - regs[r._name]) for r in (BACKBONE_REGISTRY, ROI_HEADS_REGISTRY)}}
import json
print(json.dumps({{"replaced": replaced, "changed": sorted(changed), "added": added}}))
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replaced"] == [] and result["changed"] == [], result
    assert result["added"] == {
        "BACKBONE": ["build_shufflenet_c4_backbone", "build_shufflenet_fpn_backbone"],
        "ROI_HEADS": ["ShuffleNetROIHeads"],
    }, result


def test_collect_env_reports_missing_extension():
    from detectron2.utils.collect_env import collect_env_info

    text = collect_env_info()
    assert "detectron2" in text
    if not det.HAS_COMPILED_OPS:
        assert "detectron2._C" in text and "not built correctly" in text


# --- modeling ------------------------------------------------------------------------------------------


def test_registered_in_detectron2_registries():
    assert "build_shufflenet_c4_backbone" in BACKBONE_REGISTRY
    assert "build_shufflenet_fpn_backbone" in BACKBONE_REGISTRY
    assert "ShuffleNetROIHeads" in ROI_HEADS_REGISTRY


def test_c4_detector_structure_and_shapes():
    model, cfg = det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS)
    ref = create_model(TINY, num_classes=0)
    backbone = model.backbone
    # Same modules as the package's network: stem + stages 2-3 in the backbone, stage 4 in the RoI head.
    assert type(backbone.stage2) is type(ref.stage2) and isinstance(backbone.stage3[0], ShuffleUnit)
    assert not hasattr(backbone, "stage4")
    stage4 = model.roi_heads.stage4
    assert len(stage4) == len(ref.stage4) and all(isinstance(u, ShuffleUnit) for u in stage4)
    assert stage4[0].stride == 2
    conv_shapes = [tuple(p.shape) for p in ref.stage4.parameters() if p.dim() > 1]
    assert [tuple(p.shape) for p in stage4.parameters() if p.dim() > 1] == conv_shapes
    # output_shape / size_divisibility
    shape = backbone.output_shape()
    assert list(shape) == ["stage3"]
    assert shape["stage3"].channels == ref.stage_out_channels[1] and shape["stage3"].stride == 16
    assert backbone.size_divisibility == 16
    x = torch.zeros(1, 3, 160, 224)
    feats = backbone(x)
    assert feats["stage3"].shape == (1, ref.stage_out_channels[1], 10, 14)
    # FrozenBN everywhere (NORM: FrozenBN); FREEZE_AT 2 freezes stem + stage2 only.
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in stage4.modules())
    assert all(not p.requires_grad for p in backbone.conv1.parameters())
    assert all(not p.requires_grad for p in backbone.stage2.parameters())
    assert all(p.requires_grad for p in backbone.stage3.parameters())
    assert all(p.requires_grad for p in stage4.parameters())
    # eval forward on one image gives detectron2 Instances; training gives the four losses.
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 150, 200)).float()}])
    assert out[0]["instances"].image_size == (150, 200)
    model.train()
    inst = Instances(
        (160, 224), gt_boxes=Boxes(torch.tensor([[10.0, 20.0, 100.0, 140.0]])), gt_classes=torch.tensor([3])
    )
    with EventStorage(0):
        losses = model([{"image": torch.rand(3, 160, 224) * 255, "instances": inst}])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    sum(losses.values()).backward()
    assert stage4[-1].gconv2[0].weight.grad is not None
    assert backbone.stage2[0].gconv1[0].weight.grad is None


def test_roi_head_runs_the_package_stage4_module():
    """The RoI head output equals the package network's stage4 applied to the pooled features."""
    model, _ = det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS)
    net = create_model(TINY, num_classes=0)
    sd = {k[len("roi_heads.stage4.") :]: v for k, v in model.state_dict().items() if k.startswith("roi_heads.stage4.")}
    net.stage4.load_state_dict(sd)
    net.eval()
    x = torch.randn(3, net.stage_out_channels[1], 14, 14)
    with torch.no_grad():
        assert torch.allclose(model.roi_heads.stage4(x), net.stage4(x), atol=1e-5)


@pytest.mark.parametrize(
    "opts,frozen",
    [
        (["MODEL.BACKBONE.FREEZE_AT", "0"], []),
        (["MODEL.BACKBONE.FREEZE_AT", "1"], ["conv1"]),
        ([], ["conv1", "stage2"]),  # the configs' MODEL.BACKBONE.FREEZE_AT: 2
        (["MODEL.BACKBONE.FREEZE_AT", "3"], ["conv1", "stage2", "stage3"]),
    ],
)
def test_freeze_at(opts, frozen):
    model, _ = det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS + opts)
    for part in ("conv1", "stage2", "stage3"):
        grads = {p.requires_grad for p in getattr(model.backbone, part).parameters()}
        assert grads == ({False} if part in frozen else {True}), part


def test_channels_last_inference_is_the_same_function(randomize_bn):
    """Eval mode runs on channels-last tensors (MODEL.SHUFFLENET.CHANNELS_LAST): same detections as NCHW;
    training mode keeps the weights as built (contiguous)."""
    opts = SMALL_OPTS + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.SHUFFLENET.NORM", "BN"]
    torch.manual_seed(3)
    nhwc, _ = det.build_detector("coco_shufflenet1x_300", opts=opts)
    nchw, _ = det.build_detector("coco_shufflenet1x_300", opts=opts + ["MODEL.SHUFFLENET.CHANNELS_LAST", "False"])
    nchw.load_state_dict(randomize_bn(nhwc).state_dict())
    image = torch.rand(3, 160, 224) * 255
    with torch.no_grad():
        feats = nhwc.backbone(nhwc.preprocess_image([{"image": image}]).tensor)["stage3"]
        a = nhwc([{"image": image}])[0]["instances"]
        b = nchw([{"image": image}])[0]["instances"]
    assert feats.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.roi_heads.stage4[0].gconv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert len(a) == len(b) > 0 and torch.equal(a.pred_classes, b.pred_classes)
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-2) and torch.allclose(
        a.scores, b.scores, atol=1e-4
    )
    # RoIs through stage 4 in chunks (MODEL.SHUFFLENET.ROI_CHUNK_TEST): the same detections as all at once
    assert nhwc.roi_heads.roi_chunk == 50
    nhwc.roi_heads.roi_chunk = 7
    with torch.no_grad():
        c = nhwc([{"image": image}])[0]["instances"]
    assert torch.equal(a.pred_classes, c.pred_classes) and torch.allclose(a.scores, c.scores, atol=1e-5)
    nhwc.train()
    assert all(m.weight.is_contiguous() for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d))


def test_trainable_bn_option():
    model, _ = det.build_detector(
        "coco_shufflenet1x_300", opts=SMALL_OPTS + ["MODEL.SHUFFLENET.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "1"]
    )
    assert isinstance(model.backbone.stage2[0].gconv1[1], torch.nn.BatchNorm2d)
    assert isinstance(model.backbone.conv1[1], FrozenBatchNorm2d)  # frozen parts always get frozen BN
    assert isinstance(model.roi_heads.stage4[0].gconv1[1], torch.nn.BatchNorm2d)


def test_fpn_detector_shapes():
    model, _ = det.build_detector("coco_shufflenet1x_fpn", opts=SMALL_OPTS)
    ref = create_model(TINY, num_classes=0)
    bottom_up = model.backbone.bottom_up
    assert isinstance(bottom_up.stage4[0], ShuffleUnit)
    shape = model.backbone.output_shape()
    assert {k: v.stride for k, v in shape.items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    assert {v.channels for v in shape.values()} == {128}
    assert bottom_up.output_shape()["stage4"].channels == ref.stage_out_channels[2]
    # Strides and channels come from the network's own feature_info (one table, not a second copy).
    info = {f["module"]: f for f in ref.feature_info}
    assert {k: (v.channels, v.stride) for k, v in bottom_up.output_shape().items()} == {
        k: (info[k]["num_chs"], info[k]["reduction"]) for k in ("stage2", "stage3", "stage4")
    }
    assert model.backbone.size_divisibility == 32  # detectron2 FPN: stride of the deepest bottom-up input
    feats = model.backbone(torch.zeros(1, 3, 256, 384))
    assert feats["p3"].shape[-2:] == (32, 48) and feats["p7"].shape[-2:] == (2, 3)
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 200, 300) * 255}])
    assert out[0]["instances"].image_size == (200, 300)


def test_bad_model_config_messages():
    with pytest.raises(det.DetectionError, match="unknown model name 'shufflenet_v1_x9_g3'"):
        det.build_detector("coco_shufflenet1x_300", opts=["MODEL.SHUFFLENET.NAME", "shufflenet_v1_x9_g3"])
    with pytest.raises(det.DetectionError, match="NORM='GN'"):
        det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS + ["MODEL.SHUFFLENET.NORM", "GN"])
    with pytest.raises(det.DetectionError, match="MODEL.BACKBONE.FREEZE_AT=5"):
        det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS + ["MODEL.BACKBONE.FREEZE_AT", "5"])
    with pytest.raises(det.DetectionError, match="not a ShuffleNet v1 model"):
        det.build_detector("coco_shufflenet1x_300", opts=["MODEL.SHUFFLENET.NAME", "mobilenet_v1_x1_0"])
    with pytest.raises(det.DetectionError, match="KEY VALUE"):
        det.get_detection_cfg("coco_shufflenet1x_300", ["MODEL.DEVICE"])


# --- configs -------------------------------------------------------------------------------------------


def test_configs_match_the_paper_settings():
    expect = {
        "coco_shufflenet1x": ("shufflenet_v1_x1_0_g3", 600, 1000),
        "coco_shufflenet2x": ("shufflenet_v1_x2_0_g3", 600, 1000),
        "coco_shufflenet1x_300": ("shufflenet_v1_x1_0_g3", 300, 500),
        "coco_shufflenet2x_300": ("shufflenet_v1_x2_0_g3", 300, 500),
    }
    for name, (arch, short, long) in expect.items():
        for prefix, train, test in (
            ("", ("coco_2014_train", "coco_2014_valminusminival"), ("coco_2014_minival",)),
            ("coco2017_", ("coco_2017_train",), ("coco_2017_val",)),
        ):
            cfg = det.get_detection_cfg((prefix + name[len("coco_") :] if prefix else name) + ".yaml")
            assert cfg.MODEL.SHUFFLENET.NAME == arch
            assert cfg.INPUT.MIN_SIZE_TRAIN == (short,) and cfg.INPUT.MIN_SIZE_TEST == short
            assert cfg.INPUT.MAX_SIZE_TRAIN == long and cfg.INPUT.MAX_SIZE_TEST == long
            assert tuple(cfg.DATASETS.TRAIN) == train and tuple(cfg.DATASETS.TEST) == test
            assert cfg.MODEL.BACKBONE.NAME == "build_shufflenet_c4_backbone"
            assert cfg.MODEL.ROI_HEADS.NAME == "ShuffleNetROIHeads"
            # py-faster-rcnn's test defaults, which the paper used: 6000 proposals before NMS, 300 after
            assert (cfg.MODEL.RPN.PRE_NMS_TOPK_TEST, cfg.MODEL.RPN.POST_NMS_TOPK_TEST) == (6000, 300)
            assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and "FREEZE_AT" not in cfg.MODEL.SHUFFLENET  # one key, no alias
    fpn = det.get_detection_cfg("coco_shufflenet1x_fpn")
    assert fpn.MODEL.BACKBONE.NAME == "build_shufflenet_fpn_backbone"
    # A path works as well as a bare name.
    assert det.get_detection_cfg(str(REPO / "configs/detection/coco_shufflenet2x.yaml")).MODEL.SHUFFLENET.NAME == (
        "shufflenet_v1_x2_0_g3"
    )


def test_unknown_config_lists_available():
    with pytest.raises(det.ConfigNotFoundError) as info:
        det.get_detection_cfg("coco_shufflenet3x")
    msg = str(info.value)
    assert "coco_shufflenet3x" in msg and "coco_shufflenet2x" in msg and "coco_shufflenet1x_300" in msg
    assert "Available configs" in msg


@pytest.mark.parametrize("flag", ["--config", "--config-file"])
def test_cli_unknown_config_is_one_line_error(flag, tmp_path):
    """detectron2's own --config-file looks packaged names up like --config; an unknown one is one error line
    before detectron2's environment dump, and the run folder is not created."""
    out = tmp_path / "run"
    proc = watched_run(
        [
            sys.executable,
            str(REPO / "detection" / "train_net.py"),
            flag,
            "coco_shufflenet3x.yaml",
            "OUTPUT_DIR",
            str(out),
        ],
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown detection config 'coco_shufflenet3x.yaml'")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "coco_shufflenet2x" in proc.stderr and "Traceback" not in proc.stderr
    assert "Environment info" not in proc.stdout + proc.stderr
    assert not out.exists()


def test_cli_usage_names_the_command_typed(monkeypatch):
    """detectron2's flags and the project's, under the name the user typed (the console script's, here)."""
    from shufflenet.detection.engine import build_argument_parser

    monkeypatch.setattr(sys, "argv", ["/venv/bin/shufflenet-detect", "--help"])
    text = build_argument_parser().format_help()
    assert text.startswith("usage: shufflenet-detect ")
    assert "shufflenet-detect --config demo_shapes" in text and "python detection/train_net.py" not in text
    for flag in ("--config-file", "--eval-only", "--resume", "--num-gpus", "--num-machines", "--verbose", "opts"):
        assert flag in text, flag


# --- transfer from classification ----------------------------------------------------------------------


def _randomized(name: str) -> torch.nn.Module:
    """A classification network with non-trivial values everywhere (BN statistics too)."""
    torch.manual_seed(0)
    net = create_model(name, num_classes=10)
    with torch.no_grad():
        for t in list(net.parameters()) + [b for n, b in net.named_buffers() if "running" in n]:
            t.copy_(torch.rand_like(t) + 0.5 if t.dim() == 1 else torch.randn_like(t))
    return net


def _assert_transferred(model, net, prefix_backbone="backbone.", stage4_prefix="roi_heads.stage4."):
    sd = model.state_dict()
    src = net.state_dict()
    checked = 0
    for key, value in src.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        target = (stage4_prefix + key[len("stage4.") :]) if key.startswith("stage4.") else prefix_backbone + key
        assert torch.equal(sd[target], value), key
        checked += 1
    assert checked > 100


def test_transfer_from_package_weights_file(tmp_path):
    net = _randomized(TINY)
    path = save_weights(net, tmp_path / "model.pth", arch=TINY)
    model, cfg = det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS, weights=str(path))
    _assert_transferred(model, net)
    assert cfg.MODEL.WEIGHTS == str(path)
    # The FPN bottom-up takes every stage, stage 4 included.
    fpn, _ = det.build_detector("coco_shufflenet1x_fpn", opts=SMALL_OPTS, weights=str(path))
    _assert_transferred(fpn, net, "backbone.bottom_up.", "backbone.bottom_up.stage4.")


def test_transfer_report_lists_ignored_missing_unexpected(tmp_path):
    from shufflenet.detection.checkpoint import ShuffleNetCheckpointer

    net = _randomized(TINY)
    sd = net.state_dict()
    del sd["stage3.1.gconv1.0.weight"]
    sd["head.extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "plain.pth")
    model, _ = det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS)
    ckpt = ShuffleNetCheckpointer(model)
    leftover = ckpt.load(str(tmp_path / "plain.pth"), checkpointables=[])
    report = leftover["transfer_report"]
    assert report["format"] == "state_dict"
    assert report["missing"] == ["backbone.stage3.1.gconv1.0.weight"]
    assert report["unexpected"] == ["head.extra.weight"]
    assert "fc.weight" in report["ignored"]
    assert torch.equal(model.state_dict()["roi_heads.stage4.0.gconv1.0.weight"], sd["stage4.0.gconv1.0.weight"])


def test_transfer_shape_mismatch_names_key(tmp_path):
    path = save_weights(_randomized("shufflenet_v1_x0_5_g3"), tmp_path / "half.pth", arch="shufflenet_v1_x0_5_g3")
    with pytest.raises(det.DetectionError, match="shape .* MODEL.SHUFFLENET"):
        det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS, weights=str(path))


def test_transfer_rejects_foreign_and_missing_files(tmp_path):
    from test_convert import megvii_case  # megvii's own layout, random weights (tests/test_convert.py)

    _, path = megvii_case(tmp_path, 3, 0.5, seed=2)
    # an original public checkpoint is converted on read; this one is 0.5x, the detector 0.25x
    with pytest.raises(det.DetectionError, match="shape .* MODEL.SHUFFLENET"):
        det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS, weights=str(path))
    with pytest.raises(det.DetectionError, match="no such"):
        det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS, weights=str(tmp_path / "absent.pth"))
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(det.DetectionError, match="junk.pth: cannot be read as a torch weights file"):
        det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS, weights=str(tmp_path / "junk.pth"))


def _rgb_photo(path: Path, height: int, width: int) -> torch.Tensor:
    """A real photo as (3, H, W) RGB 0-255 float, resized (both sides multiples of 16: no detectron2 padding)."""
    from PIL import Image

    img = Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR)
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(height, width, 3).permute(2, 0, 1).float()


@pytest.mark.parametrize("config", ["coco_shufflenet1x_300", "coco_shufflenet1x_fpn"])
def test_converted_megvii_checkpoint_gives_the_classifiers_features(tmp_path, sample_images, config):
    """A converted megvii checkpoint (input_shift included) in the detector: the backbone computes exactly the
    classifier's stage-2/3 features on a real photo, and the RoI head's stage 4 is the classifier's stage 4."""
    from test_convert import megvii_case

    from shufflenet.convert.checkpoints import main as convert_main

    ref, src = megvii_case(tmp_path, 3, 1.0, seed=7)
    converted = tmp_path / "converted.pth"
    assert convert_main([str(src), "--out", str(converted)]) == 0
    classifier = create_model(None, weights=converted).eval()
    assert classifier.input_shift is not None and classifier.input_shift.shift.abs().max() > 0.5
    model, _ = det.build_detector(config, opts=["MODEL.DEVICE", "cpu"], weights=str(converted))
    bottom_up = model.backbone.bottom_up if hasattr(model.backbone, "bottom_up") else model.backbone
    assert torch.equal(bottom_up.input_shift.flatten(), classifier.input_shift.shift.flatten())
    image = _rgb_photo(sample_images[0], 224, 320)
    # Every stage the backbone runs, as it runs it (forward hooks): C4 runs stages 2-3 (stage 4 is the RoI head's),
    # FPN runs stages 2-4.
    in_backbone = {
        "coco_shufflenet1x_300": ["stage2", "stage3"],
        "coco_shufflenet1x_fpn": ["stage2", "stage3", "stage4"],
    }
    ran = {}
    hooks = [
        getattr(bottom_up, name).register_forward_hook(lambda m, i, o, name=name: ran.__setitem__(name, o))
        for name in in_backbone[config]
    ]
    with torch.no_grad():
        x = model.preprocess_image([{"image": image}]).tensor
        assert x.shape[-2:] == (224, 320)  # no padding: the comparison covers every border pixel
        feats = bottom_up(x)
        want = {
            "stem": classifier.maxpool(classifier.conv1(classifier.input_shift(((image / 255.0 - MEAN) / STD)[None])))
        }
        for name, before in (("stage2", "stem"), ("stage3", "stage2"), ("stage4", "stage3")):
            want[name] = getattr(classifier, name)(want[before])
    for h in hooks:
        h.remove()
    want3 = want["stage3"]
    scale = want3.abs().max().item()
    assert (feats["stage3"] - want3).abs().max().item() < 1e-4 * scale
    # float32 rounding of the same convolutions in another order (channels_last): 1e-4 of the range
    assert sorted(ran) == sorted(in_backbone[config])
    for name in in_backbone[config]:
        got = feats.get(name, ran[name])  # what the backbone gives the detector, else what the stage computed
        assert (got - want[name]).abs().max().item() < 1e-4 * want[name].abs().max().item(), name
    if config == "coco_shufflenet1x_300":  # C4: stage 4 is the RoI head's, on pooled stage-3 features
        with torch.no_grad():
            assert torch.allclose(model.roi_heads.stage4(want3), want["stage4"], atol=1e-5 * scale)
    # Without the shift the stem's border (zero padding = megvii's black) differs: the shift matters.
    with torch.no_grad():
        bottom_up.input_shift.zero_()
        unshifted = bottom_up(x)["stage3"]
    assert (unshifted - want3).abs().max().item() > 1e-2 * scale


@pytest.mark.slow
def test_transfer_from_lightning_checkpoint(tmp_path):
    """A real Lightning .ckpt of a module that keeps the backbone in ``self.model`` (the contract)."""
    import pytorch_lightning as pl

    class Classifier(pl.LightningModule):
        def __init__(self, arch: str = TINY, num_classes: int = 10):
            super().__init__()
            self.save_hyperparameters()
            self.model = create_model(arch, num_classes=num_classes)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,)))
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    module = Classifier()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    model, _ = det.build_detector("coco_shufflenet1x_300", opts=SMALL_OPTS, weights=str(tmp_path / "last.ckpt"))
    _assert_transferred(model, module.model)
