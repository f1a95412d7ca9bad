"""GKNet: encoder -> LRE -> KPB chain (with SCF) -> decoder with kernel modulation -> blend.

Levels are counted as in the paper: KPB / kernel level 1 is the deepest. With
``use_kpb=False`` the model is the plain U-Net baseline of the ablation (Table 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gknet.config import ModelConfig
from gknet.models.kpb import KPBlock
from gknet.models.lre import LRE
from gknet.models.s2am import SpatialSeparatedAttention
from gknet.models.unet import Encoder, UpBlock
from gknet.ops import kernel_modulation

# ImageNet statistics: inputs are normalised inside the model, callers pass [0, 1] images.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class GKNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths
        deepest = widths[-1]
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.encoder = Encoder(4, widths, cfg.norm)
        self.lre = None
        if cfg.use_lre:
            dim = cfg.lre_dim or deepest
            self.lre = LRE(deepest, dim, cfg.lre_layers, cfg.lre_heads, cfg.lre_mlp_ratio, cfg.lre_pos)
        # KPB j (j = 0 is the paper's level 1) sits at encoder level L-1-j; the deepest block
        # takes F_LR (or, without LRE, the deepest encoder map itself) as its "previous" input.
        levels = [len(widths) - 1 - j for j in range(cfg.kpb_levels)] if cfg.use_kpb else []
        self.kpb = nn.ModuleList(
            KPBlock(
                widths[lvl], widths[min(lvl + 1, len(widths) - 1)], widths[lvl], cfg.kernel_size,
                cfg.norm, cfg.use_scf, cfg.scf_groups,
            )
            for lvl in levels
        )
        # Decoder step i (0 = the finest) gets an S2AM block when i < s2am_levels (iS2AM attends
        # in its finer decoder steps).
        s2am = cfg.s2am_levels if cfg.use_s2am else 0
        self.decoder = nn.ModuleList(
            UpBlock(
                widths[i + 1], widths[i], widths[i], cfg.norm,
                SpatialSeparatedAttention(2 * widths[i], cfg.norm, cfg.s2am_mid_k) if i < s2am else None,
            )
            for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], 3, 1)

    def forward(self, composite: torch.Tensor, mask: torch.Tensor, return_intermediates: bool = False):
        """composite [B, 3, H, W] and mask [B, 1, H, W] in [0, 1], any H, W.

        Returns ``pred * M + (1 - M) * composite`` (the paper's last equation), so pixels
        outside the mask are returned unchanged, and with ``return_intermediates`` also a
        dict of the tensors the explanation tools draw.
        """
        h, w = composite.shape[-2:]
        s = self.cfg.stride
        pad = (0, (-w) % s, 0, (-h) % s)
        x = F.pad((composite - self.mean) / self.std, pad, mode="replicate")
        m = F.pad(mask, pad)
        feats = self.encoder(torch.cat([x, m - 0.5], dim=1))
        inter: dict = {"encoder": feats}

        kernels = []
        if self.kpb:
            f_prev = feats[-1]
            if self.lre is not None:
                if return_intermediates:
                    f_prev, inter["lre_attention"] = self.lre(f_prev, return_attention=True)
                    inter["lre_grid"] = tuple(f_prev.shape[-2:])
                else:
                    f_prev = self.lre(f_prev)
            inter.update(kpb_features=[], fusion=[])
            for j, block in enumerate(self.kpb):
                k, f_prev, weights = block(feats[-1 - j], f_prev)
                kernels.append(k)
                inter["kpb_features"].append(f_prev)
                inter["fusion"].append(weights)
        inter["kernels"] = kernels

        d = feats[-1]
        inter["decoder"] = []
        for j in range(len(feats)):
            if j:
                d = self.decoder[j - 1](d, feats[-1 - j], m)
            inter["decoder"].append(d)
            if j < len(kernels):
                d = kernel_modulation(d, kernels[j])
        # The head predicts a correction to the composite (in [0, 1] units).
        pred = (composite + self.head(d)[..., :h, :w]).clamp(0, 1)
        out = pred * mask + (1 - mask) * composite
        if return_intermediates:
            inter["prediction"] = pred
            return out, inter
        return out
