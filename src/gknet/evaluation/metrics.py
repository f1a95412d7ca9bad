"""Harmonization metrics (DoveNet / iDIH protocol), per image, and their aggregation.

All inputs are on the 0-255 scale. Definitions, for one image with foreground mask M
(boolean, H x W) and difference d = clamp(pred, 0, 255) - target:

- MSE  = mean of d^2 over all pixels and the 3 channels.
- fMSE = sum(M * d^2) / (3 * sum(M)). An empty mask has no foreground to judge: fMSE is
  defined as 0 there (what iDIH's epsilon-guarded formula gives).
- PSNR = 10 * log10(peak^2 / MSE) with peak = 255 by default, or the target's maximum
  (``psnr_peak="target_max"``, as iDIH computes it). MSE is floored at 1e-6 so identical
  images give a finite 108.13 dB (255^2 peak) instead of infinity.
"""

from __future__ import annotations

import torch

MSE_FLOOR = 1e-6
FG_BUCKETS = (("0-5", 0.0, 0.05), ("5-15", 0.05, 0.15), ("15-100", 0.15, 1.0 + 1e-9))


def image_metrics(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, psnr_peak: str = "255"
) -> dict[str, torch.Tensor]:
    """Per-image metrics for a batch.

    pred, target: [B, 3, H, W] float on the 0-255 scale (pred is clamped to [0, 255]);
    mask: [B, 1, H, W] boolean foreground (or float, thresholded at 0.5).
    Returns float64 tensors of shape [B]: ``mse``, ``fmse``, ``psnr``, ``fg_ratio``.
    """
    if psnr_peak not in ("255", "target_max"):
        raise ValueError(f"psnr_peak must be '255' or 'target_max', got {psnr_peak!r}")
    if mask.dtype != torch.bool:
        mask = mask > 0.5
    pred = pred.double().clamp(0, 255)
    sq = (pred - target.double()).pow(2)
    m = mask.double()
    mse = sq.mean(dim=(1, 2, 3))
    area = m.sum(dim=(1, 2, 3))
    fg_sq = (sq * m).sum(dim=(1, 2, 3))
    fmse = torch.where(area > 0, fg_sq / (3 * area.clamp_min(1)), torch.zeros_like(area))
    peak = torch.full_like(mse, 255.0) if psnr_peak == "255" else target.double().amax(dim=(1, 2, 3))
    psnr = 10 * torch.log10(peak.pow(2) / mse.clamp_min(MSE_FLOOR))
    fg_ratio = area / (mask.shape[-1] * mask.shape[-2])
    return {"mse": mse, "fmse": fmse, "psnr": psnr, "fg_ratio": fg_ratio}


def fg_bucket(ratio: float) -> str:
    """Table 2 bucket name ('0-5', '5-15' or '15-100') of a foreground ratio in [0, 1]."""
    for name, lo, hi in FG_BUCKETS:
        if lo <= ratio < hi:
            return name
    raise ValueError(f"foreground ratio {ratio} is outside [0, 1]")


def mean_metrics(rows: list[dict], keys: tuple[str, ...] = ("mse", "psnr", "fmse")) -> dict:
    """``{"n": len(rows), key: plain mean over rows}``; the means are None when rows is empty."""
    n = len(rows)
    return {"n": n, **{k: (sum(float(r[k]) for r in rows) / n if n else None) for k in keys}}


def summarize(rows: list[dict]) -> dict:
    """Table 1 and Table 2 aggregates of per-image rows (keys subset, mse, psnr, fmse, fg_ratio).

    ``subsets``: per subset, in order of first appearance; ``all``: the mean over every
    image (not a mean of subset means); ``fg_ratio``: every Table 2 bucket (MSE and fMSE).
    """
    subsets = list(dict.fromkeys(r["subset"] for r in rows))
    return {
        "subsets": {s: mean_metrics([r for r in rows if r["subset"] == s]) for s in subsets},
        "all": mean_metrics(rows),
        "fg_ratio": {
            name: mean_metrics([r for r in rows if fg_bucket(float(r["fg_ratio"])) == name], ("mse", "fmse"))
            for name, _, _ in FG_BUCKETS
        },
    }


def ratio_to_reference(summary: dict, reference: dict) -> dict:
    """Per group of two :func:`summarize` results: MSE and fMSE ratios, PSNR gain in dB.

    A ratio is None when a mean is missing or the reference mean is 0.
    """

    def ratio(a, b):
        return a / b if a is not None and b else None

    def compare(group: dict, ref: dict) -> dict:
        out = {"mse_ratio": ratio(group["mse"], ref["mse"]), "fmse_ratio": ratio(group["fmse"], ref["fmse"])}
        if "psnr" in group:
            gain = group["psnr"] - ref["psnr"] if group["psnr"] is not None else None
            out["psnr_gain"] = gain
        return out

    return {
        "subsets": {s: compare(g, reference["subsets"][s]) for s, g in summary["subsets"].items()},
        "all": compare(summary["all"], reference["all"]),
        "fg_ratio": {b: compare(g, reference["fg_ratio"][b]) for b, g in summary["fg_ratio"].items()},
    }
