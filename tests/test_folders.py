from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gknet.data import FolderDataset, match_by_stem
from gknet.errors import GknetError
from tests.conftest import write_image


def _touch_image(path: Path, value: int = 0, mode: str = "RGB") -> Path:
    return write_image(path, np.full((6, 8, 3) if mode == "RGB" else (6, 8), value, np.uint8))


@pytest.fixture
def folders(tmp_path):
    comp, masks, targets = tmp_path / "comp", tmp_path / "masks", tmp_path / "targets"
    for stem in ("a", "b", "c"):
        _touch_image(comp / f"{stem}.jpg", 10)
    for stem in ("a", "b", "d"):
        _touch_image(masks / f"{stem}.png", 255, "L")
    for stem in ("a", "c"):
        _touch_image(targets / f"{stem}.PNG", 20)
    (comp / "notes.txt").write_text("not an image")
    _touch_image(comp / ".hidden.jpg")
    return comp, masks, targets


def test_match_by_stem_pairs_and_reports_unmatched(folders):
    comp, masks, targets = folders
    match = match_by_stem(comp, masks)
    assert match.matched == {"a": (comp / "a.jpg", masks / "a.png"), "b": (comp / "b.jpg", masks / "b.png")}
    assert [p for p, _ in match.unmatched] == [comp / "c.jpg", masks / "d.png"]
    report = match.report().splitlines()
    assert report[0] == f"{comp / 'c.jpg'}: no file with stem 'c' in {masks}"
    assert report[1] == f"{masks / 'd.png'}: no file with stem 'd' in {comp}"

    three = match_by_stem(comp, masks, targets)
    assert list(three.matched) == ["a"] and three.matched["a"][2] == targets / "a.PNG"
    messages = dict((p.name, m) for p, m in three.unmatched)
    assert messages["b.jpg"] == f"no file with stem 'b' in {targets}"
    assert messages["c.jpg"] == f"no file with stem 'c' in {masks}"


def test_match_by_stem_rejects_bad_folders(folders, tmp_path):
    comp, masks, _ = folders
    with pytest.raises(GknetError, match="not a directory"):
        match_by_stem(comp, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GknetError, match="no images"):
        match_by_stem(comp, tmp_path / "empty")
    _touch_image(comp / "a.png")
    with pytest.raises(GknetError, match="two images share the stem 'a'"):
        match_by_stem(comp, masks)


def test_folder_dataset(folders):
    comp, masks, targets = folders
    ds = FolderDataset(comp, masks)
    assert [s.name for s in ds] == ["a.jpg", "b.jpg"] and ds.subsets == ["folder"]
    assert all(s.target is None for s in ds)
    composite, mask, target = ds.load(1)
    assert composite.mode == "RGB" and mask.mode == "L" and target is None

    with_targets = FolderDataset(comp, masks, targets)
    assert [s.name for s in with_targets] == ["a.jpg"]
    assert with_targets.load(0)[2].getpixel((0, 0)) == (20, 20, 20)
    assert [p.name for p, _ in with_targets.problems] == ["b.jpg", "c.jpg"]


def test_size_mismatch_is_an_error_naming_both_files(folders):
    comp, masks, _ = folders
    Image.new("L", (3, 3)).save(masks / "a.png")
    with pytest.raises(GknetError, match=r"size mismatch: .*a\.png is 3x3 but .*a\.jpg is 8x6"):
        FolderDataset(comp, masks).load(0)
