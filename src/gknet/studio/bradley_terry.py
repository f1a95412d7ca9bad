"""Bradley-Terry scores from pairwise votes: (penalised) maximum likelihood with bootstrap intervals.

Model: method i beats method j with probability p_i / (p_i + p_j). The score reported is the
log-strength s_i = ln p_i, centred so the methods' scores average to 0; only differences mean
something (s_i - s_j is the log-odds that i beats j), so scores from different studies, or
the absolute values in the paper's Table 3, are not comparable number for number.

Fit: the MM algorithm of Hunter (2004, "MM algorithms for generalized Bradley-Terry models",
Ann. Statist. 32(1)), which increases the likelihood at every step. A method that won (or lost)
every comparison has no finite maximum-likelihood strength, so every pair of methods is also
credited with ``prior`` virtual wins each way (default 0.5: one virtual tied game per pair).
This keeps every score finite and the fit unique, a few real votes outweigh it, and it
shrinks scores slightly towards each other (two methods at w : l votes get a score
difference of ln((w + prior) / (l + prior)) instead of ln(w / l)). MM update on the
augmented counts (W_i wins of method i, N_ij comparisons between i and j), followed by
rescaling to geometric mean 1, which the likelihood does not see:

    p_i <- W_i / sum_j N_ij / (p_i + p_j)

Intervals: nonparametric bootstrap over votes (resampling n votes with replacement is a
multinomial draw over the win-count cells), percentile intervals of the refitted scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gknet.errors import GknetError

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_PRIOR = 0.5


def win_matrix(votes: Iterable[tuple[str, str]], methods: Sequence[str]) -> np.ndarray:
    """Counts ``wins[i, j]`` of votes where ``methods[i]`` beat ``methods[j]``, from (winner, loser) pairs."""
    index = {name: i for i, name in enumerate(methods)}
    wins = np.zeros((len(methods), len(methods)))
    for winner, loser in votes:
        if winner == loser:
            raise GknetError(f"a vote compares {winner!r} with itself")
        wins[index[winner], index[loser]] += 1
    return wins


def fit(
    wins: np.ndarray, prior: float = DEFAULT_PRIOR, tol: float = 1e-10, max_iter: int = 100_000
) -> np.ndarray:
    """Centred log-strengths for win counts ``[..., k, k]`` (any leading batch dimensions)."""
    if prior <= 0:
        raise GknetError(f"the prior must be positive (it keeps undefeated methods finite), got {prior}")
    wins = np.asarray(wins, dtype=np.float64)
    k = wins.shape[-1]
    wins = wins + prior * (1 - np.eye(k))
    total_wins = wins.sum(axis=-1)
    games = wins + np.swapaxes(wins, -1, -2)
    log_strength = np.zeros(wins.shape[:-1])
    for _ in range(max_iter):
        strength = np.exp(log_strength)
        denominator = (games / (strength[..., :, None] + strength[..., None, :])).sum(axis=-1)
        updated = np.log(total_wins / denominator)
        updated -= updated.mean(axis=-1, keepdims=True)
        change = np.abs(updated - log_strength).max(initial=0.0)
        log_strength = updated
        if change < tol:
            break
    return log_strength


def bootstrap(wins: np.ndarray, n_boot: int, prior: float = DEFAULT_PRIOR, seed: int = 0) -> np.ndarray:
    """Scores ``[n_boot, k]`` refitted on votes resampled with replacement."""
    k = wins.shape[0]
    n_votes = int(wins.sum())
    if n_votes == 0 or n_boot <= 0:
        return np.zeros((0, k))
    rng = np.random.default_rng(seed)
    resampled = rng.multinomial(n_votes, wins.ravel() / n_votes, size=n_boot).reshape(n_boot, k, k)
    return fit(resampled, prior)


@dataclass(frozen=True)
class Score:
    """One row of the scores table."""

    method: str
    score: float
    low: float
    high: float
    wins: int
    comparisons: int

    @property
    def win_rate(self) -> float:
        return self.wins / self.comparisons if self.comparisons else float("nan")


def score_table(
    votes: Sequence[tuple[str, str]],
    methods: Sequence[str] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    prior: float = DEFAULT_PRIOR,
    seed: int = 0,
) -> list[Score]:
    """Scores of every method from (winner, loser) votes, best first, with bootstrap intervals.

    ``methods`` defaults to the methods that appear in the votes; without bootstrap
    (``n_boot=0``) the interval bounds are NaN.
    """
    if not 0 < confidence < 1:
        raise GknetError(f"confidence must be between 0 and 1, got {confidence}")
    if methods is None:
        methods = sorted({name for vote in votes for name in vote})
    if not methods:
        return []
    wins = win_matrix(votes, methods)
    scores = fit(wins, prior)
    samples = bootstrap(wins, n_boot, prior, seed)
    tail = (1 - confidence) / 2 * 100
    if len(samples):
        low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    else:
        low = high = np.full(len(methods), np.nan)
    games = wins + wins.T
    rows = [
        Score(name, float(scores[i]), float(low[i]), float(high[i]), int(wins[i].sum()), int(games[i].sum()))
        for i, name in enumerate(methods)
    ]
    return sorted(rows, key=lambda row: row.score, reverse=True)


def format_table(rows: Sequence[Score], confidence: float = 0.95) -> str:
    """Plain-text table: method, B-T score with its interval, wins / comparisons."""
    ci = f"{confidence * 100:g}% CI"
    lines = [f"{'method':<16}{'B-T score':>10}  {ci:<18}{'wins':>7}{'comparisons':>13}{'win rate':>10}"]
    for row in rows:
        interval = f"[{row.low:+.3f}, {row.high:+.3f}]" if np.isfinite(row.low) else "-"
        lines.append(
            f"{row.method:<16}{row.score:>+10.3f}  {interval:<18}{row.wins:>7}{row.comparisons:>13}"
            f"{row.win_rate:>10.1%}"
        )
    return "\n".join(lines)


def plot_scores(rows: Sequence[Score], title: str = "Bradley-Terry scores") -> Image.Image:
    """Bar chart of the scores with interval whiskers, as a PIL image (matplotlib Agg)."""
    import io

    from gknet.io.plotting import require_matplotlib

    require_matplotlib("the scores plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    names = [row.method for row in rows]
    values = np.array([row.score for row in rows])
    errors = np.array([[row.score - row.low, row.high - row.score] for row in rows]).T
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.6), dpi=120)
    positions = np.arange(len(rows))
    ax.bar(positions, values, color="#4c78a8")
    if np.isfinite(errors).all():
        ax.errorbar(positions, values, yerr=errors, fmt="none", ecolor="#222222", capsize=5, linewidth=1.2)
    ax.set_xticks(positions, [f"{name}\n{value:+.2f}" for name, value in zip(names, values, strict=True)])
    ax.axhline(0, color="#888888", linewidth=0.8)
    ax.set_ylabel("B-T score (log-strength, mean 0)")
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
