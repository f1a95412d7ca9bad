"""Model size and cost: parameters per component and multiply-accumulates at a given size."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop_count

from gknet.config import ModelConfig
from gknet.models import build_model

# Scaled dot-product attention on the CPU runs as this op, which torch's FLOP counter does not
# list (it counts the CUDA kernels only): without it the LRE's attention, quadratic in the
# tokens, would be missing from the count (0.54 GMACs of gknet_small at 256 px, 137 at 1024).
CPU_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


COMPONENTS = {
    "encoder": "encoder",
    "semantic": "semantic",
    "lre": "lre",
    "kpb_scf": "kpb",
    "decoder": ("decoder", "head"),
}


def count_params(model: torch.nn.Module) -> dict[str, int]:
    """Parameter counts per component (encoder, semantic, lre, kpb_scf, decoder), in total and
    trainable (all but a frozen pretrained backbone)."""
    counts = {name: 0 for name in COMPONENTS}
    for pname, p in model.named_parameters():
        top = pname.split(".", 1)[0]
        for name, prefixes in COMPONENTS.items():
            if top in ((prefixes,) if isinstance(prefixes, str) else prefixes):
                counts[name] += p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def modulation_macs(cfg: ModelConfig, size: int) -> int:
    """MACs of the kernel modulations: N^2 per feature value at every modulated level."""
    if not cfg.use_kpb:
        return 0
    levels = [len(cfg.widths) - 1 - j for j in range(cfg.kpb_levels)]
    taps = cfg.kernel_size**2
    return sum(cfg.widths[lvl] * taps * (size // 2**lvl) ** 2 for lvl in levels)


def count_macs(model: torch.nn.Module, size: int = 256) -> int:
    """Multiply-accumulates of one forward pass on a size x size image.

    Convolutions, linear layers and attention are counted by torch's FLOP counter
    (FLOPs / 2); the kernel modulation is added analytically, since it is built from
    elementwise ops that the counter ignores. ``size`` must be a multiple of the stride.
    """
    model = model.eval()
    x = torch.rand(1, 3, size, size)
    m = torch.zeros(1, 1, size, size)
    extra = {} if CPU_ATTENTION in flop_registry else {CPU_ATTENTION: _attention_flops}
    counter = FlopCounterMode(display=False, custom_mapping=extra)
    with torch.no_grad(), counter:
        model(x, m)
    return counter.get_total_flops() // 2 + modulation_macs(model.cfg, size)


def model_info(cfg: ModelConfig, size: int = 256) -> dict:
    """``{"params": total, "trainable": params, "macs_256": MACs, "components": {name: params}}``."""
    model = build_model(cfg, pretrained=False)  # sizes and costs do not depend on the weights
    params = count_params(model)
    total, trainable = params.pop("total"), params.pop("trainable")
    return {
        "params": total,
        "trainable": trainable,
        f"macs_{size}": count_macs(model, size),
        "components": params,
    }
