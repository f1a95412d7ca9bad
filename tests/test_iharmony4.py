from pathlib import Path

import numpy as np
import pytest

from gknet.data import IHarmony4
from gknet.data.iharmony4 import canonical_subset, related_names
from gknet.errors import GknetError
from tests.conftest import write_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MINI = SHARED / "examples" / "iharmony4_mini"


def test_name_mapping():
    assert related_names("a0002_1_4.jpg") == ("a0002", "a0002_1")
    assert related_names("c100001_3_12.jpg") == ("c100001", "c100001_3")
    assert related_names("d90000010-13_1_2.jpg") == ("d90000010-13", "d90000010-13_1")
    assert related_names("my_photo_2_7.png") == ("my_photo", "my_photo_2")
    for bad in ("a0002.jpg", "a0002_1.jpg", "_1_2.jpg"):
        with pytest.raises(GknetError, match="a_b_c"):
            related_names(bad)


def test_subset_names_are_case_insensitive():
    known = ["HAdobe5k", "RainNet_examples"]
    assert canonical_subset("hadobe5k", known) == "HAdobe5k"
    assert canonical_subset("rainnet_EXAMPLES", known) == "RainNet_examples"
    assert canonical_subset("HCoco2", known) == "HCoco2"  # unknown: kept, so its missing list is reported


@pytest.fixture
def tree(tmp_path):
    """HFlickr: an L mask and an RGB-stored mask; HCOCO: a JPEG mask, a missing real image."""
    rng = np.random.default_rng(0)
    shape = (12, 16)
    fg = np.zeros(shape, np.uint8)
    fg[2:8, 3:10] = 255

    def triplet(subset, photo, fg_index, comp_index, mask_array, mask_ext=".png", real=True):
        base = tmp_path / subset
        name = f"{photo}_{fg_index}_{comp_index}.jpg"
        write_image(base / "composite_images" / name, rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
        write_image(base / "masks" / f"{photo}_{fg_index}{mask_ext}", mask_array)
        if real:
            write_image(
                base / "real_images" / f"{photo}.jpg", rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            )
        return name

    flickr = [triplet("HFlickr", "f1", 1, 1, fg), triplet("HFlickr", "f2", 1, 3, np.stack([fg] * 3, -1))]
    coco = [
        triplet("HCOCO", "c1", 2, 1, fg, mask_ext=".jpg"),
        triplet("HCOCO", "c2", 1, 1, fg, real=False),
    ]
    (tmp_path / "HFlickr_test.txt").write_text("\n".join(flickr) + "\n\n")
    (tmp_path / "HCOCO_test.txt").write_text(
        "\r\n".join(f"HCOCO/composite_images/{n}" for n in coco) + "\r\n"
    )
    (tmp_path / "HCOCO_train.txt").write_text("bad.jpg\n" + coco[0] + "\n")
    return tmp_path


def test_lists_present_subsets_in_benchmark_order(tree):
    ds = IHarmony4(tree)
    assert [(s.subset, s.name) for s in ds] == [
        ("HCOCO", "c1_2_1.jpg"),
        ("HCOCO", "c2_1_1.jpg"),
        ("HFlickr", "f1_1_1.jpg"),
        ("HFlickr", "f2_1_3.jpg"),
    ]
    assert ds.subsets == ["HCOCO", "HFlickr"]
    s = ds[0]
    assert s.composite == tree / "HCOCO" / "composite_images" / "c1_2_1.jpg"
    assert s.mask == tree / "HCOCO" / "masks" / "c1_2.jpg"  # JPEG mask found by stem
    assert s.target == tree / "HCOCO" / "real_images" / "c1.jpg"
    assert [x.name for x in IHarmony4(tree, ["hflickr"])] == ["f1_1_1.jpg", "f2_1_3.jpg"]


def test_loads_triplets_with_one_channel_masks(tree):
    ds = IHarmony4(tree, ["HFlickr", "HCOCO"])
    assert ds.subsets == ["HFlickr", "HCOCO"]
    for index in (0, 1, 2):  # L mask, RGB-stored mask, JPEG mask
        composite, mask, target = ds.load(index)
        assert composite.mode == "RGB" and target.mode == "RGB" and mask.mode == "L"
        assert composite.size == mask.size == target.size == (16, 12)
        binary = np.asarray(mask) / 255 > 0.5
        assert binary.sum() == 6 * 7 and binary[2:8, 3:10].all()


def test_missing_file_is_reported_with_its_path_at_load_time(tree):
    ds = IHarmony4(tree, ["HCOCO"])
    with pytest.raises(GknetError, match="c2.jpg"):
        ds.load(1)


def test_bad_list_entries_become_problems(tree):
    ds = IHarmony4(tree, ["HCOCO"], split="train")
    assert [s.name for s in ds] == ["c1_2_1.jpg"]
    assert len(ds.problems) == 1 and ds.problems[0][0].name == "bad.jpg"


def test_any_listed_subset_is_read_and_an_unlisted_folder_reported(tree):
    # A subset outside the benchmark's four, laid out the same way (as RainNet_examples).
    (tree / "HFlickr").rename(tree / "Extra_set")
    (tree / "HFlickr_test.txt").rename(tree / "Extra_set_test.txt")
    (tree / "HCOCO_test.txt").unlink()  # HCOCO/ holds images but now has no test list
    (tree / "IHD_test.txt").write_text("HFlickr/composite_images/f1_1_1.jpg\n")  # iHarmony4's combined list
    ds = IHarmony4(tree)
    assert ds.subsets == ["Extra_set"] and [s.name for s in ds] == ["f1_1_1.jpg", "f2_1_3.jpg"]
    assert ds[0].composite == tree / "Extra_set" / "composite_images" / "f1_1_1.jpg"
    assert ds.problems == [(tree / "HCOCO", "subset folder without a HCOCO_test.txt list: not evaluated")]
    assert IHarmony4(tree, ["extra_SET"]).subsets == ["Extra_set"]
    assert IHarmony4(tree, ["HCOCO"], split="train").problems[0][0].name == "bad.jpg"  # asked for: no report
    with pytest.raises(GknetError, match="HCOCO_test.txt"):
        IHarmony4(tree, ["HCOCO"])


def test_layout_errors(tree, tmp_path_factory):
    with pytest.raises(GknetError, match="HAdobe5k_test.txt"):
        IHarmony4(tree, ["HAdobe5k"])
    with pytest.raises(GknetError, match="Foo_test.txt"):
        IHarmony4(tree, ["Foo"])
    with pytest.raises(GknetError, match="split"):
        IHarmony4(tree, split="val")
    with pytest.raises(GknetError, match="not a directory"):
        IHarmony4(tree / "nope")
    with pytest.raises(GknetError, match="no iHarmony4 split lists"):
        IHarmony4(tmp_path_factory.mktemp("empty"))


@pytest.mark.skipif(not MINI.is_dir(), reason="../shared/examples/iharmony4_mini is absent")
def test_real_example_tree():
    ds = IHarmony4(MINI)
    assert len(ds) == 1 and ds.subsets == ["HAdobe5k"]
    composite, mask, target = ds.load(0)
    assert composite.size == mask.size == target.size == (2832, 4256)
    assert mask.mode == "L"  # stored as RGB
