"""Full-resolution colour transfer: apply a low-resolution harmonization to the full-size image.

The network runs on a small copy of the composite. Upsampling its output would blur every
detail, so instead we explain the network's colour change with a smooth field of local
affine colour transforms and apply that field to the full-resolution composite (the idea
of the guided filter [He et al., TPAMI 2013] used for upsampling, as in the Fast Guided
Filter [He & Sun, 2015] and Bilateral Guided Upsampling [Chen et al., 2016]):

1. Fit, for every low-resolution pixel k, the affine map ``p = A_k x + b_k`` (A_k 3x3,
   b_k 3) that takes the low-resolution composite x to the network output p over the
   (2r+1)^2 window around k, by least squares weighted by alpha^8 (alpha = the low-resolution
   mask; the power is ``FullResConfig.weight_power``): only the foreground carries the change,
   and pixels on the mask's edge, whose colour is part background, count far less than pure
   foreground ones (power 8 measured best of 1, 2, 4, 8 on the benchmark; the weights are
   normalised per window, so a thin object still gets a fit). The ridge term
   ``eps * ||A_k - I||^2`` pulls A_k towards the identity, not towards zero as in the plain
   guided filter: where the window has little colour variation the fit falls back to a pure
   colour shift and the full-resolution texture is kept at full contrast instead of being
   flattened.
2. Average the coefficients of all windows covering a pixel (weighted by how much
   foreground each window holds) so the field is smooth; windows without any foreground
   get the identity.
3. Upsample the 12 coefficient maps bilinearly to full resolution and apply them to the
   full-resolution composite, in bands of rows to bound memory; blend with the mask as
   alpha. Pixels where the mask is 0 are returned bit-for-bit unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gknet.config import FullResConfig

BAND_PIXELS = 2**16  # full-size pixels per band when applying the transform (fits the CPU cache)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize [B, C, H, W] to ``size`` with antialiasing when shrinking (bilinear otherwise)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Box mean over a (2r+1)^2 window; zero padding is harmless since only ratios of means are used."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=True)


def fit_local_affine(
    src: torch.Tensor,
    dst: torch.Tensor,
    weight: torch.Tensor,
    radius: int = FullResConfig.radius,
    eps: float = FullResConfig.eps,
) -> torch.Tensor:
    """Smoothed per-pixel affine colour maps from ``src`` to ``dst``.

    src, dst: [B, 3, h, w] in [0, 1]; weight: [B, 1, h, w] (the soft mask).
    Returns coefficients [B, 12, h, w]: channels 0-8 are A (row-major, out x in), 9-11 are b.
    """
    b, _, h, w = src.shape
    src, dst, weight = src.double(), dst.double(), weight.double()
    # Weighted window statistics: E[x], E[p], E[x x^T], E[x p^T] (tiny weights only occur
    # in windows whose coefficients step 2 then weighs by that same tiny amount).
    outer_xx = (src[:, :, None] * src[:, None]).flatten(1, 2)
    outer_xp = (src[:, :, None] * dst[:, None]).flatten(1, 2)
    stats = _box(weight * torch.cat([src, dst, outer_xx, outer_xp], dim=1), radius)
    win_weight = _box(weight, radius)
    stats = stats / win_weight.clamp_min(1e-12)
    mean_x, mean_p = stats[:, :3], stats[:, 3:6]
    exx, exp_ = stats[:, 6:15], stats[:, 15:24]

    def per_pixel(t: torch.Tensor, rows: int) -> torch.Tensor:  # [B, rows*3, h, w] -> [B, h, w, rows, 3]
        return t.permute(0, 2, 3, 1).reshape(b, h, w, rows, 3)

    mx, mp = per_pixel(mean_x, 1), per_pixel(mean_p, 1)
    eye = torch.eye(3, dtype=src.dtype, device=src.device)
    cov_xx = per_pixel(exx, 3) - mx.transpose(-1, -2) @ mx + eps * eye
    cov_xp = per_pixel(exp_, 3) - mx.transpose(-1, -2) @ mp + eps * eye
    a_t = torch.linalg.solve(cov_xx, cov_xp)  # A^T: [in, out]
    offset = mp - mx @ a_t  # [B, h, w, 1, 3]
    coeffs = torch.cat([a_t.transpose(-1, -2).reshape(b, h, w, 9), offset.reshape(b, h, w, 3)], dim=-1)
    coeffs = coeffs.permute(0, 3, 1, 2)

    identity = torch.cat([eye.reshape(9), eye.new_zeros(3)]).view(1, 12, 1, 1)
    has_fg = win_weight > 0
    coeffs = torch.where(has_fg, coeffs, identity)
    # Step 2: average over the windows covering each pixel, weighted by their foreground.
    smooth_weight = _box(win_weight, radius)
    smoothed = _box(win_weight * coeffs, radius) / smooth_weight.clamp_min(1e-12)
    return torch.where(smooth_weight > 0, smoothed, identity).float()


def _affine(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x + b`` for coefficients c [B, 12, 1, W] (broadcast over the rows of x [B, 3, R, W])."""
    # A is row-major (out x in): column i multiplies input channel i.
    y = torch.addcmul(c[:, 9:], c[:, 0:9:3], x[:, 0:1])
    y.addcmul_(c[:, 1:9:3], x[:, 1:2])
    return y.addcmul_(c[:, 2:9:3], x[:, 2:3])


def apply_local_affine(coeffs: torch.Tensor, image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Apply coefficients [B, 12, h, w] to ``image`` [B, 3, H, W], blended with ``alpha`` [B, 1, H, W].

    The coefficients are upsampled bilinearly (pixel centres aligned, as F.interpolate with
    align_corners=False) over the bounding box of the mask only. Returns a new tensor in
    [0, 1]; where alpha is 0 it equals ``image`` exactly.

    Bilinear interpolation along the rows commutes with applying the (linear) maps, so the
    full-size rows between two low-resolution rows get both rows' maps, broadcast over
    them, and the two results are interpolated: no per-pixel coefficient tensor is ever
    built, and bands of at most BAND_PIXELS stay in the CPU cache.
    """
    out = image.clone()
    height, width = image.shape[-2:]
    fg = alpha > 0
    fg_rows = fg.any(dim=3).flatten().nonzero() % height
    fg_cols = fg.any(dim=2).flatten().nonzero() % width
    if len(fg_rows) == 0:
        return out
    top, bottom = int(fg_rows.min()), int(fg_rows.max()) + 1
    cols = slice(int(fg_cols.min()), int(fg_cols.max()) + 1)
    coeffs = F.interpolate(coeffs, size=(coeffs.shape[-2], width), mode="bilinear", align_corners=False)
    coeffs = coeffs[..., cols].contiguous()
    rows_low = coeffs.shape[-2]
    pos = ((torch.arange(top, bottom, dtype=torch.float64) + 0.5) * (rows_low / height) - 0.5).clamp(
        0, rows_low - 1
    )
    low = pos.floor().long()
    frac = (pos - pos.floor()).float().to(coeffs.device)
    # Bands: runs of rows between the same two low-resolution rows, at most BAND_PIXELS each.
    band = max(1, BAND_PIXELS // (cols.stop - cols.start))
    starts = [0, *((low[1:] != low[:-1]).nonzero().flatten() + 1).tolist(), bottom - top]
    for run_start, run_stop in zip(starts[:-1], starts[1:], strict=True):
        lo = int(low[run_start])
        hi = min(lo + 1, rows_low - 1)
        for start in range(run_start, run_stop, band):
            idx = slice(start, min(start + band, run_stop))
            rows = slice(top + idx.start, top + idx.stop)
            x = image[:, :, rows, cols].float()
            mapped = _affine(coeffs[:, :, lo : lo + 1], x)
            mapped.lerp_(_affine(coeffs[:, :, hi : hi + 1], x), frac[idx].view(1, 1, -1, 1))
            m = alpha[:, :, rows, cols].to(x.dtype)
            mapped.sub_(x).mul_(m).add_(x).clamp_(0, 1)
            out[:, :, rows, cols] = torch.where(m > 0, mapped.to(image.dtype), image[:, :, rows, cols])
    return out


def transfer_to_full_resolution(
    composite: torch.Tensor,
    mask: torch.Tensor,
    low_composite: torch.Tensor,
    low_output: torch.Tensor,
    low_mask: torch.Tensor,
    settings: FullResConfig | None = None,
) -> torch.Tensor:
    """Carry the change ``low_composite -> low_output`` over to the full-size ``composite``.

    composite [B, 3, H, W], mask [B, 1, H, W] (soft, used as alpha); the low-resolution
    tensors share one smaller (or larger) size; ``settings`` are the fit's parameters.
    Returns [B, 3, H, W].
    """
    settings = settings or FullResConfig()
    weight = low_mask.double() ** settings.weight_power
    coeffs = fit_local_affine(low_composite, low_output, weight, settings.radius, settings.eps)
    return apply_local_affine(coeffs, composite, mask)
