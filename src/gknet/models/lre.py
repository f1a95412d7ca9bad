"""Long-distance Reference Extractor (paper Sec. 3.2): a transformer over the deepest map.

Every pixel of the deepest encoder map is a token; ``l`` pre-norm transformer layers give
each token a view of the whole image; a reshape and a post-convolution return F_LR.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_2d(dim: int, h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2-D sine/cosine position embedding [h*w, dim]: half the channels encode y, half x."""
    if dim % 4:
        raise ValueError(f"sinusoidal 2-D embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    freq = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq
    ey = torch.cat([ys.sin(), ys.cos()], dim=1)[:, None, :].expand(h, w, 2 * quarter)
    ex = torch.cat([xs.sin(), xs.cos()], dim=1)[None, :, :].expand(h, w, 2 * quarter)
    return torch.cat([ey, ex], dim=2).reshape(h * w, dim).to(dtype or torch.float32)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention weights [B, heads, T, T] (for explanation, not used in forward)."""
        q, k, _ = self.split_heads(x)
        return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.split_heads(x)
        out = F.scaled_dot_product_attention(q, k, v)  # memory-efficient kernels where available
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + MHSA(LN(x)); x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LRE(nn.Module):
    """F_E^1 [B, C, h, w] -> F_LR [B, C, h, w] with global (all-token) interaction."""

    LEARNED_GRID = 16  # learned embeddings live on a 16x16 grid, resized to the token grid

    def __init__(self, channels: int, dim: int, layers: int, heads: int, mlp_ratio: float, pos: str):
        super().__init__()
        self.pos = pos
        self.embed = nn.Linear(channels, dim)
        if pos == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, dim, self.LEARNED_GRID, self.LEARNED_GRID) * 0.02)
        self.layers = nn.ModuleList(TransformerLayer(dim, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.post = nn.Conv2d(dim, channels, 3, padding=1)

    def position(self, h: int, w: int, ref: torch.Tensor) -> torch.Tensor:
        if self.pos == "learned":
            grid = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic", align_corners=False)
            return grid.flatten(2).transpose(1, 2)
        return sinusoidal_2d(ref.shape[-1], h, w, device=ref.device, dtype=ref.dtype)[None]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded tokens [B, h*w, dim] (input of the first layer)."""
        h, w = x.shape[-2:]
        t = self.embed(x.flatten(2).transpose(1, 2))
        return t + self.position(h, w, t)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """F_LR, plus each layer's attention weights [B, heads, T, T] if ``return_attention``."""
        b, _, h, w = x.shape
        t = self.tokens(x)
        maps = []
        for layer in self.layers:
            if return_attention:
                maps.append(layer.attn.attention_maps(layer.norm1(t)))
            t = layer(t)
        f_lr = self.post(self.norm(t).transpose(1, 2).reshape(b, -1, h, w))
        return (f_lr, maps) if return_attention else f_lr
