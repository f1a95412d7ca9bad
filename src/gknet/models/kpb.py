"""Kernel Prediction Block (paper Eq. 1): K^l, F_KPB^l = KPBlock(F_E^l, F_KPB^{l-1})."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gknet.models.ops import head_modulation
from gknet.models.scf import SCF, ConcatFusion
from gknet.models.unet import norm_layer


class KPBlock(nn.Module):
    """Fuse (SCF or concat+conv), refine (conv-norm-ReLU) -> F_KPB^l, predict K^l = Conv(F_KPB^l).

    The kernel head is a 1x1 conv to C * N^2 maps, reshaped to [B, C, N^2, H, W]; its output
    is added to the identity kernel (1 at the window centre), so training learns the
    deviation from the identity. The identity is folded into the head's bias (a constant added
    to every pixel of the centre maps), which saves a pass over the C * N^2 maps, the largest
    tensor of the block. At initialisation the head's bias is zero and its default
    weights are scaled by 0.1: an untrained block predicts the identity plus a small
    feature-dependent term, 0.1 x (default 1x1 conv of F_KPB), not an exact pass-through
    (measured on gknet_small at init on a random 256 px image: mean |K - I| 0.0006-0.0027
    per level, at most 0.016). The modulation starts close to the identity, and the head's
    weights get gradients from the first step (zero weights would also start exactly at it).
    """

    def __init__(
        self,
        channels: int,
        prev_channels: int,
        out_channels: int,
        kernel_size: int,
        norm: str,
        use_scf: bool,
        scf_groups: int,
    ):
        super().__init__()
        self.fusion = (
            SCF(channels, prev_channels, scf_groups, kernel_size)
            if use_scf
            else ConcatFusion(channels, prev_channels)
        )
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            norm_layer(norm, channels),
            nn.ReLU(inplace=True),
        )
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.taps = kernel_size * kernel_size
        self.head = nn.Conv2d(channels, out_channels * self.taps, 1)
        with torch.no_grad():  # start near (not at) the identity kernel
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
        identity = torch.zeros(out_channels, self.taps)
        identity[:, self.taps // 2] = 1.0  # head channel c * N^2 + k is tap k of channel c
        self.register_buffer("identity", identity.flatten(), persistent=False)

    def forward(self, f_e: torch.Tensor, f_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(K^l [B, C, N*N, H, W], F_KPB^l, the fusion's attention weights)."""
        f_kpb, weights = self.refine(f_e, f_prev)
        return self.kernels(f_kpb), f_kpb, weights

    def refine(self, f_e: torch.Tensor, f_prev: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """F_KPB^l and the fusion's attention weights (the kernels not yet predicted)."""
        fused, weights = self.fusion(f_e, f_prev)
        return self.body(fused), weights

    def kernels(self, f_kpb: torch.Tensor) -> torch.Tensor:
        b, _, h, w = f_kpb.shape
        kernels = F.conv2d(f_kpb, self.head.weight, self.head.bias + self.identity)
        return kernels.view(b, self.out_channels, self.taps, h, w)

    def modulate(self, features: torch.Tensor, f_kpb: torch.Tensor) -> torch.Tensor:
        """``kernel_modulation(features, self.kernels(f_kpb))`` without holding the kernels
        (:func:`~gknet.models.ops.head_modulation`)."""
        bias = self.head.bias + self.identity
        return head_modulation(features, f_kpb, self.head.weight, bias, self.kernel_size)
