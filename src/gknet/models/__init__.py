"""Model construction: one function turns a config into a ready model."""

from __future__ import annotations

from pathlib import Path

from gknet.config import ModelConfig, Normalization, load_config
from gknet.models.gknet import GKNet, Intermediates
from gknet.models.semantic import load_pretrained

__all__ = ["GKNet", "Intermediates", "build_model", "model_from_config_file"]


def build_model(
    cfg: ModelConfig, normalization: Normalization | None = None, pretrained: bool = True
) -> GKNet:
    """GKNet (or, with ``use_kpb=False``, the plain U-Net baseline) for ``cfg``.

    ``normalization``: the input statistics (default: ImageNet's, as in training).
    ``pretrained``: load the semantic encoder's ImageNet weights (``model.semantic``) from their
    installed package; GknetError if it is missing.
    """
    model = GKNet(cfg, normalization)
    if pretrained and model.semantic is not None:
        load_pretrained(model.semantic.backbone)
    return model


def model_from_config_file(path: str | Path) -> GKNet:
    """Randomly initialised model from the ``model`` section of a YAML config file."""
    return build_model(load_config(path).model)
