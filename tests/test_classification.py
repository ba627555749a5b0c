"""Classification integration, fast tests: data layout and bad input, configs, evaluation loading, recipe pieces."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from proc import run as watched_run

from shufflenet import create_model, save_weights
from shufflenet.classification import (
    DataError,
    ImageClassifier,
    ImageFolderDataModule,
    ImageFolderDataset,
    ResumableSampler,
    eval_transform,
    find_split_dirs,
    load_rgb,
    recalibrate_bn,
    train_transform,
)
from shufflenet.classification.demo import DEMO_CLASSES, ensure_demo_dataset, render
from shufflenet.paths import configs_dir

CONFIGS = configs_dir("classification")  # package data (the top-level configs/ is a link to it)


def make_tree(root: Path, classes=("a", "b", "c"), per_class=4, size=24, splits=("train", "val")) -> Path:
    for split in splits:
        for label, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                render(label % len(DEMO_CLASSES), 7 * label + i + (split == "val") * 1000, size).save(d / f"{i}.png")
    return root


# --- data layout and bad input -------------------------------------------------------------------------------
def test_bad_images_are_converted_or_skipped(tmp_path, caplog):
    root = make_tree(tmp_path / "ds", per_class=3)
    d = root / "train" / "a"
    good = render(0, 1, 24)
    buf = io.BytesIO()
    good.save(buf, "JPEG")
    jpeg = buf.getvalue()
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    good.convert("L").save(d / "gray.png")
    good.convert("RGBA").save(d / "rgba.png")
    good.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((np.arange(24 * 24).reshape(24, 24) * 100).astype(np.uint16)).save(d / "deep16.png")
    assert Image.open(d / "deep16.png").mode.startswith("I")

    for name in ("gray.png", "rgba.png", "cmyk.jpg", "deep16.png"):  # converted to RGB
        img = load_rgb(d / name)
        assert img.mode == "RGB" and img.size == (24, 24), name
    arr16 = np.asarray(load_rgb(d / "deep16.png"))[..., 0]
    assert arr16.min() == 0 and arr16.max() > 200  # scaled from 16 bits, not clipped to white

    ds = ImageFolderDataset(root / "train", eval_transform(16, 24))
    assert ds.classes == ["a", "b", "c"] and len(ds) == 3 * 3 + 6
    skipped = {}
    for i in range(len(ds)):
        x, y, bad = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        skipped.update(dict(b.split(": ", 1) for b in bad))
    assert sorted(Path(p).name for p in skipped) == ["corrupt.jpg", "truncated.jpg"]

    # Through the DataModule: one warning per file, the set kept for the run summary.
    dm = ImageFolderDataModule(str(root), batch_size=4, num_workers=0, image_size=16, resize_size=24)
    dm.setup("fit")
    with caplog.at_level("WARNING"):
        for batch in torch.utils.data.DataLoader(
            dm.train_set,
            batch_size=5,
            collate_fn=__import__("shufflenet.classification.data", fromlist=["collate"]).collate,
        ):
            x, y = dm.on_after_batch_transfer(batch, 0)
            assert x.shape[0] == y.shape[0] == 5
    assert sorted(Path(p).name for p in dm.skipped) == ["corrupt.jpg", "truncated.jpg"]
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == 2


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_split_dirs(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    render(0, 0, 16).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match=r"not in ImageNet layout: missing train/ and val/"):
        find_split_dirs(tmp_path / "flat")
    # images directly under train/ (no class folders)
    for split in ("train", "val"):
        (tmp_path / "noclass" / split).mkdir(parents=True)
        render(0, 0, 16).save(tmp_path / "noclass" / split / "x.png")
    with pytest.raises(DataError, match="has no class subfolders"):
        ImageFolderDataset(tmp_path / "noclass" / "train")
    root = make_tree(tmp_path / "empty", per_class=2)
    (root / "train" / "zzz_empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*zzz_empty has no images"):
        ImageFolderDataset(root / "train")
    # test/ is accepted as the validation folder (CIFAR exports); val/ classes must match train/
    root = make_tree(tmp_path / "cifarlike", per_class=2, splits=("train", "test"))
    assert find_split_dirs(root)[1].name == "test"
    make_tree(tmp_path / "mismatch", per_class=2, splits=("train",))
    make_tree(tmp_path / "mismatch", classes=("a", "b"), per_class=2, splits=("val",))
    dm = ImageFolderDataModule(str(tmp_path / "mismatch"), batch_size=2, num_workers=0, image_size=16, resize_size=24)
    with pytest.raises(DataError, match="class folders differ"):
        dm.setup("fit")


def test_cli_errors_are_one_line(tmp_path, capsys, repo_root):
    """Missing root, non-ImageNet layout, bad model name: `error: ...` on stderr, exit status 2."""
    from shufflenet.classification.cli import cli

    (tmp_path / "flat").mkdir()
    out = ["--output_root", str(tmp_path / "out")]
    proc = watched_run(
        [
            sys.executable,
            str(repo_root / "classification" / "train.py"),
            "--data.root",
            str(tmp_path / "missing"),
            *out,
        ]
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: data root {tmp_path / 'missing'} does not exist"
    cases = [
        (["--data.root", str(tmp_path / "flat")], "not in ImageNet layout"),
        (
            ["--model.arch", "shufflenet_v1_x1_0_g5", "--data.root", str(make_tree(tmp_path / "ok"))],
            "unknown model name",
        ),
    ]
    for args, message in cases:
        assert cli([*args, *out]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, last


def test_demo_dataset_is_deterministic_and_atomic(tmp_path):
    assert np.array_equal(np.asarray(render(3, 42)), np.asarray(render(3, 42)))
    assert not np.array_equal(np.asarray(render(3, 42)), np.asarray(render(3, 43)))
    root = ensure_demo_dataset(tmp_path / "demo", train_per_class=2, val_per_class=1, size=32, progress=None)
    assert (root / "DONE").is_file() and not list(tmp_path.glob(".demo.*"))
    train, val = find_split_dirs(root)
    assert sorted(p.name for p in train.iterdir()) == sorted(DEMO_CLASSES)
    assert len(list(val.rglob("*.png"))) == 10


# --- sampling and augmentation ----------------------------------------------------------------------------------
def test_augmentation_seeded_per_sample_and_resumable_sampler(tmp_path):
    root = make_tree(tmp_path / "ds", per_class=4, size=32)
    ds = ImageFolderDataset(root / "train", train_transform(16, (0.25, 1.0)), seed=3)
    assert torch.equal(ds[(2, 5)][0], ds[(2, 5)][0])  # same (epoch, index): same crop
    assert not torch.equal(ds[(2, 5)][0], ds[(3, 5)][0])  # next epoch: another crop
    uninterrupted = ResumableSampler(ds, num_replicas=2, rank=1, seed=0)
    full, second = list(uninterrupted), list(uninterrupted)
    assert len(full) == len(ds) // 2 and {e for e, _ in full} == {0} and {e for e, _ in second} == {1}
    assert sorted(i for _, i in full) != sorted(i for _, i in second)  # the epochs' shares differ
    s = ResumableSampler(ds, num_replicas=2, rank=1, seed=0)
    s.position = 2  # what a resumed loader sets: two samples of this rank consumed
    assert list(s) == full[2:]  # the rest of the epoch
    assert list(s) == second  # then the next epoch, as the uninterrupted sampler's
    other = ResumableSampler(ds, num_replicas=2, rank=0, seed=0)
    assert not {i for _, i in other} & {i for _, i in full}  # ranks see disjoint shares


# --- model / recipe -------------------------------------------------------------------------------------------------
def test_module_recipe_optimizer_and_schedule():
    import pytorch_lightning as pl

    m = ImageClassifier("shufflenet_v1_x0_25_g3", num_classes=10, no_weight_decay_bn_bias=True, warmup_steps=0)

    class FakeTrainer:
        world_size, accumulate_grad_batches, max_steps, is_global_zero = 4, 2, 100, True
        datamodule = type("DM", (), {"batch_size": 32})()

    m._trainer = FakeTrainer()  # only what configure_optimizers reads
    try:
        cfg = m.configure_optimizers()
    finally:
        m._trainer = None
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9 and not opt.defaults["nesterov"]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 32 * 4 * 2 / 1024)  # linear scaling rule
    decays = {g["weight_decay"] for g in opt.param_groups}
    assert decays == {0.0, 4e-5}
    no_wd = [p for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]]
    assert all(p.ndim <= 1 for p in no_wd) and len(no_wd) > 0  # BN and biases only
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[50] == pytest.approx(lrs[0] / 2) and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert isinstance(m.model, torch.nn.Module) and m.hparams.arch == "shufflenet_v1_x0_25_g3"
    assert pl.LightningModule in type(m).__mro__


def test_ema_keys_and_bn_recalibration():
    m = ImageClassifier("shufflenet_v1_x0_25_g3", num_classes=5, ema=True, ema_decay=0.9)
    keys = m.state_dict().keys()
    assert any(k.startswith("model.") for k in keys) and any(k.startswith("model_ema.module.") for k in keys)
    assert not any(p.requires_grad for p in m.model_ema.parameters())
    bn = m.model.conv1[1]
    torch.manual_seed(0)
    data = [torch.randn(8, 3, 32, 32) * 3 + 1 for _ in range(4)]
    m.model.eval()
    used = recalibrate_bn(m.model, iter(data), 3)
    assert used == 3 and bn.momentum == 0.1 and not m.model.training
    # cumulative average of the 3 batches' statistics of the stem conv output
    with torch.no_grad():
        feats = [m.model.conv1[0](x) for x in data[:3]]
    expected = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)


def test_bn_recalibration_under_a_plain_trainer(tmp_path):
    """``bn_recalibration_batches`` works in a plain ``Trainer.fit`` (no CLI) with the run's callbacks given
    explicitly: RecalibrateBN re-estimates BN over that many training batches and ValidateFinalWeights validates
    the final weights; without the callbacks the module adds none of its own."""
    import pytorch_lightning as pl

    from shufflenet.classification import RecalibrateBN, ValidateFinalWeights

    root = make_tree(tmp_path / "ds", per_class=8, size=32)

    def fit(batches: int, callbacks):
        pl.seed_everything(0, verbose=False)
        dm = ImageFolderDataModule(str(root), batch_size=4, num_workers=0, image_size=24, resize_size=32)
        m = ImageClassifier("shufflenet_v1_x0_25_g3", num_classes=3, bn_recalibration_batches=batches)
        trainer = pl.Trainer(
            max_steps=5,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=callbacks,
        )
        trainer.fit(m, datamodule=dm)
        return m, trainer

    recal, final = RecalibrateBN(), ValidateFinalWeights()
    m, trainer = fit(3, [recal, final])
    assert recal.used == 3
    tracked = {int(b.num_batches_tracked) for b in m.model.modules() if isinstance(b, torch.nn.BatchNorm2d)}
    assert tracked == {3}  # statistics of 3 recalibration batches, not of the 5 training steps
    assert final.result is not None and final.result["step"] == 5 and 0 <= final.result["val/top1"] <= 1
    m0, trainer0 = fit(3, [])  # asked for, but no callback: the module adds none silently
    assert not any(isinstance(c, RecalibrateBN) for c in trainer0.callbacks)
    assert {int(b.num_batches_tracked) for b in m0.model.modules() if isinstance(b, torch.nn.BatchNorm2d)} == {5}


# --- configs ------------------------------------------------------------------------------------------------
ROW_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.stem not in ("base", "demo", "public_recipe"))


def test_every_paper_row_has_a_config():
    names = {p.stem for p in ROW_CONFIGS}
    expected = {f"shufflenet_v1_x{w}_g{g}" for w in ("1_0", "0_5", "0_25") for g in (1, 2, 3, 4, 8)}
    expected |= {
        "shufflenet_v1_x1_5_g3",
        "shufflenet_v1_x2_0_g3",
        "shufflenet_v1_x2_0_g3_se",
        "shufflenet_v1_x0_5_g3_shallow",
        "mobilenet_v1_x1_0",
        "shufflenet_v1_x1_0_g3_noshuffle",
        "shufflenet_v1_x1_0_g8_noshuffle",
    }
    assert expected <= names


def test_configs_parse_and_build(tmp_path):
    """base.yaml + every row (+ public_recipe.yaml) parses with the CLI's parser and builds its model."""
    from shufflenet.classification.cli import make_cli

    root = str(make_tree(tmp_path / "ds", classes=tuple("abcdefghij"), per_class=1, splits=("train", "val")))
    built = {}
    for cfg in ROW_CONFIGS:
        cli = make_cli(
            [
                "--config",
                str(cfg),
                "--config",
                str(CONFIGS / "public_recipe.yaml"),
                "--data.root",
                root,
                "--trainer.logger",
                "false",
                "--run_dir",
                str(tmp_path / "run"),
            ],
            base_config=CONFIGS / "base.yaml",
            run=False,
        )
        m = cli.model
        assert m.hparams.arch == cfg.stem and m.hparams.lr == 0.5 and m.hparams.weight_decay == 4e-5
        assert m.hparams.ema and m.hparams.label_smoothing == 0.1 and m.hparams.no_weight_decay_bn_bias
        assert m.hparams.num_classes == 10  # linked from the dataset's class folders
        assert cli.trainer.max_steps == 300000 and tuple(cli.datamodule.hparams.crop_scale) == (0.25, 1.0)
        assert cli.datamodule.batch_size == 128 and cli.datamodule.hparams.image_size == 224
        built[cfg.stem] = sum(p.numel() for p in m.model.parameters())
    assert built["shufflenet_v1_x2_0_g3_se"] > built["shufflenet_v1_x2_0_g3"] > built["shufflenet_v1_x1_0_g3"]


# --- evaluation loading --------------------------------------------------------------------------------------
def test_evaluate_package_weights_and_class_mismatch(tmp_path, capsys):
    from shufflenet.classification.evaluate import cli as evaluate_main

    root = make_tree(tmp_path / "ds", per_class=3, size=32)
    model = create_model("shufflenet_v1_x0_25_g3", num_classes=3)
    save_weights(model, tmp_path / "w.pth", arch="shufflenet_v1_x0_25_g3")
    out = tmp_path / "r.json"
    rc = evaluate_main(
        [
            "--checkpoint",
            str(tmp_path / "w.pth"),
            "--data-root",
            str(root),
            "--image-size",
            "24",
            "--resize-size",
            "32",
            "--num-workers",
            "0",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["num_images"] == 9 and 0 <= res["top1"] <= res["top5"] <= 1
    assert res["top1_err"] == pytest.approx(1 - res["top1"])
    assert "| ShuffleNet 0.25x (g=3) |" in capsys.readouterr().out
    # the same weights evaluated directly give the same accuracy
    ds = ImageFolderDataset(root / "val", eval_transform(24, 32))
    with torch.no_grad():
        model.eval()
        pred = torch.stack([model(ds[i][0][None]).argmax(1)[0] for i in range(len(ds))])
    assert res["top1"] == pytest.approx(float((pred == torch.tensor(ds.targets)).float().mean()))
    # another number of classes: one clear message
    save_weights(
        create_model("shufflenet_v1_x0_25_g3", num_classes=7), tmp_path / "w7.pth", arch="shufflenet_v1_x0_25_g3"
    )
    rc = evaluate_main(["--checkpoint", str(tmp_path / "w7.pth"), "--data-root", str(root), "--num-workers", "0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and err.startswith("error: ") and "has 7 classes" in err and "3 class folders" in err
    # a truncated checkpoint file
    (tmp_path / "bad.pth").write_bytes((tmp_path / "w.pth").read_bytes()[:100])
    rc = evaluate_main(["--checkpoint", str(tmp_path / "bad.pth"), "--data-root", str(root)])
    assert rc == 2 and "cannot be read" in capsys.readouterr().err


def test_run_folder_resolution(tmp_path):
    from shufflenet.classification import ClassificationError
    from shufflenet.classification.cli import resolve_run_dir

    base = tmp_path / "out"
    first = resolve_run_dir(None, str(base), "demo", None)
    second = resolve_run_dir(None, str(base), "demo", None)
    assert (first.name, second.name) == ("version_0", "version_1") and first.is_dir()  # reserved, never shared
    with pytest.raises(ClassificationError, match="no .*last.ckpt to resume"):
        resolve_run_dir(None, str(base), "demo", "last")
    (first / "checkpoints").mkdir()
    (first / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resolve_run_dir(None, str(base), "demo", "last") == first  # newest run that has a last.ckpt
    assert resolve_run_dir(str(tmp_path / "mine"), str(base), "demo", "last") == tmp_path / "mine"


def test_console_callbacks_do_not_depend_on_what_is_installed():
    """Lightning picks RichProgressBar / RichModelSummary whenever ``rich`` is importable (LiteRT's converter
    installs it); the CLI asks for the text versions itself, keeps a user's own, and honours the off switches."""
    from pytorch_lightning.callbacks import ModelSummary, TQDMProgressBar
    from pytorch_lightning.callbacks.progress import ProgressBar

    from shufflenet.classification.cli import console_callbacks

    class MyBar(ProgressBar):  # a user's own bar (RichProgressBar itself needs rich installed)
        pass

    chosen = console_callbacks({}, [])
    assert [type(c) for c in chosen] == [TQDMProgressBar, ModelSummary]
    mine = MyBar()
    assert [type(c) for c in console_callbacks({}, [mine])] == [ModelSummary]
    off = {"enable_progress_bar": False, "enable_model_summary": False}
    assert console_callbacks(off, []) == []
