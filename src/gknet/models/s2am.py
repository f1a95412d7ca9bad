"""Spatial-separated attention module (S2AM; Cun and Pun, TIP 2020), as iS2AM's U-Net decoder uses it.

GKNet's backbone is "simple U-Net with attention blocks [8]" (paper Sec. 3.1). The block
treats the two sides of the mask separately: three channel attentions of the same features
select what the background keeps (``background``), what the foreground keeps as it is
(``mix``) and what it re-learns through a small conv block (``foreground``), and the mask,
resized and Gaussian-blurred so the seam is soft, joins them:

    out = M * (learn(CA_fg(x)) + CA_mix(x)) + (1 - M) * CA_bg(x)

Each channel attention is the CBAM-style gate of iS2AM: average- and max-pooled channel
statistics -> two linear layers -> sigmoid, one weight per channel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gknet.models.unet import ConvBlock

_BLUR_SIZE, _BLUR_SIGMA = 7, 1.0  # iS2AM's mask smoothing


class ChannelAttention(nn.Module):
    """x * sigmoid(MLP([avgpool(x), maxpool(x)])), one weight per sample and channel."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 16, 8)
        self.mlp = nn.Sequential(
            nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        stats = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        return torch.sigmoid(self.mlp(stats))[..., None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def mid_channels(channels: int, mid_k: float) -> int:
    """Width of the learning block's first conv in an S2AM block on ``channels`` channels."""
    return max(1, math.ceil(mid_k * channels))


class SpatialSeparatedAttention(nn.Module):
    """S2AM block on a decoder map ``x`` [B, C, h, w] with the image mask [B, 1, H, W] in [0, 1]."""

    def __init__(self, channels: int, norm: str, mid_k: float = 0.5):
        super().__init__()
        mid = mid_channels(channels, mid_k)
        self.background = ChannelAttention(channels)
        self.foreground = ChannelAttention(channels)
        self.mix = ChannelAttention(channels)
        self.learn = ConvBlock(channels, channels, norm, mid=mid)
        self.register_buffer("blur", _gaussian_kernel(_BLUR_SIZE, _BLUR_SIGMA), persistent=False)

    def soft_mask(self, mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The mask at the map's size, blurred; replicate padding keeps a mask that fills the frame at 1."""
        m = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
        pad = _BLUR_SIZE // 2
        return F.conv2d(F.pad(m, (pad, pad, pad, pad), mode="replicate"), self.blur)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = self.soft_mask(mask, x.shape[-2:])
        fg = self.learn(self.foreground(x)) + self.mix(x)
        return m * fg + (1 - m) * self.background(x)
