"""The tensor decode path (torchvision.io + transforms.v2 on uint8) against a PIL reference, and prediction batches.

Real photos: the package's sample photos (JPEG, 427-552 x 320). The reference is computed here: PIL-decoded
images (``load_rgb``) through torchvision's transforms on the PIL image, seeded with the sample's seed. The
dataset must draw the same random crop and flip for a sample (the parameters come from the same seeded torch
generator and the same image size); the pixels then differ only by the two resize implementations' rounding,
which we bound below.
"""

from __future__ import annotations

import io
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from shufflenet.classification.cli import cli
from shufflenet.classification.data import (
    ImageFolderDataModule,
    ImageFolderDataset,
    decode_rgb,
    eval_transform,
    load_rgb,
    train_transform,
)
from shufflenet.classification.errors import DataError
from shufflenet.data.stream import augmentation_seed

PHOTOS = sorted(p for p in resources.files("shufflenet").joinpath("resources/images").iterdir() if p.suffix == ".jpg")
MEAN, STD_ = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
STD = torch.tensor(STD_).view(3, 1, 1)
TO_FLOAT = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD_)]


def pil_reference(path, transforms, seed=None) -> torch.Tensor:
    """``path`` decoded by PIL and transformed as a PIL image (torchvision), the generator seeded by ``seed``."""
    tf = T.Compose([*transforms, *TO_FLOAT])
    if seed is None:
        return tf(load_rgb(path))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tf(load_rgb(path))


def photo_tree(root: Path) -> Path:
    for split in ("train", "val"):
        for i, p in enumerate(PHOTOS):
            d = root / split / f"c{i % 2}"
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, d / p.name)
    return root


def test_decode_rgb_equals_pil_and_falls_back_for_other_formats(tmp_path):
    assert len(PHOTOS) == 6
    for p in PHOTOS:  # libjpeg-turbo in both: the same pixels
        t = decode_rgb(p)
        assert t.dtype == torch.uint8 and t.shape[0] == 3
        assert torch.equal(t, torch.from_numpy(np.array(load_rgb(p))).permute(2, 0, 1))
    im = Image.open(PHOTOS[0]).convert("RGB").resize((40, 30))
    for mode, fmt in (("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "PNG")):
        buf = io.BytesIO()
        im.convert(mode).save(buf, fmt)
        t = decode_rgb(buf.getvalue())
        ref = np.asarray(load_rgb(io.BytesIO(buf.getvalue())))
        assert t.shape == (3, 30, 40), (mode, fmt)
        # grayscale JPEG: libjpeg's gray->RGB copy; the others are decoded by PIL itself
        assert np.array_equal(t.permute(1, 2, 0).numpy(), ref), (mode, fmt)
    data = PHOTOS[0].read_bytes()
    for bad in (data[: len(data) // 2], b"\xff\xd8\xff\xe0 not a jpeg" * 10, b"plain text"):
        with pytest.raises(OSError):
            decode_rgb(bad)
    big = io.BytesIO()
    Image.new("L", (200, 100)).save(big, "JPEG")
    with pytest.raises(ValueError, match="max_image_pixels=19999"):
        decode_rgb(big.getvalue(), 19_999)


def test_tensor_path_draws_the_pil_reference_crops_and_agrees_in_eval(tmp_path):
    root = photo_tree(tmp_path / "photos")
    t = ImageFolderDataset(root / "train", train_transform(224, (0.25, 1.0)), seed=5)
    bilinear = dict(interpolation=InterpolationMode.BILINEAR, antialias=True)
    ref_train = [T.RandomResizedCrop(224, scale=(0.25, 1.0), **bilinear), T.RandomHorizontalFlip(0.5)]
    diffs, flipped = [], []
    for epoch in range(3):
        for i in range(len(t)):
            a, la, _ = t[(epoch, i)]
            path, label = t.samples[i]
            b = pil_reference(path, ref_train, augmentation_seed(5, epoch, i))
            assert a.shape == b.shape == (3, 224, 224) and a.dtype == b.dtype == torch.float32 and la == label
            diffs.append(((a - b) * STD).abs().mean().item() * 255)  # mean |difference| in 0-255 levels
            flipped.append(((a - b.flip(-1)) * STD).abs().mean().item() * 255)
    # The same crop box and flip: a different box or a missed flip would differ by tens of levels on a photo;
    # the two antialiased bilinear resizes (PIL's and torch's uint8 kernels) differ by rounding, < 1.5 levels.
    assert max(diffs) < 1.5, diffs
    assert min(flipped) > 10, flipped  # the comparison sees a flip: the same crop mirrored is far from it
    te = ImageFolderDataset(root / "val", eval_transform(224, 256))
    ref_eval = [T.Resize(256, **bilinear), T.CenterCrop(224)]
    for i in range(len(te)):
        a, b = te[i][0], pil_reference(te.samples[i][0], ref_eval)
        assert a.shape == b.shape == (3, 224, 224)
        assert ((a - b) * STD).abs().mean().item() * 255 < 1.5


def test_datamodule_backend_option_and_errors(tmp_path):
    root = photo_tree(tmp_path / "photos")
    for backend in ("cv2", "pil"):  # pil: removed (the tensor backend decodes with PIL what torchvision cannot)
        with pytest.raises(DataError, match=f"^data.backend must be one of tensor, dali, got '{backend}'$"):
            ImageFolderDataModule(str(root), backend=backend)
    dm = ImageFolderDataModule(str(root), batch_size=3, num_workers=0, backend="tensor")
    dm.setup("fit")
    assert isinstance(dm.train_set, ImageFolderDataset) and isinstance(dm.val_set, ImageFolderDataset)
    x, y, skipped, position = next(iter(dm.train_dataloader()))  # a training batch: + the position after it
    assert x.shape == (3, 3, 224, 224) and not skipped and position == {"position": 3}


def test_cli_rejects_the_removed_pil_backend_in_one_line(tmp_path, capsys):
    root = photo_tree(tmp_path / "photos")
    args = ["--data.root", str(root), "--data.backend", "pil", "--output_root", str(tmp_path / "out")]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: data.backend must be one of tensor, dali, got 'pil'"], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.ckpt"))


def test_predict_dataloader_yields_images_and_paths_and_counts_unreadable(tmp_path, caplog):
    folder = tmp_path / "pred"
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    shutil.copy(PHOTOS[0], folder / PHOTOS[0].name)
    shutil.copy(PHOTOS[1], folder / "sub" / PHOTOS[1].name)
    Image.open(PHOTOS[2]).convert("L").save(folder / "sub" / "deeper" / "gray.png")
    shutil.copy(PHOTOS[3], folder / ".hidden" / "x.jpg")  # hidden folders are not searched
    (folder / "sub" / "broken.jpg").write_bytes(b"not an image" * 30)
    (folder / "notes.txt").write_text("not an image file name")
    dm = ImageFolderDataModule(batch_size=2, num_workers=0, predict_root=str(folder))
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    with caplog.at_level("WARNING"):
        out = [dm.on_after_batch_transfer(b, 0) for b in batches]
    paths = [p for _, ps in out for p in ps]
    assert [Path(p).relative_to(folder).as_posix() for p in paths] == [
        PHOTOS[0].name,
        f"sub/{PHOTOS[1].name}",
        "sub/deeper/gray.png",
    ]
    assert all(x.shape[1:] == (3, 224, 224) and x.shape[0] == len(ps) for x, ps in out)
    assert [Path(p).name for p in dm.skipped] == ["broken.jpg"]
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == 1
    # the eval transform: the first image equals the validation pipeline's output for that file
    ref = eval_transform(224, 256)(decode_rgb(folder / PHOTOS[0].name))
    assert torch.equal(out[0][0][0], ref)
    with pytest.raises(DataError, match="data.predict_root is not set"):
        ImageFolderDataModule(num_workers=0).setup("predict")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        ImageFolderDataModule(num_workers=0, predict_root=str(tmp_path / "empty_dir")).setup("predict")
    one = ImageFolderDataModule(num_workers=0, predict_root=str(folder / PHOTOS[0].name))
    one.setup("predict")
    assert len(one.predict_set) == 1
