"""Model construction: one function turns a config into a ready model."""

from __future__ import annotations

import functools

from gknet.config import ModelConfig, Normalization
from gknet.errors import GknetError
from gknet.models.gknet import GKNet, Intermediates
from gknet.models.semantic import load_pretrained

__all__ = ["GKNet", "Intermediates", "build_model", "check_size", "state_bytes"]

# A model whose weights alone exceed this is a typo (widths: [100000, ...]), not a model to build:
# refused before its tensors are allocated. configs/gknet_paper.yaml's are 0.036 GB.
MAX_STATE_BYTES = 16e9


def rough_state_bytes(cfg: ModelConfig) -> float:
    """A quick estimate of :func:`state_bytes` (3x3 convolutions at every level, widened by the
    kernel prediction and S2AM, plus the LRE's layers): 51 MB for gknet_paper's 36."""
    dim = cfg.lre_dim or cfg.widths[-1]
    convs = 9 * sum(w * w for w in cfg.widths) * (2 + cfg.kernel_size**2 + 2 * cfg.s2am_mid_k)
    return 4.0 * (convs + cfg.lre_layers * (4 + 2 * cfg.lre_mlp_ratio) * dim * dim)


@functools.lru_cache(maxsize=64)
def state_bytes(cfg: ModelConfig) -> int:
    """Bytes of the model's state dict (weights and buffers), counted on the meta device without
    allocating them (the first count imports torch's decompositions: about 1.5 s)."""
    import torch

    with torch.device("meta"):
        return sum(t.numel() * t.element_size() for t in GKNet(cfg).state_dict().values())


def check_size(cfg: ModelConfig) -> None:
    """GknetError if the weights of ``cfg`` would need more than MAX_STATE_BYTES; counted exactly
    only when the estimate comes within a factor 8 of the limit."""
    if rough_state_bytes(cfg) * 8 <= MAX_STATE_BYTES:
        return
    needed = state_bytes(cfg)
    if needed > MAX_STATE_BYTES:
        raise GknetError(
            f"model.widths {list(cfg.widths)} ask for {needed / 1e9:,.0f} GB of weights "
            f"(limit {MAX_STATE_BYTES / 1e9:g} GB): use smaller widths"
        )


def build_model(
    cfg: ModelConfig, normalization: Normalization | None = None, pretrained: bool = True
) -> GKNet:
    """GKNet (or, with ``use_kpb=False``, the plain U-Net baseline) for ``cfg``.

    ``normalization``: the input statistics (default: ImageNet's, as in training).
    ``pretrained``: load the semantic encoder's ImageNet weights (``model.semantic``) from their
    installed package; GknetError if it is missing. A config whose weights would need more than
    MAX_STATE_BYTES is a GknetError (:func:`check_size`).
    """
    check_size(cfg)
    model = GKNet(cfg, normalization)
    if pretrained and model.semantic is not None:
        load_pretrained(model.semantic.backbone)
    return model
