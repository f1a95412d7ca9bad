"""Same-category colour-transfer references and the split by source picture."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from gknet.data.categories import (
    MIN_CATEGORY_PHOTOS,
    PhotoCategory,
    ReferencePicker,
    read_categories,
    resolve_categories,
    split_by_source,
)
from gknet.data.split import is_validation
from gknet.data.synthetic import SAME_CATEGORY_SHARE, SyntheticComposites, list_photos
from gknet.errors import GknetError
from tests.conftest import require_shared


def _catalogue() -> dict[str, PhotoCategory]:
    """30 trees, 20 skies, 3 horses and 4 persons (both small: the 'living' group), 6 houses (small:
    'buildings' with 12 buildings); every third tree shares its source picture with a sky."""
    rows = {}
    for category, count in (
        ("tree", 30),
        ("sky", 20),
        ("horse", 3),
        ("person", 4),
        ("house", 6),
        ("building", 12),
    ):
        for i in range(count):
            rows[f"{category}{i}"] = PhotoCategory(category, f"{category}/{i}.jpg")
    for i in range(0, 20, 3):
        rows[f"sky{i}"] = PhotoCategory("sky", f"tree/{i}.jpg")
    return rows


@pytest.mark.parametrize("share", [0.0, 0.3, 0.8, 1.0])
def test_reference_is_of_the_same_category_at_the_configured_rate(share):
    categories = _catalogue()
    pool = list(categories)
    picker = ReferencePicker(pool, categories, share)
    rng = np.random.default_rng(0)
    draws, same = 3000, 0
    for k in range(draws):
        name = pool[k % len(pool)]
        other, match = picker.draw(name, rng)
        mine, theirs = categories[name], categories[other]
        assert other != name and theirs.source != mine.source  # never the same picture
        if match == "category":
            assert theirs.category == mine.category
        elif match == "group":  # only for categories with too few photos
            assert (
                theirs.group == mine.group
                and sum(c.category == mine.category for c in categories.values()) < MIN_CATEGORY_PHOTOS
            )
        else:
            assert match == "other" and theirs.category != mine.category
        same += match in ("category", "group")
    # binomial count: within 4 standard deviations of the configured share
    assert abs(same - share * draws) <= 4 * math.sqrt(draws * share * (1 - share)) + 1e-9


def test_split_by_source_keeps_each_picture_on_one_side():
    categories = _catalogue()
    names = list(categories)
    for seed in range(5):
        val = split_by_source(names, categories, seed, 0.3)
        by_name = {n for n in names if is_validation(n, seed, 0.3)}
        assert val <= by_name  # a subset of the name split
        sources_val = {categories[n].source for n in val}
        sources_train = {categories[n].source for n in names if n not in val}
        assert not sources_val & sources_train
        # a picture is held out exactly when all its photos are held out by name
        for name in by_name - val:
            siblings = [n for n in names if categories[n].source == categories[name].source]
            assert len(siblings) > 1 and not all(n in by_name for n in siblings)
    with pytest.raises(GknetError, match="no row for 1 photo"):
        split_by_source([*names, "stray"], categories, 0, 0.3)


def test_categories_file_errors(tmp_path):
    assert resolve_categories(tmp_path, True) is None  # absent: random references, split by name
    assert resolve_categories(tmp_path, False) is None
    with pytest.raises(GknetError, match="not found"):
        resolve_categories(tmp_path, tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("name,label\na,b\n")
    with pytest.raises(GknetError, match="must have the columns"):
        read_categories(tmp_path / "bad.csv")


def test_shared_photos_split_by_source_picture():
    root = require_shared("data", "photos")
    categories = read_categories(root / "categories.csv")
    names = list_photos(root)
    train = SyntheticComposites(root, "train", image_size=32)
    val = SyntheticComposites(root, "val", image_size=32)
    assert len(train) + len(val) == len(names) == 1999
    sources = collections.Counter(c.source for c in categories.values())
    assert sum(n for n in sources.values() if n > 1) == 554  # photos sharing a source picture
    assert not {categories[n].source for n in train.pool} & {categories[n].source for n in val.pool}
    # validation: the name split's photos whose every sibling is held out too (never trained on
    # by models made with the name split)
    old = {n for n in names if is_validation(n, 0, 0.1)}
    assert set(val.pool) <= old and len(val) == 162


def test_dataset_references_follow_the_share():
    root = require_shared("data", "photos")
    ds = SyntheticComposites(root, "train", image_size=32, limit=40)
    assert ds.references.same_share == SAME_CATEGORY_SHARE
    for i in range(len(ds)):
        _, info = ds.sample(i)
        reference = info["reference"]
        mine, theirs = ds.categories[ds.names[i]], ds.categories[reference["name"]]
        assert reference["name"] in ds.pool and theirs.source != mine.source
        if reference["match"] in ("category", "group"):
            assert reference["object"] and theirs.group == mine.group
    other = SyntheticComposites(root, "train", image_size=32, limit=10, same_category_share=0.0)
    assert all(other.sample(i)[1]["reference"]["match"] == "other" for i in range(10))
    with pytest.raises(GknetError, match="same_category_share must be in"):
        SyntheticComposites(root, "val", same_category_share=1.5)
