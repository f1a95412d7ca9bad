"""Restraint: harmonious samples and mild edits in the generator, and the report of composites
made worse below / above the fMSE threshold."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from gknet.cli import main
from gknet.data.perturbations import HARMONIOUS, make_composite, perturb_foreground
from gknet.evaluation.restraint import format_restraint, render_restraint, restraint_summary
from tests.train_helpers import write_triplet_folder


def _image(size=24):
    g = torch.Generator().manual_seed(0)
    image = (0.2 + 0.6 * torch.rand(3, size, size, generator=g)).clamp(0, 1)
    mask = torch.zeros(1, size, size)
    mask[:, 6:18, 5:19] = 1
    return image, mask


def _within(count: int, draws: int, p: float) -> bool:
    """A binomial count within 4 standard deviations of its expectation."""
    return abs(count - p * draws) <= 4 * math.sqrt(draws * p * (1 - p)) + 1e-9


def test_harmonious_share_gives_composites_equal_to_targets():
    image, mask = _image()
    draws, share, harmonious, edited_scene = 400, 0.3, 0, 0
    for seed in range(draws):
        composite, target, info = make_composite(
            image, mask, np.random.default_rng(seed), harmonious_share=share
        )
        if info["mode"] == HARMONIOUS:
            harmonious += 1
            edited_scene += info["scene"] is not None
            assert torch.equal(composite, target) and info["object"] is None
        else:
            assert not torch.equal(composite, target)
    assert _within(harmonious, draws, share)
    assert _within(edited_scene, harmonious, 0.5)  # half unedited photos, half under one scene edit
    for seed in range(50):
        assert (
            make_composite(image, mask, np.random.default_rng(seed), harmonious_share=0.0)[2]["mode"]
            != HARMONIOUS
        )
    composite, target, info = make_composite(
        image, mask, np.random.default_rng(0), mode=HARMONIOUS, scene_families=["tone_curve"]
    )
    assert torch.equal(composite, target) and info["scene"]["families"] == ["tone_curve"]
    assert not torch.equal(target, image)


def test_mild_share_counted_over_draws():
    image, mask = _image()
    draws, share = 400, 0.25
    mild = 0
    for seed in range(draws):
        _, info = perturb_foreground(image, mask, np.random.default_rng(seed), mild_share=share)
        mild += info["mild"]
        if info["mild"]:  # strengths scaled by 0.3 from [0.5, 1]
            assert all(0.15 <= s <= 0.3 for s in info["strengths"].values())
    assert _within(mild, draws, share)
    assert not any(
        perturb_foreground(image, mask, np.random.default_rng(s), mild_share=0.0)[1]["mild"]
        for s in range(50)
    )


def test_restraint_summary_by_hand():
    rows = [
        {"composite_fmse": 200.0, "fmse": 300.0},  # below, worse
        {"composite_fmse": 999.0, "fmse": 500.0},  # below, better
        {"composite_fmse": 0.0, "fmse": 0.0},  # below, unchanged: not worse
        {"composite_fmse": 1000.0, "fmse": 1200.0},  # the threshold itself counts as above; worse
        {"composite_fmse": 4000.0, "fmse": 1000.0},
    ]
    summary = restraint_summary(rows)
    assert summary["below"] == {
        "n": 3,
        "composite_fmse": pytest.approx(1199 / 3),
        "fmse": pytest.approx(800 / 3),
        "worse": 1,
    }
    assert summary["above"] == {"n": 2, "composite_fmse": 2500.0, "fmse": 1100.0, "worse": 1}
    table = render_restraint({"m": summary, "empty": restraint_summary([])})
    assert "| m | 3 | 399.7 | 266.7 | 1 | 2 | 2500.0 | 1100.0 | 1 |" in table
    assert "| empty | 0 | - | - | - | 0 | - | - | - |" in table
    assert format_restraint(summary).startswith(
        "composite fMSE < 1000: 3 images, fMSE 399.7 -> 266.7, 1 made worse"
    )


def test_evaluate_reports_restraint_per_method(tmp_path, capsys):
    root = write_triplet_folder(tmp_path / "data", count=6, size=24)
    folders = [f"--{k}={root / k}" for k in ("composites", "masks", "targets")]
    code = main(
        [
            "evaluate",
            *folders,
            "--baseline",
            "composite",
            "--baseline",
            "reinhard",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("restraint: composite fMSE") == 2
    results = json.loads((tmp_path / "out" / "reinhard" / "results.json").read_text())
    with open(tmp_path / "out" / "reinhard" / "per_image.csv") as handle:
        rows = [{k: float(r[k]) for k in ("composite_fmse", "fmse")} for r in csv.DictReader(handle)]
    expected = restraint_summary(rows)
    for group in ("below", "above"):
        assert results["restraint"][group] == pytest.approx(expected[group])
    composite = json.loads((tmp_path / "out" / "composite" / "results.json").read_text())["restraint"]
    assert composite["below"]["worse"] == composite["above"]["worse"] == 0  # no change is never worse
    assert "## Restraint" in (tmp_path / "out" / "reinhard" / "report.md").read_text()
    paired = (tmp_path / "out" / "paired.md").read_text()
    assert "| composite | " in paired and "| reinhard | " in paired


def test_data_config_shares_reach_the_generator():
    from dataclasses import replace

    from gknet.config import ConfigError, DataConfig, TrainConfig
    from gknet.data.perturbations import HARMONIOUS_SHARE, MILD_FRACTION
    from gknet.data.synthetic import SAME_CATEGORY_SHARE
    from gknet.training.data import build_datasets
    from tests.conftest import require_shared

    default = DataConfig()
    assert default.film_grades is True
    assert (default.same_category_share, default.harmonious_share, default.mild_share) == (
        SAME_CATEGORY_SHARE,
        HARMONIOUS_SHARE,
        MILD_FRACTION,
    )
    for name in ("same_category_share", "harmonious_share", "mild_share"):
        for bad in (-0.1, 1.5, float("nan")):
            with pytest.raises(ConfigError, match=f"data.{name} must be a finite number in"):
                DataConfig(**{name: bad})
    data = DataConfig(
        root=str(require_shared("data", "photos")),
        val_size=5,
        harmonious_share=1.0,
        same_category_share=0.0,
        film_grades=False,
    )
    train_set, val_set = build_datasets(data, replace(TrainConfig(), image_size=32))
    for ds in (train_set, val_set):
        assert ds.references.same_share == 0.0 and ds.luts is None and not ds.skipped
        for i in range(5):
            item, info = ds.sample(i)
            assert info["mode"] == "harmonious" and torch.equal(item["composite"], item["target"])
