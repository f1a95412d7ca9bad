"""Realistic synthetic composites: a real photo is the target, its object re-lit or re-graded is the input.

iHarmony4 builds its composites by changing a real object's appearance: colour transfer from
other photos and LUTs (HCOCO, HFlickr), the same photo retouched by another expert (HAdobe5k),
the same scene at another time of day (Hday2night). ``perturb_foreground`` imitates those edits
with a few families of smooth, plausible changes, 1-3 of them per sample with random strengths:

- white_balance: colour temperature / tint gains in (approximately) linear light.
- exposure_gamma: exposure in stops, then a gamma.
- saturation_contrast: saturation around luma, contrast around the object's mean luma.
- tone_curve: smooth monotone master + per-channel curves (Bernstein polynomials).
- color_transfer: Lab mean/std transfer towards a reference photo (or random statistics).
- day_night: darker, bluer, desaturated, more contrast (optionally lit bright spots) or dusk.
- light_gradient: a smooth low-frequency gain (light falloff / soft shadow) across the object.

The composite equals the target exactly outside the (binary) mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from gknet.color import lab_to_rgb, rgb_to_lab
from gknet.data.augment import crop_flip_resize, resize_triplet, sample_crop_box
from gknet.data.imageio import IMAGE_SUFFIXES, load_mask, load_rgb, to_pil_image, to_tensor_image
from gknet.data.split import is_validation, unit_hash
from gknet.errors import GknetError

FAMILIES = (
    "white_balance",
    "exposure_gamma",
    "saturation_contrast",
    "tone_curve",
    "color_transfer",
    "day_night",
    "light_gradient",
)
# Relative frequencies when families are drawn at random (colour grading dominates iHarmony4).
FAMILY_WEIGHTS = {
    "white_balance": 1.0,
    "exposure_gamma": 1.0,
    "saturation_contrast": 0.8,
    "tone_curve": 1.0,
    "color_transfer": 1.2,
    "day_night": 0.5,
    "light_gradient": 0.6,
}
FAMILY_COUNT_PROBS = (0.45, 0.4, 0.15)  # 1, 2 or 3 families per sample
MILD_FRACTION = 0.15  # samples whose strengths are scaled down: near-harmonious inputs exist too
MILD_SCALE = 0.3
STRENGTH_RANGE = (0.35, 1.0)

_GAMMA = 2.2  # sRGB <-> linear approximation; exact transfer curves are not needed for plausible edits
_LUMA = (0.2126, 0.7152, 0.0722)
_CURVE_DEGREE = 5
_LUT_SIZE = 1024
_LUT_GRID = np.linspace(0.0, 1.0, _LUT_SIZE)


# ----------------------------------------------------------------------------------------------------
# Elementary edits on foreground pixels [3, N] in [0, 1] (only the object is computed: fast).


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor(_LUMA, dtype=x.dtype).view(3, 1)).sum(0, keepdim=True)


def _gain_linear(x: torch.Tensor, log2_gain: torch.Tensor | float) -> torch.Tensor:
    """Multiply linear light by 2**log2_gain (a scalar, [3, 1] or [3, N])."""
    return (x.pow(_GAMMA) * torch.exp2(torch.as_tensor(log2_gain, dtype=x.dtype))).clamp(0, 1).pow(1 / _GAMMA)


def _wb_log2_gains(temperature: float, tint: float) -> torch.Tensor:
    """Per-channel log2 gains [3, 1] for a warm(+)/cool(-) temperature and magenta(+)/green(-) tint.

    Normalised so that a neutral grey keeps its luminance: white balance changes colour, not exposure.
    """
    log2 = np.array([temperature / 2 + tint / 4, -tint / 2, -temperature / 2 + tint / 4])
    log2 -= np.log2(np.dot(_LUMA, np.exp2(log2)))
    return torch.tensor(log2, dtype=torch.float32).view(3, 1)


def _saturate(x: torch.Tensor, factor: float) -> torch.Tensor:
    y = _luma(x)
    return (y + factor * (x - y)).clamp(0, 1)


def _contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = _luma(x).mean()
    return (mean + factor * (x - mean)).clamp(0, 1)


def _bernstein_curve(coeffs: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Bernstein polynomial with the given coefficients: monotone when the coefficients are."""
    n = len(coeffs) - 1
    k = np.arange(n + 1)
    binom = np.array([math.comb(n, i) for i in k])
    basis = binom * grid[:, None] ** k * (1 - grid[:, None]) ** (n - k)
    return basis @ coeffs


def _random_curve(rng: np.random.Generator, spread: float, black: float, white: float) -> np.ndarray:
    """Monotone smooth curve from ``black`` to ``white`` on the LUT grid: random Bernstein steps."""
    steps = np.exp(rng.normal(0.0, spread, _CURVE_DEGREE))
    coeffs = np.concatenate([[0.0], np.cumsum(steps) / steps.sum()])
    return black + (white - black) * _bernstein_curve(coeffs, _LUT_GRID)


# ----------------------------------------------------------------------------------------------------
# Families: each draws its parameters from ``rng`` (scaled by strength ``s``) and returns
# (pixels, params). ``pos`` [2, N] holds the pixels' (row, column) for spatially varying edits.

Family = Callable[
    [torch.Tensor, torch.Tensor, np.random.Generator, float, "torch.Tensor | None"],
    tuple[torch.Tensor, dict],
]


def _signed(rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float]) -> float:
    """-U(*low) or +U(*high) with equal odds: a clear change in either direction, never ~0."""
    return float(-rng.uniform(*low) if rng.random() < 0.5 else rng.uniform(*high))


def _white_balance(x, pos, rng, s, reference):
    temperature = _signed(rng, (0.3, 1.4), (0.3, 1.4)) * s
    tint = float(rng.uniform(-0.5, 0.5) * s)
    return _gain_linear(x, _wb_log2_gains(temperature, tint)), {"temperature": temperature, "tint": tint}


def _exposure_gamma(x, pos, rng, s, reference):
    stops = _signed(rng, (0.3, 1.6), (0.3, 1.0)) * s
    gamma = float(np.exp(_signed(rng, (0.1, 0.4), (0.1, 0.4)) * s))
    return _gain_linear(x, stops).pow(gamma), {"stops": stops, "gamma": gamma}


def _saturation_contrast(x, pos, rng, s, reference):
    saturation = float(np.exp(_signed(rng, (0.25, 0.9), (0.2, 0.5)) * s))
    contrast = float(np.exp(_signed(rng, (0.15, 0.5), (0.15, 0.4)) * s))
    return _contrast(_saturate(x, saturation), contrast), {"saturation": saturation, "contrast": contrast}


def _tone_curve(x, pos, rng, s, reference):
    master = _random_curve(rng, 0.9 * s, rng.uniform(0, 0.06) * s, 1 - rng.uniform(0, 0.1) * s)
    luts = []
    for _ in range(3):
        channel = _random_curve(rng, 0.45 * s, rng.uniform(0, 0.04) * s, 1 - rng.uniform(0, 0.06) * s)
        luts.append(np.interp(master, _LUT_GRID, channel))
    lut = torch.from_numpy(np.stack(luts).astype(np.float32))
    idx = (x.clamp(0, 1) * (_LUT_SIZE - 1)).round().long()
    return torch.gather(lut, 1, idx), {"mid_gray": lut[:, _LUT_SIZE // 2].tolist()}


def _lab_stats(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lab pixels [3, N] of any [3, ...] RGB tensor, with their per-channel mean and std [3, 1]."""
    lab = rgb_to_lab(rgb.reshape(3, 1, -1)).reshape(3, -1)
    return lab, lab.mean(1, keepdim=True), lab.std(1, keepdim=True).clamp_min(1e-3)


def _color_transfer(x, pos, rng, s, reference):
    lab, mean, std = _lab_stats(x)
    if reference is not None:
        _, ref_mean, ref_std = _lab_stats(reference.to(x.dtype))
    else:
        ref_mean = mean + torch.tensor(rng.normal(0, 1, (3, 1)) * [[12.0], [9.0], [9.0]], dtype=x.dtype)
        ref_std = std * torch.tensor(np.exp(rng.normal(0, 0.3, (3, 1))), dtype=x.dtype)
    # Extreme std ratios (a flat sky onto a textured object) give noise-like artefacts, not a colour grade.
    ratio = (ref_std / std).clamp(0.5, 2.0)
    alpha = float(rng.uniform(0.6, 1.0) * s)
    moved = (lab - mean) * ratio + ref_mean
    out = lab_to_rgb((lab + alpha * (moved - lab)).view(3, 1, -1)).view_as(x)
    shift = (ref_mean - mean).flatten().tolist()
    return out, {"alpha": alpha, "lab_shift": shift, "reference": reference is not None}


def _day_night(x, pos, rng, s, reference):
    original = x
    s = 0.5 + 0.5 * s  # a time-of-day change is never subtle
    if rng.random() < 0.6:
        mode, stops = "night", -rng.uniform(1.5, 3.0) * s
        temperature, tint = -rng.uniform(0.4, 0.9) * s, rng.uniform(-0.1, 0.15) * s
        saturation, contrast = 1 - rng.uniform(0.3, 0.7) * s, 1 + rng.uniform(0.1, 0.4) * s
    else:
        mode, stops = "dusk", -rng.uniform(0.4, 1.4) * s
        temperature, tint = rng.uniform(0.4, 0.9) * s, rng.uniform(0.0, 0.3) * s
        saturation, contrast = 1 + rng.uniform(-0.2, 0.25) * s, 1 + rng.uniform(0.0, 0.3) * s
    x = _gain_linear(x, _wb_log2_gains(temperature, tint) + stops)
    x = _contrast(_saturate(x, saturation), contrast)
    params = {"mode": mode, "stops": float(stops), "temperature": float(temperature), "lights": False}
    if mode == "night" and rng.random() < 0.5:
        # Lit windows / lamps: the brightest parts of the object stay bright and turn warm.
        y = _luma(original)
        threshold = torch.quantile(y, 1 - rng.uniform(0.03, 0.12)).item()
        weight = ((y - threshold) / max(1 - threshold, 1e-3)).clamp(0, 1)
        weight = weight * weight * (3 - 2 * weight)  # smoothstep: no hard edge around the lights
        warm = _gain_linear(original, _wb_log2_gains(1.2, 0.1) + 0.3)
        x = x + weight * (warm - x)
        params["lights"] = True
    return x, params


def _light_gradient(x, pos, rng, s, reference):
    lo = pos.min(1, keepdim=True).values
    extent = pos.max(1, keepdim=True).values - lo
    v, u = ((pos - lo) / extent.clamp_min(1) * 2 - 1).float()  # [-1, 1] over the object's bounding box
    angle = rng.uniform(0, 2 * np.pi)
    ramp_stops = rng.uniform(1.0, 2.5) * s
    field = ramp_stops / 2 * (np.cos(angle) * u + np.sin(angle) * v)
    # Soft blobs: a 3x3 grid of random gains, bicubically interpolated over the bounding box.
    blob_stops = rng.uniform(0.3, 0.8) * s
    blobs = torch.tensor(rng.normal(0, blob_stops, (1, 1, 3, 3)), dtype=torch.float32)
    size = (int(extent[0]) + 1, int(extent[1]) + 1)
    box = F.interpolate(blobs, size=size, mode="bicubic", align_corners=True)[0, 0]
    field = field + box[pos[0] - lo[0], pos[1] - lo[1]]
    field = field - field.mean()  # redistributes light; exposure_gamma handles global brightness
    # Sunlit parts are warmer and shadowed parts bluer (lit by the sky).
    warmth = rng.uniform(0.0, 0.3)
    log2 = field * torch.tensor([[1 + warmth], [1.0], [1 - warmth]])
    params = {"ramp_stops": float(ramp_stops), "blob_stops": float(blob_stops), "warmth": float(warmth)}
    return _gain_linear(x, log2), params


_FAMILY_FUNCS: dict[str, Family] = {
    "white_balance": _white_balance,
    "exposure_gamma": _exposure_gamma,
    "saturation_contrast": _saturation_contrast,
    "tone_curve": _tone_curve,
    "color_transfer": _color_transfer,
    "day_night": _day_night,
    "light_gradient": _light_gradient,
}


def sample_families(rng: np.random.Generator) -> list[str]:
    """1-3 distinct families drawn by FAMILY_WEIGHTS, in FAMILIES order."""
    count = int(rng.choice(len(FAMILY_COUNT_PROBS), p=FAMILY_COUNT_PROBS)) + 1
    weights = np.array([FAMILY_WEIGHTS[f] for f in FAMILIES])
    chosen = rng.choice(len(FAMILIES), size=count, replace=False, p=weights / weights.sum())
    return [FAMILIES[i] for i in sorted(chosen)]


def perturb_foreground(
    image: torch.Tensor,
    mask: torch.Tensor,
    rng: np.random.Generator,
    reference: torch.Tensor | None = None,
    families: Sequence[str] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Change the appearance of the object in ``image`` [3, H, W] (in [0, 1]) where ``mask`` > 0.5.

    ``reference`` [3, h, w]: pixels whose Lab statistics ``color_transfer`` moves towards (another
    photo, or its foreground pixels as a [3, 1, N] strip); random statistics are used without one.
    ``families``: force these families (applied in FAMILIES order, full strength range); by
    default 1-3 are drawn and a fraction of samples is mild. Returns the composite (the input,
    bit for bit, outside the mask) and an info dict with the families, strengths and parameters.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    if mask.shape != (1, *image.shape[1:]):
        raise ValueError(f"mask must be [1, {image.shape[1]}, {image.shape[2]}], got {tuple(mask.shape)}")
    mild = False
    if families is None:
        families = sample_families(rng)
        mild = bool(rng.random() < MILD_FRACTION)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown perturbation families {unknown}; choose from {list(FAMILIES)}")
    fg = mask[0] > 0.5
    info: dict = {"families": [], "strengths": {}, "params": {}, "mild": mild}
    composite = image.clone(memory_format=torch.contiguous_format)
    if not fg.any():
        return composite, info
    # Work on the object's pixels only (flat indices: much faster than boolean indexing).
    flat = torch.nonzero(fg.flatten()).squeeze(1)
    width = image.shape[2]
    pos = torch.stack([flat // width, flat % width])
    x = image.flatten(1).index_select(1, flat).float()
    for name in FAMILIES:
        if name not in families:
            continue
        strength = float(rng.uniform(*STRENGTH_RANGE)) * (MILD_SCALE if mild else 1.0)
        x, params = _FAMILY_FUNCS[name](x, pos, rng, strength, reference)
        info["families"].append(name)
        info["strengths"][name] = strength
        info["params"][name] = params
    composite.view(3, -1).index_copy_(1, flat, x.clamp(0, 1).to(image.dtype))
    return composite, info


# ----------------------------------------------------------------------------------------------------
# Dataset over a folder of photos + object masks.

MIN_FG_IN_CROP = 0.01  # a crop must keep some object ...
MAX_FG_IN_CROP = 0.95  # ... and some background to harmonize against
_CROP_ATTEMPTS = 10


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
    """Composites made on the fly from photos + object masks; the untouched photo is the target.

    Train items depend only on (seed, epoch, index): call ``set_epoch`` every epoch for fresh
    crops and perturbations. Validation items depend only on (seed, name): always the same.
    """

    def __init__(
        self,
        root: str | Path = "../shared/data/photos",
        split: str = "train",
        image_size: int = 256,
        val_fraction: float = 0.1,
        seed: int = 0,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        hflip: bool = True,
        limit: int = 0,
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
        want_val = split == "val"
        # References for colour transfer come from the same split: validation never feeds training.
        self.pool = [n for n in list_photos(self.root) if is_validation(n, seed, val_fraction) == want_val]
        if not self.pool:
            raise GknetError(f"the {split} split of {self.root} is empty (val_fraction={val_fraction})")
        self.names = self.pool[:limit] if limit > 0 else self.pool

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
        image, mask = load_rgb(self._image_path(name)), load_mask(self.root / "masks" / f"{name}.png")
        if image.size != mask.size:
            raise GknetError(f"{name}: image {image.size} and mask {mask.size} differ in size")
        return image, mask

    def _crop(self, image, mask, rng):
        """Random crop + flip that keeps part of the object and part of the background."""
        fg = np.asarray(mask) > 127
        flip = bool(self.hflip and rng.random() < 0.5)
        box = (0, 0, *image.size)
        for _ in range(_CROP_ATTEMPTS):
            candidate = sample_crop_box(*image.size, self.crop_scale, rng)
            left, top, right, bottom = candidate
            if MIN_FG_IN_CROP <= fg[top:bottom, left:right].mean() <= MAX_FG_IN_CROP:
                box = candidate
                break
        cropped = crop_flip_resize([image, mask], box, flip, self.image_size)
        if not 0 < (np.asarray(cropped[1]) > 127).mean() < 1:
            cropped = crop_flip_resize([image, mask], (0, 0, *image.size), flip, self.image_size)
        return cropped

    def _reference(self, name: str, rng: np.random.Generator) -> torch.Tensor:
        """Another photo of the split (its object or the whole frame), small: only its statistics matter."""
        other = self.pool[int(rng.integers(len(self.pool)))]
        if other == name:
            other = self.pool[(self.pool.index(other) + 1) % len(self.pool)]
        image, mask = self._load(other)
        factor = max(1, min(image.size) // 64)
        image, mask = image.reduce(factor), mask.reduce(factor)
        pixels = to_tensor_image(image)
        if rng.random() < 0.5:
            fg = to_tensor_image(mask)[0] > 0.5
            if fg.sum() >= 16:
                return pixels[:, fg].unsqueeze(1)
        return pixels

    def sample(self, index: int) -> tuple[dict, dict]:
        """The item at ``index`` and the perturbation info (families, strengths, parameters)."""
        name = self.names[index]
        rng = self._rng(index)
        image, mask = self._load(name)
        if self.split == "train":
            image, mask = self._crop(image, mask, rng)
        else:
            image, mask = resize_triplet([image, mask], self.image_size)
        target = to_tensor_image(image)
        fg = (to_tensor_image(mask) > 0.5).float()
        composite, info = perturb_foreground(target, fg, rng, reference=self._reference(name, rng))
        # Real composites are 8-bit images.
        composite = torch.where(fg > 0.5, (composite * 255).round() / 255, target)
        return {"composite": composite, "mask": fg, "target": target, "name": name}, info

    def __getitem__(self, index: int) -> dict:
        return self.sample(index)[0]


# ----------------------------------------------------------------------------------------------------
# Preview grid for people.


def _tile(x: torch.Tensor) -> Image.Image:
    return to_pil_image(x.expand(3, -1, -1) if x.shape[0] == 1 else x)


def preview_grid(dataset: SyntheticComposites, indices: Sequence[int]) -> Image.Image:
    """Rows composite | mask | target, one column per item, labelled with name and families."""
    size = dataset.image_size
    label_w, pad = 80, 2
    grid = Image.new("RGB", (label_w + len(indices) * (size + pad), 3 * (size + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for row, title in enumerate(("composite", "mask", "target")):
        draw.text((4, row * (size + pad) + size // 2), title, fill="black")
    for col, index in enumerate(indices):
        item, info = dataset.sample(index)
        x = label_w + col * (size + pad)
        for row, key in enumerate(("composite", "mask", "target")):
            grid.paste(_tile(item[key]), (x, row * (size + pad)))
        lines = [item["name"]] + [f"{f} {info['strengths'][f]:.2f}" for f in info["families"]]
        text = "\n".join(lines + (["(mild)"] if info["mild"] else []))
        draw.multiline_text((x + 3, 3), text, fill="white", stroke_width=1, stroke_fill="black")
    return grid


def spread_indices(length: int, count: int) -> list[int]:
    """``count`` indices spread evenly over a dataset of ``length`` items (all when it is smaller)."""
    return sorted({int(i) for i in np.linspace(0, length - 1, min(count, length))})


def composite_stats(dataset: SyntheticComposites, indices: Sequence[int]) -> dict[str, float]:
    """Difficulty of the raw composites: mean MSE / fMSE / PSNR against the targets (0-255 scale)."""
    from tqdm import tqdm

    from gknet.metrics import image_metrics

    rows = []
    for index in tqdm(indices, desc="composites", unit="img", leave=False):
        item = dataset[index]
        metrics = image_metrics(item["composite"][None] * 255, item["target"][None] * 255, item["mask"][None])
        rows.append([metrics[k].item() for k in ("mse", "fmse", "psnr")])
    mse, fmse, psnr = np.array(rows).T
    return {
        "count": len(rows),
        "mse": float(mse.mean()),
        "fmse": float(fmse.mean()),
        "fmse_median": float(np.median(fmse)),
        "psnr": float(psnr.mean()),
    }


def export_triplets(dataset: SyntheticComposites, out_dir: str | Path, overwrite: bool = False) -> int:
    """Write every item as lossless PNGs ``out_dir/{composites,masks,targets}/NAME.png``.

    The folders pair by stem, so ``gknet evaluate --composites ... --masks ... --targets ...``
    scores any method on exactly these composites (e.g. the fixed validation split).
    """
    from tqdm import tqdm

    from gknet.data.imageio import save_image_atomic

    out_dir = Path(out_dir)
    for index in tqdm(range(len(dataset)), desc="export", unit="img"):
        item = dataset[index]
        for folder, key in (("composites", "composite"), ("masks", "mask"), ("targets", "target")):
            save_image_atomic(to_pil_image(item[key]), out_dir / folder / f"{item['name']}.png", overwrite)
    return len(dataset)
