"""The S2AM decoder attention block against a loop-by-loop reference, and its wiring in GKNet."""

from __future__ import annotations

import math

import torch

from gknet.models import build_model
from gknet.models.s2am import ChannelAttention, SpatialSeparatedAttention
from tests.conftest import tiny_config


def _reference_gate(gate: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """Channel attention written out: pool each channel by hand, two dense layers, sigmoid."""
    lin1, lin2 = gate.mlp[0], gate.mlp[2]
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        stats = [x[b, c].sum() / x[b, c].numel() for c in range(x.shape[1])]
        stats += [x[b, c].max() for c in range(x.shape[1])]
        hidden = torch.relu(lin1.weight @ torch.stack(stats) + lin1.bias)
        weights = torch.sigmoid(lin2.weight @ hidden + lin2.bias)
        for c in range(x.shape[1]):
            out[b, c] = x[b, c] * weights[c]
    return out


def _reference_blur(m: torch.Tensor, size: int = 7, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian smoothing pixel by pixel, the image edge extended (replicate padding)."""
    r = size // 2
    g = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-r, r + 1)]
    total = sum(g) ** 2
    h, w = m.shape[-2:]
    out = torch.zeros_like(m)
    for y in range(h):
        for x in range(w):
            acc = 0.0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
                    acc += g[dy + r] * g[dx + r] * m[..., yy, xx]
            out[..., y, x] = acc / total
    return out


def test_s2am_matches_reference():
    block = SpatialSeparatedAttention(6, norm="none", mid_k=0.5).eval()
    x = torch.randn(2, 6, 9, 11)
    mask = (torch.rand(2, 1, 9, 11) > 0.6).float()  # already at the map's size: no resize
    with torch.no_grad():
        m = _reference_blur(mask)
        fg = block.learn(_reference_gate(block.foreground, x)) + _reference_gate(block.mix, x)
        expected = m * fg + (1 - m) * _reference_gate(block.background, x)
        torch.testing.assert_close(block(x, mask), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(block.soft_mask(mask, (9, 11)), m, atol=1e-6, rtol=0)


def test_s2am_sides_of_the_mask():
    block = SpatialSeparatedAttention(4, norm="batch").eval()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        # Empty mask: only the background gate; full mask: only the foreground paths.
        torch.testing.assert_close(block(x, torch.zeros(1, 1, 8, 8)), block.background(x))
        full = block.learn(block.foreground(x)) + block.mix(x)
        torch.testing.assert_close(block(x, torch.ones(1, 1, 32, 32)), full)


def test_gknet_wires_s2am_into_the_finest_decoder_steps():
    cfg = tiny_config(widths=(8, 8, 16), use_s2am=True, s2am_levels=1, kpb_levels=2)
    model = build_model(cfg).eval()
    finest, coarser = model.decoder[-1], model.decoder[0]
    assert isinstance(finest.attention, SpatialSeparatedAttention) and coarser.attention is None
    assert build_model(tiny_config()).decoder[0].attention is None  # off by default (shipped weights)
    x, m = torch.rand(1, 3, 24, 20), (torch.rand(1, 1, 24, 20) > 0.5).float()
    with torch.no_grad():
        before = model(x, m)
        finest.attention.background.mlp[2].bias.add_(2.0)  # the block is on the forward path
        assert not torch.allclose(before, model(x, m))
