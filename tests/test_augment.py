import math

import numpy as np
import pytest
from PIL import Image

from gknet.data.augment import random_resized_crop_flip, resize_triplet, sample_crop_box


def _triplet(width=96, height=64):
    """An RGB image whose red channel is also the mask, so a shared crop gives equal arrays."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(xx * 255 // (width - 1)), (yy * 255 // (height - 1)), (xx + yy) % 256], -1).astype(
        np.uint8
    )
    return [Image.fromarray(rgb), Image.fromarray(rgb[..., 0]), Image.fromarray(255 - rgb)]


def test_same_crop_for_every_image_and_requested_size():
    for seed in range(20):
        comp, mask, target = random_resized_crop_flip(
            _triplet(), 32, (0.3, 1.0), True, np.random.default_rng(seed)
        )
        assert comp.size == mask.size == target.size == (32, 32)
        assert mask.mode == "L" and comp.mode == "RGB"
        red = np.asarray(comp)[..., 0]
        np.testing.assert_array_equal(red, np.asarray(mask))
        # bilinear rounding may differ by 1 between an image and its negative
        diff = (255 - np.asarray(target).astype(int)) - np.asarray(comp)
        assert np.abs(diff).max() <= 1


def test_same_generator_state_gives_same_crop():
    a = random_resized_crop_flip(_triplet(), 24, (0.2, 0.6), True, np.random.default_rng(5))
    b = random_resized_crop_flip(_triplet(), 24, (0.2, 0.6), True, np.random.default_rng(5))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_box_area_and_aspect_ratio_stay_in_range():
    for seed in range(200):
        left, top, right, bottom = sample_crop_box(200, 150, (0.25, 0.7), np.random.default_rng(seed))
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 200 and 0 <= top < bottom <= 150
        assert 0.25 * 0.97 <= w * h / (200 * 150) <= 0.7 * 1.03
        assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05


def test_flip_is_a_mirror_and_only_when_enabled():
    images = _triplet(64, 64)
    plain = np.asarray(resize_triplet(images, 64)[0])
    seen = set()
    for seed in range(30):
        # scale (1, 1) on a square image: the crop is the whole image, only the flip varies.
        out = np.asarray(
            random_resized_crop_flip(images, 64, (1.0, 1.0), True, np.random.default_rng(seed))[0]
        )
        flipped = np.array_equal(out, plain[:, ::-1])
        assert flipped or np.array_equal(out, plain)
        seen.add(flipped)
        out = np.asarray(
            random_resized_crop_flip(images, 64, (1.0, 1.0), False, np.random.default_rng(seed))[0]
        )
        np.testing.assert_array_equal(out, plain)
    assert seen == {True, False}


def test_resize_triplet_same_size_is_lossless():
    images = _triplet(40, 40)
    for before, after in zip(images, resize_triplet(images, 40), strict=True):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    small = resize_triplet(images, 10)
    assert all(im.size == (10, 10) for im in small) and small[1].mode == "L"


def test_fallback_box_is_centred_when_nothing_fits():
    # A 10:1 strip cannot hold a large box with aspect ratio <= 4/3: centred 4/3 box.
    left, top, right, bottom = sample_crop_box(1000, 100, (1.0, 1.0), np.random.default_rng(0))
    assert (bottom - top, right - left) == (100, math.floor(100 * 4 / 3 + 0.5))
    assert left == (1000 - (right - left)) // 2


def test_mismatched_sizes_are_rejected():
    with pytest.raises(ValueError, match="same size"):
        resize_triplet([Image.new("RGB", (8, 8)), Image.new("L", (9, 8))], 4)
