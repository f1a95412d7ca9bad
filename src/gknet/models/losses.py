"""Training objective: the foreground-normalised MSE of the paper's Eq. 7."""

from __future__ import annotations

import torch


def fn_mse_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, a_min: float = 100.0
) -> torch.Tensor:
    """Eq. 7: ``sum_{c,h,w} (pred - target)^2 / max(A_min, sum_{h,w} M)``, averaged over the batch.

    pred, target: [B, 3, H, W] (any common scale; gknet trains on [0, 1]); mask: [B, 1, H, W]
    in [0, 1]. A_min (in pixels) keeps tiny foregrounds from dominating the gradient.
    """
    squared = (pred - target).pow(2).sum(dim=(1, 2, 3))
    area = mask.sum(dim=(1, 2, 3)).clamp_min(a_min)
    return (squared / area).mean()
