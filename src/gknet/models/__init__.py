"""Model construction: one function turns a config into a ready model."""

from __future__ import annotations

from gknet.config import ModelConfig, Normalization
from gknet.models.gknet import GKNet, Intermediates

__all__ = ["GKNet", "Intermediates", "build_model"]


def build_model(cfg: ModelConfig, normalization: Normalization | None = None) -> GKNet:
    """GKNet (or, with ``use_kpb=False``, the plain U-Net baseline) for ``cfg``.

    ``normalization``: the input statistics (default: ImageNet's, as in training).
    """
    return GKNet(cfg, normalization)
