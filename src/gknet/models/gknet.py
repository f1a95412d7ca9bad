"""GKNet: encoder -> LRE -> KPB chain (with SCF) -> decoder with kernel modulation -> blend.

Levels are counted as in the paper: KPB / kernel level 1 is the deepest. With
``use_kpb=False`` the model is the plain U-Net baseline of the ablation (Table 4).
``forward`` returns the harmonized image; ``trace`` runs the same pass and also returns
the :class:`Intermediates` that the explanation tools draw.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gknet.config import ModelConfig, Normalization
from gknet.models.kpb import KPBlock
from gknet.models.lre import LRE
from gknet.models.ops import kernel_modulation
from gknet.models.s2am import SpatialSeparatedAttention
from gknet.models.semantic import SemanticEncoder
from gknet.models.unet import Encoder, UpBlock


@dataclass
class LevelKernels:
    """K^l of one modulated decoder level: [B, C, N*N, h, w]; one cell spans ``stride`` input pixels."""

    kernels: torch.Tensor
    stride: int


@dataclass
class SCFMaps:
    """What Selective Correlation Fusion computed at one KPB level (Eqs. 2-4)."""

    features: torch.Tensor  # Conv(F_E^l) [B, C, h, w], the map that S_E weights in Eq. 4
    s_e: torch.Tensor  # selective weights S_E^l [B, C]
    s_kpb: torch.Tensor  # selective weights S_KPB^{l-1} [B, C]
    relation: torch.Tensor  # A [B, n, n] (Eq. 2)
    stride: int


@dataclass
class Intermediates:
    """The tensors of one forward pass (``GKNet.trace``); lists run from paper level 1 (deepest).

    Every map covers the network input padded to a multiple of ``GKNet.cfg.stride``;
    ``size`` is the unpadded input's (height, width).
    """

    size: tuple[int, int] = (0, 0)
    encoder: list[torch.Tensor] = field(default_factory=list)  # F_E per level, finest (stride 1) first
    decoder: list[torch.Tensor] = field(default_factory=list)  # F_D per level before modulation
    kernels: list[LevelKernels] = field(default_factory=list)  # empty without KPB
    scf: list[SCFMaps] = field(default_factory=list)  # empty with concatenation fusion
    lre_attention: list[torch.Tensor] = field(default_factory=list)  # per layer [B, heads, T, T]
    lre_grid: tuple[int, int] | None = None  # token grid (rows, cols); tokens span ``lre_stride`` pixels
    lre_stride: int = 0
    prediction: torch.Tensor | None = None  # clamped prediction before the blend with the mask
    output: torch.Tensor | None = None  # what ``forward`` returns


class GKNet(nn.Module):
    def __init__(self, cfg: ModelConfig, normalization: Normalization | None = None):
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths
        deepest = widths[-1]
        # Inputs are normalised inside the model: callers pass [0, 1] images.
        self.normalization = normalization = normalization or Normalization()
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(normalization.std).view(1, 3, 1, 1), persistent=False)
        self.encoder = Encoder(4, widths, cfg.norm)
        self.semantic = None
        if cfg.semantic != "none":
            joined = {lvl: widths[lvl] for lvl in range(len(widths) - cfg.semantic_levels, len(widths))}
            self.semantic = SemanticEncoder(joined, cfg.semantic_mask, trainable=cfg.semantic_lr > 0)
        self.lre = None
        if cfg.use_lre:
            dim = cfg.lre_dim or deepest
            self.lre = LRE(deepest, dim, cfg.lre_layers, cfg.lre_heads, cfg.lre_mlp_ratio, cfg.lre_pos)
        # KPB j (j = 0 is the paper's level 1) sits at encoder level L-1-j; the deepest block
        # takes F_LR (or, without LRE, the deepest encoder map itself) as its "previous" input.
        levels = [len(widths) - 1 - j for j in range(cfg.kpb_levels)] if cfg.use_kpb else []
        self.kpb = nn.ModuleList(
            KPBlock(
                widths[lvl],
                widths[min(lvl + 1, len(widths) - 1)],
                widths[lvl],
                cfg.kernel_size,
                cfg.norm,
                cfg.use_scf,
                cfg.scf_groups,
            )
            for lvl in levels
        )
        # Decoder step i (0 = the finest) gets an S2AM block when i < s2am_levels (iS2AM attends
        # in its finer decoder steps).
        s2am = cfg.s2am_levels if cfg.use_s2am else 0
        self.decoder = nn.ModuleList(
            UpBlock(
                widths[i + 1],
                widths[i],
                widths[i],
                cfg.norm,
                SpatialSeparatedAttention(2 * widths[i], cfg.norm, cfg.s2am_mid_k) if i < s2am else None,
            )
            for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], 3, 1)
        # On the CPU each KPB's kernel head runs fused with its modulation, band by band, in
        # training and inference (ops.head_modulation: bands sized for a CPU's cache); False,
        # and on GPUs (where the bands' many small kernels would cost more than the memory they
        # save): the kernels are predicted whole and then applied (the reference path, also the
        # one ONNX export traces).
        self.fused_heads = True

    def forward(self, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """composite [B, 3, H, W] and mask [B, 1, H, W] in [0, 1], any H, W.

        Returns ``pred * M + (1 - M) * composite`` (the paper's last equation), so pixels
        outside the mask are returned unchanged.
        """
        return self._run(composite, mask, None)

    def trace(self, composite: torch.Tensor, mask: torch.Tensor) -> Intermediates:
        """The same pass as ``forward``, keeping its intermediates (call it under ``torch.no_grad()``)."""
        record = Intermediates(size=tuple(composite.shape[-2:]))
        self._run(composite, mask, record)
        return record

    def _run(self, composite: torch.Tensor, mask: torch.Tensor, record: Intermediates | None) -> torch.Tensor:
        h, w = composite.shape[-2:]
        s = self.cfg.stride
        pad = (0, (-w) % s, 0, (-h) % s)
        x = F.pad((composite - self.mean) / self.std, pad, mode="replicate")
        m = F.pad(mask, pad)
        join = None
        if self.semantic is not None:
            semantic = self.semantic(composite, mask)
            join = functools.partial(self.semantic.join, semantic)
        feats = self.encoder(torch.cat([x, m - 0.5], dim=1), join)

        # kernels[j]: K of decoder level j, or (block, F_KPB) when the head runs fused
        fused = self.fused_heads and x.device.type == "cpu" and not torch.onnx.is_in_onnx_export()
        kernels = []
        if self.kpb:
            f_prev = feats[-1]
            if self.lre is not None:
                if record is not None:
                    f_prev, record.lre_attention = self.lre(f_prev, return_attention=True)
                    record.lre_grid, record.lre_stride = tuple(f_prev.shape[-2:]), s
                else:
                    f_prev = self.lre(f_prev)
            for j, block in enumerate(self.kpb):
                if fused:
                    f_prev, weights = block.refine(feats[-1 - j], f_prev)
                    kernels.append((block, f_prev))
                else:
                    k, f_prev, weights = block(feats[-1 - j], f_prev)
                    kernels.append(k)
                if record is not None:  # trace keeps every K whole; the output is forward's
                    stride = s >> j
                    k = block.kernels(f_prev) if fused else k
                    record.kernels.append(LevelKernels(k, stride))
                    if weights:
                        record.scf.append(SCFMaps(stride=stride, **weights))

        d = feats[-1]
        for j in range(len(feats)):
            if j:
                d = self.decoder[j - 1](d, feats[-1 - j], m)
            if record is not None:
                record.decoder.append(d)
            if j < len(kernels):
                d = kernels[j][0].modulate(d, kernels[j][1]) if fused else kernel_modulation(d, kernels[j])
        # The head predicts a correction to the composite (in [0, 1] units).
        pred = (composite + self.head(d)[..., :h, :w]).clamp(0, 1)
        out = pred * mask + (1 - mask) * composite
        if record is not None:
            record.encoder, record.prediction, record.output = feats, pred, out
        return out
