"""Paired bootstrap comparison of two evaluations: ratios by hand, P(better) against a naive loop."""

from __future__ import annotations

import numpy as np
import pytest

from gknet.errors import GknetError
from gknet.evaluation.paired import paired_comparison, render_paired


def _rows(subset: str, fmse: list[float], composite: list[float]) -> list[dict]:
    return [
        {"subset": subset, "name": f"{subset}{i}.jpg", "fmse": f, "composite_fmse": c}
        for i, (f, c) in enumerate(zip(fmse, composite, strict=True))
    ]


def test_ratios_and_counts_by_hand():
    ref = _rows("A", [50, 20, 30], [100, 100, 200]) + _rows("B", [10, 10], [40, 60])
    cand = _rows("A", [40, 10, 20], [100, 100, 200]) + _rows("B", [5, 30], [40, 60])
    out = paired_comparison(ref, cand, draws=500)
    assert list(out) == ["A", "B", "ALL"]
    assert out["A"]["reference"] == pytest.approx(100 / 400)
    assert out["A"]["candidate"] == pytest.approx(70 / 400)
    assert (out["A"]["n"], out["A"]["better"], out["A"]["worse"]) == (3, 3, 0)
    assert out["A"]["p_better"] == 1.0  # better on every image: better in every draw
    assert (out["B"]["better"], out["B"]["worse"]) == (1, 1)
    assert out["ALL"]["reference"] == pytest.approx(120 / 500) and out["ALL"]["n"] == 5
    same = paired_comparison(ref, ref, draws=500)
    assert all(row["p_better"] == 0.0 and row["better"] == row["worse"] == 0 for row in same.values())


def test_p_better_matches_a_naive_bootstrap_loop():
    rng = np.random.default_rng(3)
    composite = rng.uniform(100, 1000, 6).tolist()
    ref, cand = rng.uniform(10, 500, 6).tolist(), rng.uniform(10, 500, 6).tolist()
    out = paired_comparison(_rows("A", ref, composite), _rows("A", cand, composite), draws=2000, seed=7)
    draws = np.random.default_rng(7).integers(0, 6, (2000, 6))  # subset A draws first
    wins = 0
    for draw in draws:
        c = sum(composite[i] for i in draw)
        wins += sum(cand[i] for i in draw) / c < sum(ref[i] for i in draw) / c
    assert out["A"]["p_better"] == wins / 2000
    assert 0 < out["A"]["p_better"] < 1


def test_only_shared_images_are_compared_and_zero_composites_have_no_ratio():
    ref = _rows("A", [5, 5, 7], [0, 0, 9])
    cand = _rows("A", [1, 2], [0, 0])  # A2 was not scored by the candidate
    out = paired_comparison(ref, cand, draws=100)
    assert out["A"]["n"] == 2 and out["A"]["better"] == 2
    assert out["A"]["reference"] is None and out["A"]["p_better"] is None
    with pytest.raises(GknetError, match="share no image"):
        paired_comparison(ref, _rows("B", [1], [1]))


def test_render_paired_table():
    comparison = paired_comparison(_rows("A", [2, 4], [10, 10]), _rows("A", [1, 4], [10, 10]), draws=100)
    text = render_paired("old", "new", comparison, draws=100)
    assert text.startswith("## new against old")
    assert "| A | 2 | 0.300 | 0.250 | 1 / 0 | " in text and "| ALL | 2 |" in text
