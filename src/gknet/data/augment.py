"""Paired geometric augmentation: one random crop + flip applied identically to a whole triplet.

A triplet is (composite, mask, target) as PIL images of the same size; RGB images are
resized bilinearly and masks ('L') bilinearly too, staying single-channel (the caller
thresholds them). Randomness comes only from the numpy Generator passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # left, top, right, bottom (PIL convention)

_RATIO = (3 / 4, 4 / 3)
_ATTEMPTS = 10


def _check_sizes(images: Sequence[Image.Image]) -> tuple[int, int]:
    if not images:
        raise ValueError("expected at least one image")
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ValueError(f"all images of a triplet must have the same size, got {sorted(sizes)}")
    return images[0].size


def sample_crop_box(width: int, height: int, scale: tuple[float, float], rng: np.random.Generator) -> Box:
    """A random box covering ``scale`` of the area with aspect ratio in [3/4, 4/3].

    Draws up to a few boxes that fit inside the image; if none fits, falls back to the
    largest centred box with the aspect ratio clipped to the range.
    """
    area = width * height
    log_lo, log_hi = math.log(_RATIO[0]), math.log(_RATIO[1])
    for _ in range(_ATTEMPTS):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    ratio = width / height
    if ratio < _RATIO[0]:
        w, h = width, round(width / _RATIO[0])
    elif ratio > _RATIO[1]:
        w, h = round(height * _RATIO[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def crop_flip_resize(images: Sequence[Image.Image], box: Box, flip: bool, size: int) -> list[Image.Image]:
    """Crop every image to ``box``, resize to ``size`` x ``size`` (bilinear), mirror if ``flip``."""
    out = []
    for im in images:
        im = im.resize((size, size), Image.BILINEAR, box=box)
        out.append(im.transpose(Image.FLIP_LEFT_RIGHT) if flip else im)
    return out


def random_resized_crop_flip(
    images: list[Image.Image],
    size: int,
    scale: tuple[float, float],
    hflip: bool,
    rng: np.random.Generator,
) -> list[Image.Image]:
    """The same random resized crop (area fraction in ``scale``) and horizontal flip for every image."""
    width, height = _check_sizes(images)
    box = sample_crop_box(width, height, scale, rng)
    flip = bool(hflip and rng.random() < 0.5)
    return crop_flip_resize(images, box, flip, size)


def resize_triplet(images: list[Image.Image], size: int) -> list[Image.Image]:
    """Plain bilinear resize of every image to ``size`` x ``size`` (validation: no randomness)."""
    width, height = _check_sizes(images)
    return crop_flip_resize(images, (0, 0, width, height), False, size)
