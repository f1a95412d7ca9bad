"""Colour-space conversions in torch: sRGB [0, 1] <-> CIE Lab (D65), channel-first.

Shared by the classical baselines (Reinhard transfer in Lab) and the synthetic composite
generator (Lab statistics transfer from another photo).
"""

from __future__ import annotations

import torch

_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE_D65 = torch.tensor([0.950456, 1.0, 1.088754])
_EPS = 216 / 24389  # CIE epsilon
_KAPPA = 24389 / 27


def _srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] sRGB in [0, 1] -> Lab (L in [0, 100], a/b roughly [-128, 127])."""
    lin = _srgb_to_linear(rgb)
    m = _RGB_TO_XYZ.to(rgb)
    xyz = torch.einsum("ij,...jhw->...ihw", m, lin) / _WHITE_D65.to(rgb)[:, None, None]
    f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab`; the result is clamped to [0, 1]."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    fx = fy + a / 500
    fz = fy - b / 200
    f = torch.stack([fx, fy, fz], dim=-3)
    xyz = torch.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _WHITE_D65.to(lab)[:, None, None]
    lin = torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab), xyz)
    return _linear_to_srgb(lin).clamp(0, 1)


def masked_mean_std(
    x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``x`` [..., C, H, W] over pixels where ``mask`` [..., 1, H, W] is set.

    Returns tensors of shape [..., C, 1, 1]; an empty mask gives mean 0 and std ``eps``.
    """
    w = mask.to(x.dtype)
    area = w.sum(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    mean = (x * w).sum(dim=(-2, -1), keepdim=True) / area
    var = ((x - mean) ** 2 * w).sum(dim=(-2, -1), keepdim=True) / area
    return mean, var.clamp_min(0).sqrt().clamp_min(eps)
