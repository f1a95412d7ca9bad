"""Feature fusion inside a Kernel Prediction Block.

- :class:`SCF`, Selective Correlation Fusion (paper Eqs. 2-4), fuses the encoder feature
  F_E^l with the previous block's F_KPB^{l-1} through channel attention that is
  re-weighted by the correlation between the two attention vectors.
- :class:`ConcatFusion`, the "standard" fusion of the ablation (SCF off): concatenate, conv.

Both take (F_E [B, C, H, W], F_prev [B, C_prev, H', W']) with H' <= H and return the fused
[B, C, H, W] map and a dict of the attention weights (empty for concatenation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def _pool_matrix(n, out, like: torch.Tensor) -> torch.Tensor:
    """[out, n] rows averaging the bins of adaptive average pooling (``floor(i n / out)`` to ``ceil``)."""
    i = torch.arange(out, device=like.device)
    start, stop = (i * n) // out, ((i + 1) * n + out - 1) // out
    j = torch.arange(n, device=like.device)
    inside = (j[None] >= start[:, None]) & (j[None] < stop[:, None])
    return inside.to(like.dtype) / (stop - start)[:, None].to(like.dtype)


def pool_to_at_most(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` to (min(H, size), min(W, size)) as matrix products (exportable
    with dynamic H, W; equal up to float rounding, and exactly ``x`` where H, W <= size)."""
    h, w = x.shape[-2:]
    rows = _pool_matrix(h, torch.sym_min(h, size), x)
    cols = _pool_matrix(w, torch.sym_min(w, size), x)
    return rows @ x @ cols.transpose(0, 1)


class AttentionVector(nn.Module):
    """alpha in R^C: 3x3 conv, global average pooling, two-layer MLP (Sec. 3.2).

    The conv runs on the map average-pooled to at most POOLED x POOLED: its output is
    averaged away right after, so the coarse map gives nearly the same vector at a small
    fraction of the cost of a full-resolution conv. ONNX export has no adaptive pooling for
    inputs of dynamic size, so there the pooling is written as two averaging matrices
    (:func:`pool_to_at_most`).
    """

    POOLED = 16

    def __init__(self, cin: int, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, channels, 3, padding=1)
        hidden = max(channels // 4, 4)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            x = pool_to_at_most(x, self.POOLED)
        elif max(x.shape[-2:]) > self.POOLED:
            x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], self.POOLED), min(x.shape[-1], self.POOLED)))
        return self.mlp(self.conv(x).mean(dim=(2, 3)))


class SCF(nn.Module):
    """Selective Correlation Fusion.

    alpha_E, alpha_KPB in R^C are split into n groups of m = C / n channels; the relation
    A = alpha~_KPB alpha~_E^T (n x n, Eq. 2) goes through an N x N convolution with two
    output maps R_KPB, R_E ("N x N convolutions with splitting"); the selective factors are
    the relation-weighted mixtures of the *other* branch's grouped attention,
    alpha_bar_KPB = R_KPB alpha~_E and alpha_bar_E = R_E^T alpha~_KPB (each n x m -> C).
    Then S = sigmoid(alpha + b * FC(alpha_bar)) with one learnable scalar b (Eq. 3) and
    F^ = S_E * Conv(F_E) + Upsample(S_KPB * Conv(F_KPB)) (Eq. 4).
    """

    def __init__(self, channels: int, prev_channels: int, groups: int, kernel_size: int):
        super().__init__()
        self.groups = groups
        self.att_e = AttentionVector(channels, channels)
        self.att_kpb = AttentionVector(prev_channels, channels)
        self.relation = nn.Conv2d(1, 2, kernel_size, padding=kernel_size // 2)
        self.fc_e = nn.Linear(channels, channels)
        self.fc_kpb = nn.Linear(channels, channels)
        self.b = nn.Parameter(torch.ones(()))
        self.conv_e = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_kpb = nn.Conv2d(prev_channels, channels, 3, padding=1)

    def forward(self, f_e: torch.Tensor, f_prev: torch.Tensor) -> tuple[torch.Tensor, dict]:
        a_e, a_kpb = self.att_e(f_e), self.att_kpb(f_prev)  # [B, C]
        b, c = a_e.shape
        g_e, g_kpb = a_e.view(b, self.groups, -1), a_kpb.view(b, self.groups, -1)  # [B, n, m]
        relation = g_kpb @ g_e.transpose(1, 2)  # A: [B, n, n]
        r_kpb, r_e = self.relation(relation[:, None]).unbind(1)  # each [B, n, n]
        bar_kpb = (r_kpb @ g_e).reshape(b, c)
        bar_e = (r_e.transpose(1, 2) @ g_kpb).reshape(b, c)
        s_e = torch.sigmoid(a_e + self.b * self.fc_e(bar_e))
        s_kpb = torch.sigmoid(a_kpb + self.b * self.fc_kpb(bar_kpb))
        features = self.conv_e(f_e)
        fused = s_e[:, :, None, None] * features + _upsample_to(
            s_kpb[:, :, None, None] * self.conv_kpb(f_prev), f_e
        )
        return fused, {"features": features, "relation": relation, "s_e": s_e, "s_kpb": s_kpb}


class ConcatFusion(nn.Module):
    """Standard fusion: Conv3x3(concat(F_E, Upsample(F_prev)))."""

    def __init__(self, channels: int, prev_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels + prev_channels, channels, 3, padding=1)

    def forward(self, f_e: torch.Tensor, f_prev: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.conv(torch.cat([f_e, _upsample_to(f_prev, f_e)], dim=1)), {}
