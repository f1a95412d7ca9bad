"""Object categories of the training photos and same-category colour-transfer references.

iHarmony4 made HCOCO and HFlickr by transferring colour from another object of the same
category, so its shifts are subtle and plausible (a plate stays plate-coloured, just off); a
reference from a random photo teaches large shifts only. ``categories.csv`` beside the photos
(``name,category,label,source_folder,source_file``) gives each photo's object category and the
source picture it was cut from: several photos may be different objects of one picture, and
such photos are kept on the same side of the train/validation split.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gknet.data.beside import resolve_beside
from gknet.data.split import is_validation
from gknet.errors import GknetError

CATEGORIES_FILE = "categories.csv"
# Coarse groups: a category with few photos lends its group's references.
CATEGORY_GROUPS = {
    "vegetation": ("tree", "foliage", "plant", "bush", "flower", "field"),
    "terrain": ("mountain", "rock", "snow", "sand"),
    "road": ("road",),
    "sky": ("sky",),
    "water": ("water",),
    "buildings": ("building", "house"),
    "vehicles": ("car", "motorcycle", "truck"),
    "living": ("person", "horse"),
}
GROUP_OF = {category: group for group, members in CATEGORY_GROUPS.items() for category in members}
MIN_CATEGORY_PHOTOS = 10  # fewer photos of a category in the split: its group's are used
_COLUMNS = ("name", "category", "source_folder", "source_file")


@dataclass(frozen=True)
class PhotoCategory:
    category: str
    source: str  # the picture the photo was cut from (folder/file)

    @property
    def group(self) -> str:
        """The coarse group (the category itself when it belongs to none)."""
        return GROUP_OF.get(self.category, self.category)


def read_categories(path: str | Path) -> dict[str, PhotoCategory]:
    """``{photo name: PhotoCategory}`` from a categories.csv, or GknetError naming the problem."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GknetError(f"cannot read photo categories {path}: {exc}") from None
    missing = [c for c in _COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise GknetError(f"{path} must have the columns {', '.join(_COLUMNS)} (missing {', '.join(missing)})")
    return {
        row["name"]: PhotoCategory(row["category"], f"{row['source_folder']}/{row['source_file']}")
        for row in rows
    }


def resolve_categories(root: str | Path, categories: str | Path | bool) -> dict[str, PhotoCategory] | None:
    """``categories`` True: ``root/categories.csv`` when it exists (else None: random references,
    split by name); False: None; a path: that file (an error when missing)."""
    path = resolve_beside(root, Path(CATEGORIES_FILE), categories, "photo categories")
    return None if path is None else read_categories(path)


def split_by_source(
    names: list[str], categories: dict[str, PhotoCategory], seed: int, val_fraction: float
) -> set[str]:
    """The validation names: a source picture's photos are held out together, when every one of
    them is held out by name (:func:`is_validation`). Validation thus never shows a picture that
    training uses, and stays a subset of the name split (never trained on by models made with it)."""
    missing = [n for n in names if n not in categories]
    if missing:
        raise GknetError(f"the photo categories have no row for {len(missing)} photo(s), e.g. {missing[0]}")
    by_source: dict[str, list[str]] = {}
    for name in names:
        by_source.setdefault(categories[name].source, []).append(name)
    return {
        name
        for group in by_source.values()
        if all(is_validation(n, seed, val_fraction) for n in group)
        for name in group
    }


class ReferencePicker:
    """Draws the colour-transfer reference photo for a photo of ``pool``.

    With probability ``same_share`` a photo of the same category (of the same group when the
    split holds fewer than MIN_CATEGORY_PHOTOS of it), otherwise one of another category; never
    the photo itself nor another cut of its source picture. Without categories: any other photo.
    """

    def __init__(self, pool: list[str], categories: dict[str, PhotoCategory] | None, same_share: float):
        self.pool, self.categories, self.same_share = pool, categories, same_share
        self._by: dict[str, list[str]] = {}
        self._others: dict[str, list[str]] = {}  # per category, made on first use
        if categories is None:
            return
        for name in pool:
            info = categories[name]
            for key in (f"category:{info.category}", f"group:{info.group}"):
                self._by.setdefault(key, []).append(name)

    def _candidates(self, name: str) -> tuple[str, list[str]]:
        info = self.categories[name]
        same = self._by[f"category:{info.category}"]
        if len(same) >= MIN_CATEGORY_PHOTOS:
            return "category", same
        return "group", self._by[f"group:{info.group}"]

    def draw(self, name: str, rng: np.random.Generator) -> tuple[str, str]:
        """(reference name, how it matches: "category", "group", "other" or "any")."""
        if self.categories is None:
            return self._pick(name, self.pool, rng) or name, "any"
        if rng.random() < self.same_share:
            match, candidates = self._candidates(name)
            choice = self._pick(name, candidates, rng)
            if choice is not None:
                return choice, match
        category = self.categories[name].category
        if category not in self._others:
            self._others[category] = [n for n in self.pool if self.categories[n].category != category]
        return self._pick(name, self._others[category] or self.pool, rng) or name, "other"

    def _pick(self, name: str, candidates: list[str], rng: np.random.Generator) -> str | None:
        """A random candidate that is not ``name`` nor cut from its picture (None if none is)."""
        start = int(rng.integers(len(candidates)))
        source = self.categories[name].source if self.categories else None
        for k in range(len(candidates)):  # the next usable one after a random start
            other = candidates[(start + k) % len(candidates)]
            if other != name and (source is None or self.categories[other].source != source):
                return other
        return None
