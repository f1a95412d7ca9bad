"""Model construction: one function turns a config into a ready model."""

from __future__ import annotations

from gknet.config import ModelConfig, Normalization
from gknet.models.gknet import GKNet, Intermediates
from gknet.models.memory import check_size
from gknet.models.semantic import load_pretrained

__all__ = ["GKNet", "Intermediates", "build_model"]


def build_model(
    cfg: ModelConfig, normalization: Normalization | None = None, pretrained: bool = True
) -> GKNet:
    """GKNet (or, with ``use_kpb=False``, the plain U-Net baseline) for ``cfg``.

    ``normalization``: the input statistics (default: ImageNet's, as in training).
    ``pretrained``: load the semantic encoder's ImageNet weights (``model.semantic``) from their
    installed package; GknetError if it is missing. A config whose weights would need more than
    MAX_STATE_BYTES is a GknetError (:func:`gknet.models.memory.check_size`).
    """
    check_size(cfg)
    model = GKNet(cfg, normalization)
    if pretrained and model.semantic is not None:
        load_pretrained(model.semantic.backbone)
    return model
