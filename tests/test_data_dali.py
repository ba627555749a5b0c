"""``data.backend dali`` against the default tensor path, on the package's real photos (DALI's CPU operators here;
the same pipeline with ``device="mixed"`` decoding on a GPU machine).

The crop box and flip of each sample come from the same seeded ``transforms.v2`` draw on both backends, so each
DALI crop must match the tensor path's crop of the same sample up to the two resize implementations' rounding.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import torch

from shufflenet.classification.data import ImageFolderDataModule, ImageFolderDataset, eval_transform, train_transform
from shufflenet.classification.errors import DataError

sys.path.insert(0, str(Path(__file__).parent))
from test_data_backends import STD, photo_tree  # noqa: E402


def test_missing_dali_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if the dali extra were not installed
    with pytest.raises(DataError, match=r"data.backend dali needs NVIDIA DALI.*pip install 'shufflenet\[dali\]'"):
        ImageFolderDataModule(backend="dali")


def test_dali_crops_and_eval_match_the_tensor_path():
    pytest.importorskip("nvidia.dali", reason="needs the dali extra: pip install 'shufflenet[dali]'")
    root = photo_tree(Path(tempfile.mkdtemp()) / "photos")
    dm = ImageFolderDataModule(str(root), batch_size=3, num_workers=1, backend="dali", seed=7)
    dm.setup("fit")
    ref = ImageFolderDataset(root / "train", train_transform(), seed=7)
    loader = dm.train_dataloader()
    assert len(loader) == 2
    for epoch in (0, 1):
        sampler = loader.sampler  # the pass's (epoch, index) keys: the stream from the sampler's position on
        keys = sampler.stream.take(sampler.position, len(sampler))
        assert {e for e, _ in keys} == {epoch}
        batches = list(loader)
        assert all(b[0].shape == (3, 3, 224, 224) and b[0].dtype == torch.float32 for b in batches)
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        r = torch.stack([ref[k][0] for k in keys])
        assert y.tolist() == [ref[k][1] for k in keys]
        # per sample: the same box and flip; a different box or flip differs by tens of levels (see
        # test_data_backends), the two antialiased bilinear resizes by rounding (< 1.5 levels of 255)
        per_sample = ((x - r) * STD).abs().mean(dim=(1, 2, 3)) * 255
        assert per_sample.max() < 1.5, per_sample
        # the crops' statistics: per-channel mean and std agree to a fraction of a level
        assert torch.allclose(x.mean(dim=(0, 2, 3)), r.mean(dim=(0, 2, 3)), atol=0.02)
        assert torch.allclose(x.std(dim=(0, 2, 3)), r.std(dim=(0, 2, 3)), atol=0.02)
    ev = torch.cat([b[0] for b in dm.val_dataloader()])  # 6 images, batch 3: two batches
    ref_ev = ImageFolderDataset(root / "val", eval_transform())
    assert ev.shape == (6, 3, 224, 224)
    for i in range(6):
        assert ((ev[i] - ref_ev[i][0]) * STD).abs().mean() * 255 < 1.5, i


def test_dali_skips_unreadable_and_oversized_like_the_tensor_path(tmp_path):
    pytest.importorskip("nvidia.dali", reason="needs the dali extra: pip install 'shufflenet[dali]'")
    from PIL import Image

    root = photo_tree(tmp_path / "photos")
    (root / "val" / "c0" / "broken.jpg").write_bytes(b"not an image" * 40)
    Image.new("L", (600, 400)).save(root / "val" / "c1" / "big.jpg")  # 240000 pixels
    dm = ImageFolderDataModule(str(root), batch_size=4, num_workers=1, backend="dali", max_image_pixels=200_000)
    dm.setup("fit")
    batches = list(dm.val_dataloader())  # the photos have at most 552x320 = 176640 pixels
    skipped = sorted(Path(s.split(": ")[0]).name for b in batches for s in b[2])
    assert skipped == ["big.jpg", "broken.jpg"]
    assert sum(len(b[1]) for b in batches) == 6 and all(len(b[0]) == len(b[1]) for b in batches)
