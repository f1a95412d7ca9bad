"""Restraint: does a method leave nearly right composites alone?

Users mostly bring composites that are roughly right; a method that improves the mean by fixing
bad composites while damaging good ones is not one they keep. The images are split by the
composite's own fMSE (below / at or above RESTRAINT_THRESHOLD) and, per group, the mean fMSE of
the composite and of the method and the number of images the method made worse (a higher fMSE
than the composite's) are reported. The goal: below the threshold, no worse on average and at
most a quarter of the images worse.
"""

from __future__ import annotations

RESTRAINT_THRESHOLD = 1000.0
GROUPS = ("below", "above")


def restraint_summary(rows: list[dict], threshold: float = RESTRAINT_THRESHOLD) -> dict:
    """``{"threshold", "below": {...}, "above": {...}}`` from per-image rows with ``fmse`` and
    ``composite_fmse``; each group: ``n``, ``composite_fmse`` and ``fmse`` (means, None when
    empty) and ``worse`` (images whose fMSE exceeds the composite's)."""
    summary: dict = {"threshold": threshold}
    for group in GROUPS:
        chosen = [r for r in rows if (r["composite_fmse"] < threshold) == (group == "below")]
        n = len(chosen)
        summary[group] = {
            "n": n,
            "composite_fmse": sum(r["composite_fmse"] for r in chosen) / n if n else None,
            "fmse": sum(r["fmse"] for r in chosen) / n if n else None,
            "worse": sum(r["fmse"] > r["composite_fmse"] for r in chosen),
        }
    return summary


def _cells(group: dict) -> list[str]:
    if not group["n"]:
        return ["0", "-", "-", "-"]
    return [str(group["n"]), f"{group['composite_fmse']:.1f}", f"{group['fmse']:.1f}", str(group["worse"])]


def render_restraint(summaries: dict[str, dict]) -> str:
    """A markdown table, one row per method: ``{method: restraint_summary(...)}``."""
    threshold = next(iter(summaries.values()))["threshold"] if summaries else RESTRAINT_THRESHOLD
    header = ["method"]
    for label in (f"< {threshold:g}", f">= {threshold:g}"):
        header += [f"{label}: images", "composite fMSE", "method fMSE", "made worse"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, summary in summaries.items():
        cells = [method] + _cells(summary["below"]) + _cells(summary["above"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_restraint(summary: dict) -> str:
    """One line for a terminal."""
    parts = []
    for group, label in zip(GROUPS, ("<", ">="), strict=True):
        g = summary[group]
        if g["n"]:
            parts.append(
                f"composite fMSE {label} {summary['threshold']:g}: {g['n']} images, fMSE "
                f"{g['composite_fmse']:.1f} -> {g['fmse']:.1f}, {g['worse']} made worse"
            )
    return "; ".join(parts)
