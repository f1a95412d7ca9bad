"""Synthetic composites made on the fly from real photos + object masks.

Each item is one photo edited twice by :func:`gknet.data.perturbations.make_composite`: the
target is the photo, or the photo re-graded / re-lit as a whole (B); the composite is the
target with the object replaced by an independent edit of it (A), often a colour transfer from
another object of the same category (:mod:`gknet.data.categories`), a real illumination change
or a film grade; a share of items is harmonious (composite = target). Outside the (binary) mask the composite
equals the target exactly. This module holds the dataset, the preview grid, the difficulty
statistics and the export; the edits themselves live in :mod:`gknet.data.perturbations`
(which draws them) and :mod:`gknet.data.grades` / :mod:`gknet.data.transfers`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from gknet.data.augment import crop_flip_resize, resize_triplet, sample_crop_box
from gknet.data.beside import resolve_beside
from gknet.data.categories import ReferencePicker, resolve_categories, split_by_source
from gknet.data.luts import FilmLuts
from gknet.data.perturbations import (
    FAMILIES,
    FAMILY_WEIGHTS,
    HARMONIOUS_SHARE,
    MILD_FRACTION,
    MODE_PROBS,
    SCENE_FAMILIES,
    make_composite,
)
from gknet.data.split import is_validation, unit_hash
from gknet.data.transfers import IlluminationMaps
from gknet.errors import GknetError
from gknet.io.images import IMAGE_SUFFIXES, load_mask, load_rgb, to_pil_image, to_tensor_image

# Beside the photos in ../shared/data: the ccHarmony maps of the ``illuminant`` family and the
# film grades of ``film_grade``.
DEFAULT_ILLUMINATION_MAPS = Path("..") / "illumination_maps" / "ccharmony_polynomial_maps.npz"
DEFAULT_FILM_LUTS = Path("..") / "film_luts" / "film_luts_33.npz"
# Share of colour-transfer references of the photo's own category (else another category). Most
# of iHarmony4 (HCOCO, HFlickr) took every reference from the same category; a fifth from other
# categories keeps the large shifts of real cut-and-paste composites (day/night, other scenes).
SAME_CATEGORY_SHARE = 0.8


@functools.lru_cache(maxsize=4)
def _load(kind: type, path: str):
    """The maps or grades at ``path``, read once per process."""
    return kind(path)


def _resolve(kind: type, default: Path, root: str | Path, choice: str | Path | bool, what: str):
    """The data of :func:`gknet.data.beside.resolve_beside`'s file, or None without one."""
    path = resolve_beside(root, default, choice, what)
    return None if path is None else _load(kind, str(path.resolve()))


def resolve_illumination_maps(root: str | Path, maps: str | Path | bool) -> IlluminationMaps | None:
    """The ``illuminant`` family's maps (see :func:`_resolve`; default DEFAULT_ILLUMINATION_MAPS)."""
    return _resolve(IlluminationMaps, DEFAULT_ILLUMINATION_MAPS, root, maps, "illumination maps")


def resolve_film_luts(root: str | Path, luts: str | Path | bool) -> FilmLuts | None:
    """The ``film_grade`` family's grades (see :func:`_resolve`; default DEFAULT_FILM_LUTS)."""
    return _resolve(FilmLuts, DEFAULT_FILM_LUTS, root, luts, "film grades")


# ----------------------------------------------------------------------------------------------------
# Dataset over a folder of photos + object masks.

MIN_FG_IN_CROP = 0.01  # a crop must keep some object ...
MAX_FG_IN_CROP = 0.95  # ... and some background to harmonize against
REFERENCE_OBJECT_PROB = 0.8  # iHarmony4 transfers colour from another object; sometimes a whole frame
CROP_CANDIDATES = 16
TARGET_AREA = (0.015, 0.25)  # object share of the crop aimed at: median 6%, as in iHarmony4 (2-11%)


def list_photos(root: str | Path) -> list[str]:
    """Names (file stems) of the photos in ``root/images`` that have a ``root/masks/NAME.png``."""
    root = Path(root)
    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise GknetError(f"{root} must contain images/ and masks/ folders")
    names = sorted(
        p.stem
        for p in images.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and (masks / f"{p.stem}.png").is_file()
    )
    if not names:
        raise GknetError(f"no photo in {images} has a mask in {masks} (expected masks/NAME.png)")
    return names


class SyntheticComposites(torch.utils.data.Dataset):
    """Composites made on the fly from photos + object masks (see :func:`make_composite`).

    Train items depend only on (seed, epoch, index): call ``set_epoch`` every epoch for fresh
    crops and perturbations. Validation items depend only on (seed, name): always the same.
    ``illumination_maps`` / ``film_luts``: see :func:`resolve_illumination_maps` /
    :func:`resolve_film_luts`; ``skipped`` says which family was left out for want of its file.
    ``categories``: True reads ``root/categories.csv`` when present (then the split keeps each
    source picture on one side and references are of the same category with probability
    ``same_category_share``, see :mod:`gknet.data.categories`), False ignores it, or a path.
    ``mode_probs`` and ``family_weights`` change the edit mix (e.g. {"object": 1} for
    object-only edits); ``harmonious_share`` and ``mild_share``: see :func:`make_composite`.
    ``cache_mb``: decoded photos and masks kept in memory up to this size (decoding is about a
    third of an item's cost, and every epoch reads every photo again); 0 keeps none.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 256,
        val_fraction: float = 0.1,
        seed: int = 0,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        hflip: bool = True,
        limit: int = 0,
        illumination_maps: str | Path | bool = True,
        mode_probs: dict[str, float] = MODE_PROBS,
        family_weights: dict[str, float] = FAMILY_WEIGHTS,
        categories: str | Path | bool = True,
        same_category_share: float = SAME_CATEGORY_SHARE,
        harmonious_share: float = HARMONIOUS_SHARE,
        mild_share: float = MILD_FRACTION,
        film_luts: str | Path | bool = True,
        cache_mb: float = 0.0,
    ) -> None:
        if split not in ("train", "val"):
            raise GknetError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise GknetError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.root = Path(root)
        self.split = split
        self.image_size = image_size
        self.seed = seed
        self.crop_scale = crop_scale
        self.hflip = hflip
        self.epoch = 0
        for label, share in (
            ("same_category_share", same_category_share),
            ("harmonious_share", harmonious_share),
            ("mild_share", mild_share),
        ):
            if not 0.0 <= share <= 1.0:
                raise GknetError(f"{label} must be in [0, 1], got {share}")
        names = list_photos(self.root)
        self.categories = resolve_categories(self.root, categories)
        if self.categories is None:
            held_out = {n for n in names if is_validation(n, seed, val_fraction)}
        else:  # another object of a validation picture never appears in training
            held_out = split_by_source(names, self.categories, seed, val_fraction)
        # References for colour transfer come from the same split: validation never feeds training.
        self.pool = [n for n in names if (n in held_out) == (split == "val")]
        if not self.pool:
            raise GknetError(f"the {split} split of {self.root} is empty (val_fraction={val_fraction})")
        self.names = self.pool[:limit] if limit > 0 else self.pool
        self.references = ReferencePicker(self.pool, self.categories, same_category_share)
        self.harmonious_share, self.mild_share = harmonious_share, mild_share
        self.illuminants = resolve_illumination_maps(self.root, illumination_maps)
        self.luts = resolve_film_luts(self.root, film_luts)
        self.skipped = [
            f"{family}: {path} not found beside the photos, the family is left out"
            for family, data, choice, path in (
                ("illuminant", self.illuminants, illumination_maps, DEFAULT_ILLUMINATION_MAPS),
                ("film_grade", self.luts, film_luts, DEFAULT_FILM_LUTS),
            )
            if data is None and choice is True
        ]
        unknown = sorted(set(mode_probs) - set(MODE_PROBS)) + sorted(set(family_weights) - set(FAMILIES))
        if unknown or sum(mode_probs.values()) <= 0 or sum(family_weights.values()) <= 0:
            raise GknetError(f"bad edit mix: unknown {unknown} or no positive weight")
        self.mode_probs, self.family_weights = dict(mode_probs), dict(family_weights)
        self._small: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # reference photos, reduced
        self._decoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_left = int(cache_mb * 2**20)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.names)

    def _rng(self, index: int) -> np.random.Generator:
        if self.split == "val":
            return np.random.default_rng([self.seed, int(unit_hash(self.names[index]) * 2**32)])
        return np.random.default_rng([self.seed, self.epoch, index])

    def _image_path(self, name: str) -> Path:
        for suffix in (".jpg", *IMAGE_SUFFIXES):
            path = self.root / "images" / f"{name}{suffix}"
            if path.is_file():
                return path
        raise GknetError(f"photo {name} disappeared from {self.root / 'images'}")

    def _load(self, name: str) -> tuple[Image.Image, Image.Image]:
        if name in self._decoded:
            return tuple(Image.fromarray(a) for a in self._decoded[name])
        image, mask = load_rgb(self._image_path(name)), load_mask(self.root / "masks" / f"{name}.png")
        if image.size != mask.size:
            raise GknetError(f"{name}: image {image.size} and mask {mask.size} differ in size")
        arrays = np.asarray(image), np.asarray(mask)
        size = sum(a.nbytes for a in arrays)
        if size <= self._cache_left:
            self._decoded[name] = arrays
            self._cache_left -= size
        return image, mask

    def _crop(self, image, mask, rng):
        """Random crop + flip that keeps part of the object and part of the background.

        Of CROP_CANDIDATES boxes the one whose object share is nearest (in log) to a target drawn
        log-uniformly from TARGET_AREA: the photos' objects are larger than iHarmony4's.
        """
        # Summed-area table: the object share of any box in O(1).
        table = np.pad((np.asarray(mask) > 127).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        flip = bool(self.hflip and rng.random() < 0.5)
        target = np.exp(rng.uniform(*np.log(TARGET_AREA)))
        box, best = (0, 0, *image.size), np.inf
        for _ in range(CROP_CANDIDATES):
            candidate = sample_crop_box(*image.size, self.crop_scale, rng)
            left, top, right, bottom = candidate
            inside = table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]
            share = inside / ((right - left) * (bottom - top))
            if MIN_FG_IN_CROP <= share <= MAX_FG_IN_CROP and abs(np.log(share / target)) < best:
                box, best = candidate, abs(np.log(share / target))
        cropped = crop_flip_resize([image, mask], box, flip, self.image_size)
        if not 0 < (np.asarray(cropped[1]) > 127).mean() < 1:
            cropped = crop_flip_resize([image, mask], (0, 0, *image.size), flip, self.image_size)
        return cropped

    def _reference(self, name: str, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        """Pixels of another photo of the split, small (only their statistics matter), and where
        they come from: the object of a photo of the same category (or group), else another
        category's object or (with probability 1 - REFERENCE_OBJECT_PROB) its whole frame."""
        other, match = self.references.draw(name, rng)
        info = {"name": other, "match": match}
        if other not in self._small:  # a few KB per photo: kept, a reference is drawn every sample
            image, mask = self._load(other)
            factor = max(1, min(image.size) // 64)
            self._small[other] = (np.array(image.reduce(factor)), np.asarray(mask.reduce(factor)) > 127)
        pixels, fg = self._small[other]
        pixels = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
        same = match in ("category", "group")
        if (same or rng.random() < REFERENCE_OBJECT_PROB) and fg.sum() >= 16:
            return pixels[:, torch.from_numpy(fg)].unsqueeze(1), {**info, "object": True}
        return pixels, {**info, "object": False}

    def sample(
        self,
        index: int,
        mode: str | None = None,
        families: Sequence[str] | None = None,
        scene_families: Sequence[str] | None = None,
    ) -> tuple[dict, dict]:
        """The item at ``index`` and the edit info (mode; families, strengths, parameters per edit).

        ``mode``, ``families`` (A) and ``scene_families`` (B) force the edit, e.g. for a preview.
        """
        name = self.names[index]
        rng = self._rng(index)
        image, mask = self._load(name)
        if self.split == "train":
            image, mask = self._crop(image, mask, rng)
        else:
            image, mask = resize_triplet([image, mask], self.image_size)
        photo = to_tensor_image(image)
        fg = (to_tensor_image(mask) > 0.5).float()
        reference, reference_info = self._reference(name, rng)
        composite, target, info = make_composite(
            photo,
            fg,
            rng,
            reference,
            self.illuminants,
            mode,
            self.mode_probs,
            self.family_weights,
            families,
            scene_families,
            self.luts,
            self.harmonious_share,
            self.mild_share,
        )
        info["reference"] = reference_info
        return {"composite": composite, "mask": fg, "target": target, "name": name}, info

    def __getitem__(self, index: int) -> dict:
        return self.sample(index)[0]


# ----------------------------------------------------------------------------------------------------
# Preview grid for people.


def _tile(x: torch.Tensor) -> Image.Image:
    return to_pil_image(x.expand(3, -1, -1) if x.shape[0] == 1 else x)


def each_edit(dataset: SyntheticComposites) -> list[tuple[str, list[str] | None, list[str] | None]]:
    """(mode, object families, scene families) showing every family once, then a random "both"."""
    missing = {"illuminant": dataset.illuminants is None, "film_grade": dataset.luts is None}
    edits = [("object", [f], None) for f in FAMILIES if not missing.get(f)]
    edits += [("scene", None, [f]) for f in SCENE_FAMILIES if not missing.get(f)]
    return edits + [("both", None, None)]


def preview_grid(
    dataset: SyntheticComposites,
    indices: Sequence[int],
    edits: Sequence[tuple[str, list[str] | None, list[str] | None]] | None = None,
) -> Image.Image:
    """Rows composite | mask | target, one column per item, labelled with name, mode and families.

    ``edits``: one column per (mode, object families, scene families), e.g. :func:`each_edit`,
    on the photos ``indices`` in turn; by default the items' own random edits.
    """
    size = dataset.image_size
    columns = [(index, None, None, None) for index in indices]
    if edits is not None:
        columns = [(indices[i % len(indices)], *edit) for i, edit in enumerate(edits)]
    label_w, pad = 80, 2
    grid = Image.new("RGB", (label_w + len(columns) * (size + pad), 3 * (size + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for row, title in enumerate(("composite", "mask", "target")):
        draw.text((4, row * (size + pad) + size // 2), title, fill="black")
    for col, (index, *edit) in enumerate(columns):
        item, info = dataset.sample(index, *edit)
        x = label_w + col * (size + pad)
        for row, key in enumerate(("composite", "mask", "target")):
            grid.paste(_tile(item[key]), (x, row * (size + pad)))
        text = "\n".join([item["name"], *describe(info)])
        draw.multiline_text((x + 3, 3), text, fill="white", stroke_width=1, stroke_fill="black")
    return grid


def describe(info: dict) -> list[str]:
    """Label lines for an item's edit info: the mode, then each edit's families and strengths
    (A: the object's edit, B: the scene's)."""
    lines = [info["mode"]]
    for tag, key in (("A", "object"), ("B", "scene")):
        edit = info[key]
        if edit is not None:
            mild = " (mild)" if edit["mild"] else ""
            lines += [f"{tag}: {f} {edit['strengths'][f]:.2f}{mild}" for f in edit["families"]]
    return lines


def spread_indices(length: int, count: int) -> list[int]:
    """``count`` indices spread evenly over a dataset of ``length`` items (all when it is smaller)."""
    return sorted({int(i) for i in np.linspace(0, length - 1, min(count, length))})


# iHarmony4 test composites (the real benchmark the generator imitates): median fMSE per subset;
# 10-90% of its fMSE lie in roughly 250-5000 and the median object covers 2-11% of the frame.
IHARMONY4_FMSE_MEDIAN = {"HCOCO": 738, "HAdobe5k": 1402, "HFlickr": 1091, "Hday2night": 893}
IHARMONY4_FMSE_RANGE = (250, 5000)
IHARMONY4_AREA_MEDIAN = (0.02, 0.11)
STATS_PERCENTILES = (10, 25, 50, 90)


def composite_stats(dataset: SyntheticComposites, indices: Sequence[int]) -> dict:
    """Difficulty and make-up of the raw composites against their targets (0-255 scale).

    Mean MSE / fMSE / PSNR, fMSE and object-area percentiles (STATS_PERCENTILES), and the share
    of items per edit mode and per family (A: object edit, B: scene edit).
    """
    from collections import Counter

    from tqdm import tqdm

    from gknet.evaluation.metrics import image_metrics

    rows, modes, families = [], Counter(), Counter()
    for index in tqdm(indices, desc="composites", unit="img", leave=False):
        item, info = dataset.sample(index)
        metrics = image_metrics(item["composite"][None] * 255, item["target"][None] * 255, item["mask"][None])
        rows.append([metrics[k].item() for k in ("mse", "fmse", "psnr")] + [item["mask"].mean().item()])
        modes[info["mode"]] += 1
        for tag, key in (("A", "object"), ("B", "scene")):
            families.update(f"{tag}: {f}" for f in (info[key] or {"families": []})["families"])
    mse, fmse, psnr, area = np.array(rows).T
    count = len(rows)

    def percentiles(values):
        return dict(zip(STATS_PERCENTILES, np.percentile(values, STATS_PERCENTILES).tolist(), strict=True))

    return {
        "count": count,
        "mse": float(mse.mean()),
        "fmse": float(fmse.mean()),
        "fmse_median": float(np.median(fmse)),
        "psnr": float(psnr.mean()),
        "fmse_percentiles": percentiles(fmse),
        "area_percentiles": percentiles(area),
        "modes": {m: modes[m] / count for m in sorted(modes)},
        "families": {f: families[f] / count for f in sorted(families)},
    }


def format_stats(stats: dict, label: str) -> str:
    """``composite_stats`` as a few lines of text beside the iHarmony4 test figures."""
    pct = "/".join(f"{p}" for p in STATS_PERCENTILES)
    fmse = " / ".join(f"{v:.0f}" for v in stats["fmse_percentiles"].values())
    area = " / ".join(f"{100 * v:.1f}%" for v in stats["area_percentiles"].values())
    real = ", ".join(f"{k} {v}" for k, v in IHARMONY4_FMSE_MEDIAN.items())
    families = ", ".join(f"{f} {100 * v:.0f}%" for f, v in stats["families"].items())
    low, high = IHARMONY4_FMSE_RANGE
    small, large = (round(100 * v) for v in IHARMONY4_AREA_MEDIAN)
    lines = [
        f"{label}: {stats['count']} composites: MSE {stats['mse']:.2f}  fMSE {stats['fmse']:.2f} "
        f"(median {stats['fmse_median']:.2f})  PSNR {stats['psnr']:.2f} dB",
        f"  fMSE p{pct}: {fmse}   iHarmony4 test: median {real}; p10-p90 about {low}-{high}",
        f"  object area p{pct}: {area}   iHarmony4 test: median {small}-{large}%",
        "  modes: " + ", ".join(f"{m} {100 * v:.0f}%" for m, v in stats["modes"].items()),
        f"  families (share of items): {families}",
    ]
    return "\n".join(lines)


def export_triplets(dataset: SyntheticComposites, out_dir: str | Path, overwrite: bool = False) -> int:
    """Write every item as lossless PNGs ``out_dir/{composites,masks,targets}/NAME.png``.

    The folders pair by stem, so ``gknet evaluate --composites ... --masks ... --targets ...``
    scores any method on exactly these composites (e.g. the fixed validation split).
    """
    from tqdm import tqdm

    from gknet.io.images import save_image_atomic

    out_dir = Path(out_dir)
    for index in tqdm(range(len(dataset)), desc="export", unit="img"):
        item = dataset[index]
        for folder, key in (("composites", "composite"), ("masks", "mask"), ("targets", "target")):
            save_image_atomic(to_pil_image(item[key]), out_dir / folder / f"{item['name']}.png", overwrite)
    return len(dataset)
