"""Bradley-Terry fitting: known strengths are recovered from simulated votes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gknet.errors import GknetError
from gknet.studio.bradley_terry import bootstrap, fit, format_table, plot_scores, score_table, win_matrix

TRUE_SCORES = {"composite": -1.2, "reinhard": -0.3, "histogram": 0.1, "gknet": 1.4}  # mean 0


def simulate(n_per_pair: int, seed: int) -> list[tuple[str, str]]:
    """(winner, loser) votes with P(i beats j) = 1 / (1 + exp(s_j - s_i))."""
    rng = np.random.default_rng(seed)
    names = list(TRUE_SCORES)
    votes = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            p_a = 1 / (1 + math.exp(TRUE_SCORES[b] - TRUE_SCORES[a]))
            for a_wins in rng.random(n_per_pair) < p_a:
                votes.append((a, b) if a_wins else (b, a))
    return votes


def log_posterior(scores: np.ndarray, wins: np.ndarray, prior: float) -> float:
    """Log-likelihood of the counts plus the pseudo-counts, written out directly."""
    total = 0.0
    for i in range(len(scores)):
        for j in range(len(scores)):
            if i != j:
                total += (wins[i, j] + prior) * -math.log1p(math.exp(scores[j] - scores[i]))
    return total


def test_recovers_known_strengths_and_ranking():
    rows = score_table(simulate(n_per_pair=600, seed=1), n_boot=300)
    assert [r.method for r in rows] == sorted(TRUE_SCORES, key=TRUE_SCORES.get, reverse=True)
    for row in rows:
        assert row.score == pytest.approx(TRUE_SCORES[row.method], abs=0.15)
        assert row.low < row.score < row.high
        assert row.low - 0.05 < TRUE_SCORES[row.method] < row.high + 0.05
    assert sum(r.score for r in rows) == pytest.approx(0, abs=1e-9)
    assert all(r.comparisons == 3 * 600 for r in rows)


def test_intervals_shrink_with_more_votes():
    def width(n):
        rows = score_table(simulate(n_per_pair=n, seed=2), n_boot=300)
        return np.mean([r.high - r.low for r in rows])

    few, many = width(30), width(480)
    assert many < few / 2.5  # ~1/sqrt(16) = 1/4 in theory


def test_fit_is_the_maximum_of_the_penalised_likelihood():
    rng = np.random.default_rng(3)
    wins = rng.integers(0, 12, size=(4, 4)).astype(float)
    np.fill_diagonal(wins, 0)
    scores = fit(wins, prior=0.5)
    best = log_posterior(scores, wins, 0.5)
    for k in range(4):  # any move away from the fit lowers the objective
        for step in (-1e-3, 1e-3):
            moved = scores.copy()
            moved[k] += step
            assert log_posterior(moved, wins, 0.5) < best


def test_two_methods_have_the_closed_form_difference():
    wins = np.array([[0.0, 7.0], [2.0, 0.0]])
    scores = fit(wins, prior=0.5)
    assert scores[0] - scores[1] == pytest.approx(math.log(7.5 / 2.5), abs=1e-8)


def test_undefeated_method_stays_finite_and_first():
    votes = [("gknet", "composite")] * 20 + [("gknet", "reinhard")] * 15 + [("reinhard", "composite")] * 5
    rows = score_table(votes, n_boot=100)
    assert rows[0].method == "gknet" and rows[0].wins == 35
    assert all(np.isfinite([r.score, r.low, r.high]).all() for r in rows)
    assert rows[0].score < 10


def test_batched_fit_equals_one_by_one():
    rng = np.random.default_rng(4)
    batch = rng.integers(0, 9, size=(5, 3, 3)).astype(float)
    batch[:, np.arange(3), np.arange(3)] = 0
    np.testing.assert_allclose(fit(batch), np.stack([fit(w) for w in batch]), atol=1e-8)


def test_bootstrap_resamples_the_number_of_votes():
    wins = win_matrix([("a", "b")] * 6 + [("b", "a")] * 4 + [("c", "a")] * 5, ["a", "b", "c"])
    samples = bootstrap(wins, 50, seed=0)
    assert samples.shape == (50, 3)
    np.testing.assert_array_equal(samples, bootstrap(wins, 50, seed=0))  # seeded
    assert samples.std(axis=0).min() > 0


def test_bad_inputs():
    with pytest.raises(GknetError, match="prior must be positive"):
        fit(np.zeros((2, 2)), prior=0)
    with pytest.raises(GknetError, match="itself"):
        win_matrix([("a", "a")], ["a"])
    assert score_table([]) == []


def test_table_and_plot():
    rows = score_table(simulate(n_per_pair=40, seed=5), n_boot=50)
    text = format_table(rows)
    assert text.splitlines()[1].startswith("gknet") and "95% CI" in text
    image = plot_scores(rows)
    assert image.mode == "RGB" and image.width > 300
    without_ci = format_table(score_table(simulate(n_per_pair=5, seed=5), n_boot=0))
    assert " - " in without_ci.splitlines()[1]
