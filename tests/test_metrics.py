import math

import pytest
import torch

from gknet.evaluation.metrics import fg_bucket, image_metrics, mean_metrics, ratio_to_reference, summarize


def _one(pred, target, mask, **kw):
    out = image_metrics(torch.tensor(pred)[None], torch.tensor(target)[None], torch.tensor(mask)[None], **kw)
    return {k: float(v[0]) for k, v in out.items()}


def _image(fill):
    """[3, 2, 2] image filled by fill(c, y, x)."""
    return [[[float(fill(c, y, x)) for x in range(2)] for y in range(2)] for c in range(3)]


# pred - target: +2 on every channel of pixel (0,0), +4 on channel 0 of pixel (0,1), 0 elsewhere.
TARGET = _image(lambda c, y, x: 100)
PRED = _image(lambda c, y, x: 100 + (2 if (y, x) == (0, 0) else 4 if (y, x, c) == (0, 1, 0) else 0))
TOP_ROW = [[[True, True], [False, False]]]


def test_metrics_by_hand():
    m = _one(PRED, TARGET, TOP_ROW)
    sq_sum = 3 * 2**2 + 4**2  # = 28 over 2 x 2 pixels x 3 channels
    assert m["mse"] == pytest.approx(sq_sum / 12)
    assert m["fmse"] == pytest.approx(sq_sum / (3 * 2))
    assert m["psnr"] == pytest.approx(10 * math.log10(255**2 / (sq_sum / 12)))
    assert m["fg_ratio"] == pytest.approx(0.5)


def test_foreground_excludes_background_errors():
    bottom_row = [[[False, False], [True, True]]]
    m = _one(PRED, TARGET, bottom_row)
    assert m["fmse"] == 0.0
    assert m["mse"] == pytest.approx(28 / 12)


def test_empty_mask_gives_zero_fmse_and_full_mask_gives_mse():
    empty = _one(PRED, TARGET, [[[False, False], [False, False]]])
    assert empty["fmse"] == 0.0 and empty["fg_ratio"] == 0.0
    assert empty["mse"] == pytest.approx(28 / 12)
    full = _one(PRED, TARGET, [[[True, True], [True, True]]])
    assert full["fmse"] == pytest.approx(full["mse"]) and full["fg_ratio"] == 1.0


def test_prediction_is_clamped_and_identical_images_give_finite_psnr():
    over = _one(_image(lambda c, y, x: 300), _image(lambda c, y, x: 255), TOP_ROW)
    assert over["mse"] == 0.0
    assert over["psnr"] == pytest.approx(10 * math.log10(255**2 / 1e-6))


def test_target_max_peak():
    target = _image(lambda c, y, x: 50 + 10 * x)  # max 60
    pred = _image(lambda c, y, x: 50 + 10 * x + (3 if c == 1 else 0))
    m = _one(pred, target, TOP_ROW, psnr_peak="target_max")
    assert m["mse"] == pytest.approx(9 / 3)
    assert m["psnr"] == pytest.approx(10 * math.log10(60**2 / 3))
    with pytest.raises(ValueError):
        _one(pred, target, TOP_ROW, psnr_peak="max")


def test_float_mask_is_thresholded_above_half():
    soft = [[[0.5, 0.51], [0.0, 1.0]]]
    m = _one(PRED, TARGET, soft)
    # foreground = pixels (0,1) and (1,1): squared error 16 on 2 pixels x 3 channels
    assert m["fmse"] == pytest.approx(16 / 6)
    assert m["fg_ratio"] == pytest.approx(0.5)


def test_fg_buckets_boundaries():
    assert [fg_bucket(r) for r in (0.0, 0.0499, 0.05, 0.1499, 0.15, 1.0)] == [
        "0-5",
        "0-5",
        "5-15",
        "5-15",
        "15-100",
        "15-100",
    ]
    with pytest.raises(ValueError):
        fg_bucket(1.5)


ROWS = [
    {"subset": "HCOCO", "mse": 1.0, "psnr": 40.0, "fmse": 10.0, "fg_ratio": 0.01},
    {"subset": "HCOCO", "mse": 3.0, "psnr": 30.0, "fmse": 30.0, "fg_ratio": 0.10},
    {"subset": "HFlickr", "mse": 20.0, "psnr": 20.0, "fmse": 50.0, "fg_ratio": 0.50},
]


def test_summarize_all_is_mean_over_images_not_over_subsets():
    s = summarize(ROWS)
    assert list(s["subsets"]) == ["HCOCO", "HFlickr"]
    assert s["subsets"]["HCOCO"] == {"n": 2, "mse": 2.0, "psnr": 35.0, "fmse": 20.0}
    assert s["all"] == {"n": 3, "mse": 8.0, "psnr": 30.0, "fmse": 30.0}  # subset means would give 11
    assert s["fg_ratio"] == {
        "0-5": {"n": 1, "mse": 1.0, "fmse": 10.0},
        "5-15": {"n": 1, "mse": 3.0, "fmse": 30.0},
        "15-100": {"n": 1, "mse": 20.0, "fmse": 50.0},
    }


def test_empty_groups_and_ratios():
    assert mean_metrics([]) == {"n": 0, "mse": None, "psnr": None, "fmse": None}
    method = summarize(ROWS[:1])
    reference = summarize([{**ROWS[0], "mse": 4.0, "psnr": 35.0, "fmse": 40.0}])
    r = ratio_to_reference(method, reference)
    assert r["all"] == {"mse_ratio": 0.25, "fmse_ratio": 0.25, "psnr_gain": 5.0}
    assert r["fg_ratio"]["0-5"] == {"mse_ratio": 0.25, "fmse_ratio": 0.25}
    assert r["fg_ratio"]["15-100"] == {"mse_ratio": None, "fmse_ratio": None}
