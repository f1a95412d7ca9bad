"""Classical harmonization baselines with the method protocol of the evaluator.

A method is a callable ``method(composite, mask) -> harmonized`` on float tensors:
composite [B, 3, H, W] in [0, 1], mask [B, 1, H, W] in [0, 1] (foreground where > 0.5);
the result has the composite's shape, values in [0, 1], and the background unchanged.
A trained GKNet model follows the same protocol.

- ``composite``: identity, the calibration anchor of every table.
- ``reinhard``: Reinhard et al. 2001 colour transfer in CIE Lab: the foreground's
  per-channel mean and standard deviation are mapped to the background's.
- ``histogram``: per-channel histogram matching in CIE Lab: each foreground value goes
  through the foreground's empirical CDF and then the background's inverse CDF
  (:func:`gknet.color.histogram.match_quantiles`, scikit-image's algorithm).

An image whose foreground or background is empty is returned unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gknet.color.histogram import match_quantiles
from gknet.color.spaces import lab_to_rgb, masked_mean_std, rgb_to_lab
from gknet.errors import GknetError

Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _paste(composite: torch.Tensor, lab: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """Converted foreground over the original background; images lacking fg or bg untouched."""
    area = fg.sum(dim=(1, 2, 3))
    usable = ((area > 0) & (area < fg[0].numel()))[:, None, None, None]
    return torch.where(fg & usable, lab_to_rgb(lab), composite)


def composite(composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Identity: the composite itself."""
    return composite.clone()


def reinhard(composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Map the foreground's Lab mean/std per channel to the background's."""
    fg = mask > 0.5
    lab = rgb_to_lab(composite)
    fg_mean, fg_std = masked_mean_std(lab, fg)
    bg_mean, bg_std = masked_mean_std(lab, ~fg)
    return _paste(composite, (lab - fg_mean) / fg_std * bg_std + bg_mean, fg)


def histogram(composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel Lab histogram matching of the foreground to the background."""
    fg = mask > 0.5
    lab = rgb_to_lab(composite)
    matched = lab.cpu().numpy().copy()
    for image, inside in zip(matched, fg[:, 0].cpu().numpy(), strict=True):
        if not inside.any() or inside.all():
            continue
        for channel in image:
            channel[inside] = match_quantiles(channel[inside], channel[~inside])
    return _paste(composite, torch.from_numpy(matched).to(lab), fg)


BASELINES: dict[str, Method] = {"composite": composite, "reinhard": reinhard, "histogram": histogram}


def get_baseline(name: str) -> Method:
    """The baseline called ``name`` (GknetError listing the valid names otherwise)."""
    try:
        return BASELINES[name]
    except KeyError:
        raise GknetError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}") from None
