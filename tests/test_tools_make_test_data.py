"""``python -m tools.make_test_data``: the CIFAR-10 part of the regeneration picks the first files of each class
folder by name and copies them byte for byte (checked on the repository's own slice as the source), and a class
with too few images is refused."""

from __future__ import annotations

import pytest

from tools import make_test_data


def test_cifar_slice_takes_the_first_files_by_name_byte_for_byte(cifar_root, tmp_path):
    out = tmp_path / "cifar10"
    assert make_test_data.make_cifar(cifar_root, out, train=2, test=1) == 10 * 3
    for split, count in (("train", 2), ("test", 1)):
        classes = sorted(p.name for p in (cifar_root / split).iterdir() if p.is_dir())
        assert sorted(p.name for p in (out / split).iterdir()) == classes
        for cls in classes:
            want = sorted(p for p in (cifar_root / split / cls).iterdir() if p.suffix.lower() == ".jpg")[:count]
            got = sorted((out / split / cls).iterdir())
            assert [p.name for p in got] == [p.name for p in want]
            assert all(a.read_bytes() == b.read_bytes() for a, b in zip(got, want))


def test_a_class_with_too_few_images_is_refused(cifar_root, tmp_path):
    with pytest.raises(SystemExit, match="images, 1000 asked"):
        make_test_data.make_cifar(cifar_root, tmp_path / "out", train=1000, test=1)
