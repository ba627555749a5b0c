"""The one image-listing rule (shufflenet.paths.image_files) and the three places that list images with it."""

import os

import pytest
from proc import run as watched_run

from shufflenet.classification.imagefiles import list_images as predict_root_images
from shufflenet.classification.predict import find_images
from shufflenet.mobile.images import list_images as calibration_images
from shufflenet.paths import image_files


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for rel in ("b.JPG", "a.png", "sub/c.jpeg", "sub/deeper/d.webp", "z.tiff", "notes.txt", "e.jpg.bak"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    for hidden in (".hidden.jpg", "._b.JPG", ".thumbs/t.jpg", "sub/.cache/u.png"):
        (root / hidden).parent.mkdir(parents=True, exist_ok=True)
        (root / hidden).write_bytes(b"x")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "linked.jpg").write_bytes(b"x")
    os.symlink(outside, root / "link_to_folder")
    os.symlink(outside / "linked.jpg", root / "link_to_file.jpg")
    os.symlink(root, root / "sub" / "loop")  # a link back up: each real folder is listed once
    (root / "folder.jpg").mkdir()  # a folder named like an image is not an image
    return root


EXPECTED = [
    "a.png",
    "b.JPG",
    "link_to_file.jpg",
    "link_to_folder/linked.jpg",
    "sub/c.jpeg",
    "sub/deeper/d.webp",
    "z.tiff",
]


def test_one_rule_suffix_case_hidden_links_loops_sorted(folder):
    assert [p.relative_to(folder).as_posix() for p in image_files(folder)] == EXPECTED
    assert image_files(folder / "absent") == []


def test_the_three_callers_list_the_same_files(folder):
    want = [str(folder / rel) for rel in EXPECTED]
    assert predict_root_images(folder) == want
    assert [str(p) for p in find_images([str(folder)])] == want
    assert [str(p) for p in calibration_images(folder)] == want
    one = folder / "a.png"
    assert predict_root_images(one) == [str(one)] and find_images([str(one)]) == [one]


def test_the_reader_converts_a_public_checkpoint_without_any_other_import(tmp_path):
    """The weights reader imports the converter it needs: importing the package registers nothing it depends on
    (a fresh process that imports only the reader converts an mmpretrain file, and ``shufflenet.convert`` was not
    loaded by the import itself)."""
    import sys

    from test_convert import MMShuffleNetV1, save_mm

    src = save_mm(MMShuffleNetV1(3), tmp_path / "mm.pth")
    code = (
        "import sys\n"
        "from shufflenet.weights.io import read_weights\n"
        "assert 'shufflenet.convert' not in sys.modules, 'the package imported the converter'\n"
        f"wf = read_weights({str(src)!r})\n"
        "print(wf.kind, wf.meta['layout'], wf.arch)\n"
    )
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    proc = watched_run([sys.executable, "-c", code], env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["package", "mmpretrain", "shufflenet_v1_x1_0_g3"]
