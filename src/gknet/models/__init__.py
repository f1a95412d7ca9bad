"""Model construction: one function turns a config into a ready model."""

from __future__ import annotations

import functools
from pathlib import Path

from gknet.config import ModelConfig, Normalization, load_config
from gknet.errors import GknetError
from gknet.models.gknet import GKNet, Intermediates

__all__ = ["GKNet", "Intermediates", "build_model", "model_from_config_file", "state_bytes"]

# A model whose weights alone exceed this is a typo (widths: [100000, ...]), not a model to build:
# refused before its tensors are allocated. configs/gknet_paper.yaml's are 0.036 GB.
MAX_STATE_BYTES = 16e9


@functools.lru_cache(maxsize=64)  # a count on the meta device takes 10-30 ms; configs repeat
def state_bytes(cfg: ModelConfig) -> int:
    """Bytes of the model's state dict (weights and buffers), counted without allocating them."""
    import torch

    with torch.device("meta"):
        return sum(t.numel() * t.element_size() for t in GKNet(cfg).state_dict().values())


def build_model(cfg: ModelConfig, normalization: Normalization | None = None) -> GKNet:
    """GKNet (or, with ``use_kpb=False``, the plain U-Net baseline) for ``cfg``.

    ``normalization``: the input statistics (default: ImageNet's, as in training). A config
    whose weights would need more than MAX_STATE_BYTES is a GknetError.
    """
    needed = state_bytes(cfg)
    if needed > MAX_STATE_BYTES:
        raise GknetError(
            f"model.widths {list(cfg.widths)} ask for {needed / 1e9:,.0f} GB of weights "
            f"(limit {MAX_STATE_BYTES / 1e9:g} GB): use smaller widths"
        )
    return GKNet(cfg, normalization)


def model_from_config_file(path: str | Path) -> GKNet:
    """Randomly initialised model from the ``model`` section of a YAML config file."""
    return build_model(load_config(path).model)
