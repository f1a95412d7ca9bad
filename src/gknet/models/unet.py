"""U-Net building blocks shared by GKNet and the ablation baseline (a plain U-Net)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two 3x3 conv -> norm -> ReLU layers (cin -> mid -> cout; mid defaults to cout)."""

    def __init__(self, cin: int, cout: int, norm: str, mid: int | None = None):
        mid = mid or cout
        super().__init__(
            nn.Conv2d(cin, mid, 3, padding=1, bias=norm == "none"),
            norm_layer(norm, mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=norm == "none"),
            norm_layer(norm, cout),
            nn.ReLU(inplace=True),
        )


class Encoder(nn.Module):
    """Level i (width ``widths[i]``) runs at stride 2**i; returns the features of every level."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], norm: str):
        super().__init__()
        chans = (in_channels, *widths)
        self.levels = nn.ModuleList(ConvBlock(chans[i], chans[i + 1], norm) for i in range(len(widths)))

    def forward(self, x: torch.Tensor, join=None) -> list[torch.Tensor]:
        """``join(level, x)``, if given, replaces each level's output (skip and next level's input)."""
        feats = []
        for i, level in enumerate(self.levels):
            x = level(x if i == 0 else F.max_pool2d(x, 2))
            if join is not None:
                x = join(i, x)
            feats.append(x)
        return feats


class UpBlock(nn.Module):
    """Decoder step: upsample x2, concatenate the encoder skip, [attention,] ConvBlock.

    ``attention`` (e.g. S2AM) acts on the concatenation and gets the image mask, as in
    iS2AM's decoder.
    """

    def __init__(self, cin: int, cskip: int, cout: int, norm: str, attention: nn.Module | None = None):
        super().__init__()
        self.reduce = nn.Conv2d(cin, cout, 1)
        self.attention = attention
        self.block = ConvBlock(cout + cskip, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([x, skip], dim=1)
        if self.attention is not None:
            x = self.attention(x, mask)
        return self.block(x)
