"""The one network pass behind the pictures, and what the pictures read from it.

:func:`capture` runs the composite through :meth:`gknet.inference.harmonizer.Harmonizer.trace_tensor`:
the harmonized picture and every intermediate come from the same pass that ``gknet
harmonize`` makes for an image of the picture's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gknet.errors import GknetError
from gknet.inference.fullres import resize
from gknet.io.images import mask_image, rgb_image, to_tensor_image
from gknet.models import Intermediates

MAX_LRE_TOKENS = 4096  # attention matrices are tokens^2 per head and layer: 4096 tokens ~ 64 MB each


@dataclass
class Capture:
    """The forward pass behind the pictures.

    As in :class:`gknet.inference.harmonizer.Harmonizer`, the network sees the whole image resized to
    ``net_size`` x ``net_size``; the pictures are drawn at ``size``, the image's own aspect
    ratio with the longer side = ``net_size``. ``composite``, ``mask`` and ``output`` (the
    Harmonizer's result) are [1, C, h, w] at that display size; ``inter`` holds the
    network's intermediates at ``net_size``.
    """

    composite: torch.Tensor
    mask: torch.Tensor
    output: torch.Tensor
    inter: Intermediates
    net_size: int
    image_size: tuple[int, int]  # (width, height) of the input

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.composite.shape[-2:])

    def valid_cells(self, stride: int) -> int:
        """Rows (= columns) of a stride-``stride`` map that cover the unpadded network input."""
        return math.ceil(self.net_size / stride)

    def to_network(self, point: tuple[float, float]) -> tuple[float, float]:
        """Input pixel (x, y) -> continuous network coordinates (pixel i spans [i, i + 1))."""
        width, height = self.image_size
        return (point[0] + 0.5) * self.net_size / width, (point[1] + 0.5) * self.net_size / height

    def to_display(self, point: tuple[float, float]) -> tuple[float, float]:
        """Input pixel (x, y) -> display pixel coordinates (pixel centres on integers, as imshow)."""
        (h, w), (width, height) = self.size, self.image_size
        return (point[0] + 0.5) * w / width - 0.5, (point[1] + 0.5) * h / height - 0.5

    def to_pixels(self, grid: torch.Tensor, stride: int, mode: str) -> np.ndarray:
        """[gh, gw] map on a stride-``stride`` grid of the network input -> [h, w] over the picture."""
        up = F.interpolate(grid[None, None].float().cpu(), scale_factor=stride, mode=mode)
        up = up[..., : self.net_size, : self.net_size]
        return F.interpolate(up, size=self.size, mode=mode)[0, 0].numpy()


def capture(harmonizer, composite: Image.Image, mask: Image.Image) -> Capture:
    """Harmonize with ``harmonizer`` at picture size, keeping the intermediates of its network pass.

    The inputs are first reduced to the picture size (longer side = the harmonizer's
    resolution), which is then treated exactly as ``gknet harmonize`` treats an image of
    that size.
    """
    resolution = harmonizer.resolution
    comp, alpha = to_tensor_image(rgb_image(composite))[None], to_tensor_image(mask_image(mask))[None]
    if comp.shape[-2:] != alpha.shape[-2:]:
        (ch, cw), (mh, mw) = comp.shape[-2:], alpha.shape[-2:]
        raise GknetError(f"composite is {cw}x{ch} but mask is {mw}x{mh}")
    if alpha.max() <= 0:
        raise GknetError("the mask is empty: there is no foreground to explain")
    cfg = harmonizer.model.cfg
    tokens = math.ceil(resolution / cfg.stride) ** 2
    if cfg.use_lre and tokens > MAX_LRE_TOKENS:
        raise GknetError(
            f"resolution {resolution} gives {tokens} LRE tokens; the attention maps need at most "
            f"{MAX_LRE_TOKENS} (lower --resolution)"
        )
    height, width = comp.shape[-2:]
    scale = resolution / max(width, height)
    display = (max(2, round(height * scale)), max(2, round(width * scale)))  # contours need 2 x 2
    comp, alpha = resize(comp, display), resize(alpha, display).clamp(0, 1)
    output, inter = harmonizer.trace_tensor(comp, alpha)
    return Capture(comp, alpha, output, inter, resolution, (width, height))


def point_token(cap: Capture, point_net: tuple[float, float]) -> int:
    """Row-major index of the LRE token whose cell holds ``point_net`` (see ``Capture.to_network``)."""
    (gh, gw), stride = cap.inter.lre_grid, cap.inter.lre_stride
    col = min(max(int(point_net[0] // stride), 0), gw - 1)
    row = min(max(int(point_net[1] // stride), 0), gh - 1)
    return row * gw + col


def lre_attention(cap: Capture, point: tuple[int, int]) -> torch.Tensor:
    """Attention of input pixel ``point``'s token to every token: [layers, heads, gh, gw] (sums to 1)."""
    gh, gw = cap.inter.lre_grid
    idx = point_token(cap, cap.to_network(point))
    return torch.stack([att[0, :, idx].view(-1, gh, gw) for att in cap.inter.lre_attention]).cpu()


def scf_features(cap: Capture, level: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Conv(F_E^l) [C, gh, gw] (padded grid) at paper level ``level``, its weights S_E [C], its stride."""
    scf = cap.inter.scf[level - 1]
    return scf.features[0].cpu(), scf.s_e[0].cpu(), scf.stride
