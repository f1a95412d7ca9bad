"""Harmony kernel modulation (paper Eqs. 5-6): the one hot op of GKNet.

``out[b, c, p] = sum_{q in N(p)} K[b, c, k(p - q), p] * F[b, c, q]``

with an N x N neighbourhood, zero padding and the kernel index ``k`` in row-major order
over the window: index 0 multiplies the top-left neighbour ``p + (-r, -r)``, index
``N*N // 2`` the pixel itself, ``r = N // 2``.

Implementation: instead of ``unfold`` (which materialises all N*N shifted copies of the
features, N*N x the feature memory), we loop over the N*N window offsets -- not over
pixels -- and accumulate ``K[:, :, k] * shifted(F)`` into the output in place. Each shifted
copy is a view into one zero-padded copy of F, so a call needs:

- output: B*C*H*W values, padded features: B*C*(H+N-1)*(W+N-1) values,
- one product temporary of B*C*h*W values, where h = H, or ``chunk_rows`` when chunking.

That is about 3x the feature map (float32: 12 bytes per feature value) against
(N*N + 1)x for unfold. Under autograd the views add nothing; the backward pass saves only
F (padded) and K, which are needed anyway. ``chunk_rows`` processes bands of output rows
to bound the temporary for very large maps (inference at high resolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kernel_modulation(
    features: torch.Tensor, kernels: torch.Tensor, chunk_rows: int | None = None
) -> torch.Tensor:
    """Apply per-pixel, per-channel N x N kernels to ``features``.

    features: [B, C, H, W]; kernels: [B, C, N*N, H, W] with N odd. Returns [B, C, H, W].
    ``chunk_rows``: if set, compute the output in bands of this many rows (same result).
    """
    if features.dim() != 4 or kernels.dim() != 5:
        raise ValueError(
            f"expected features [B,C,H,W] and kernels [B,C,N*N,H,W], got {tuple(features.shape)} "
            f"and {tuple(kernels.shape)}"
        )
    b, c, h, w = features.shape
    nn_ = kernels.shape[2]
    n = int(round(nn_**0.5))
    if n * n != nn_ or n % 2 == 0 or kernels.shape[:2] != (b, c) or kernels.shape[3:] != (h, w):
        raise ValueError(
            f"kernels {tuple(kernels.shape)} do not match features {tuple(features.shape)} "
            "with an odd N x N window"
        )
    r = n // 2
    padded = F.pad(features, (r, r, r, r))
    rows = h if not chunk_rows or chunk_rows >= h else chunk_rows
    bands = []
    for y0 in range(0, h, rows):
        y1 = min(y0 + rows, h)
        out = None
        for k in range(nn_):
            dy, dx = divmod(k, n)
            term = kernels[:, :, k, y0:y1] * padded[:, :, y0 + dy : y1 + dy, dx : dx + w]
            out = term if out is None else out.add_(term)
        bands.append(out)
    return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)


def kernel_modulation_unfold(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Straightforward ``unfold`` implementation of :func:`kernel_modulation` (the benchmark reference)."""
    b, c, h, w = features.shape
    n = int(round(kernels.shape[2] ** 0.5))
    patches = F.unfold(features, n, padding=n // 2).view(b, c, n * n, h, w)
    return (patches * kernels).sum(dim=2)
