"""Paired comparison of two methods scored on the same images: is the gap more than the draw?

Real test sets are small (real_val: 3-10 images per subset), so one image can decide which of
two methods has the lower fMSE ratio. Per subset, the images are resampled with replacement
(the same draw for both methods, the bootstrap) and ``p_better`` is the share of draws in which
the candidate's ratio is the lower one: near 1 or 0 the ranking holds whatever images were
drawn; near 0.5 it is luck.
"""

from __future__ import annotations

import numpy as np

from gknet.errors import GknetError

DRAWS = 10_000


def _ratio(fmse: np.ndarray, composite: np.ndarray) -> np.ndarray:
    """fMSE ratio to the composite of each row (a draw of images), as the report computes it:
    mean fMSE / mean composite fMSE; NaN where the composite's is 0."""
    total = composite.sum(-1)
    return np.where(total > 0, fmse.sum(-1) / np.where(total > 0, total, 1), np.nan)


def paired_comparison(
    reference: list[dict], candidate: list[dict], draws: int = DRAWS, seed: int = 0
) -> dict:
    """Per subset, in the candidate's order, then "ALL": ``n`` shared images, both fMSE ratios
    to the composite, ``better``/``worse`` (images where the candidate's fMSE is lower/higher),
    and ``p_better`` (None where the composite's fMSE is 0 on every image).

    ``reference`` and ``candidate`` are per-image rows (``Evaluation.rows``), matched by subset
    and name; images only one of them scored are left out.
    """
    scored = {(r["subset"], r["name"]): r for r in reference}
    pairs = [(scored[(r["subset"], r["name"])], r) for r in candidate if (r["subset"], r["name"]) in scored]
    if not pairs:
        raise GknetError("the two evaluations share no image: nothing to compare")
    subsets = dict.fromkeys(p[1]["subset"] for p in pairs)
    groups = {s: [p for p in pairs if p[1]["subset"] == s] for s in subsets}
    rng = np.random.default_rng(seed)
    out = {}
    for name, group in [*groups.items(), ("ALL", pairs)]:
        ref, cand = (np.array([float(p[i]["fmse"]) for p in group]) for i in (0, 1))
        composite = np.array([float(p[1]["composite_fmse"]) for p in group])
        draw = rng.integers(0, len(group), (draws, len(group)))
        ref_ratio, cand_ratio = _ratio(ref, composite), _ratio(cand, composite)
        out[name] = {
            "n": len(group),
            "reference": None if np.isnan(ref_ratio) else float(ref_ratio),
            "candidate": None if np.isnan(cand_ratio) else float(cand_ratio),
            "better": int((cand < ref).sum()),
            "worse": int((cand > ref).sum()),
            # a draw whose composites all match their targets has no ratio and counts as not better
            "p_better": None
            if composite.sum() == 0
            else float(np.mean(_ratio(cand[draw], composite[draw]) < _ratio(ref[draw], composite[draw]))),
        }
    return out


def render_paired(reference: str, candidate: str, comparison: dict, draws: int = DRAWS) -> str:
    """A Markdown section: one row per subset of :func:`paired_comparison`."""

    def cell(value):
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"## {candidate} against {reference}",
        "",
        f"| subset | images | {reference} | {candidate} | images better / worse "
        f"| P(better), {draws:,} draws |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in comparison.items():
        lines.append(
            f"| {name} | {row['n']} | {cell(row['reference'])} | {cell(row['candidate'])} | "
            f"{row['better']} / {row['worse']} | {cell(row['p_better'])} |"
        )
    lines += [
        "",
        "Ratios: fMSE / composite fMSE. P(better): the share of bootstrap resamples of the images "
        "(the same for both methods) in which the candidate's ratio is the lower.",
        "",
    ]
    return "\n".join(lines)
