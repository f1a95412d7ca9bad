"""What a model needs in memory, estimated before anything is allocated: its weights, and one
network pass at a given resolution. Configs, the Harmonizer and release loading refuse what
cannot fit with one clear line instead of an allocator's failure minutes later."""

from __future__ import annotations

import functools

from gknet.config import MIN_RESOLUTION, ModelConfig
from gknet.errors import GknetError
from gknet.models.gknet import GKNet
from gknet.models.s2am import mid_channels
from gknet.models.semantic import pass_floats as semantic_pass_floats

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


# One network pass may hold at most this much memory (estimated by pass_bytes): beyond it a
# pass takes minutes on a CPU, or fails on a GPU, long after the user could have been told.
MAX_PASS_BYTES = 8e9


def pass_bytes(cfg, resolution: int) -> float:
    """Rough memory of one network pass at ``resolution`` for ModelConfig ``cfg``, in bytes.

    The LRE's attention scores (heads x tokens^2 per layer, as the plain attention kernel stores
    them) plus about eight float maps per feature channel at every level, the N x N kernels
    and their unfolded copies at the modulated levels, and the maps of each S2AM block: nine
    of its 2 x width channels (three channel attentions, the learning block's last conv and
    norm, four in the blend) and two of its learning block's width (first conv and norm), as
    counted in a pass (tests/test_harmonizer.py). For configs/gknet_paper.yaml that doubles
    the finest level's term. A semantic encoder adds what it allocates (``semantic.pass_floats``).
    """

    def side(stride: int) -> int:  # feature map side at this stride (the input is padded up)
        return -(-resolution // stride)

    total = 4.0 * cfg.lre_heads * side(cfg.stride) ** 4 if cfg.use_lre else 0.0
    modulated = range(len(cfg.widths) - cfg.kpb_levels, len(cfg.widths)) if cfg.use_kpb else ()
    attended = range(cfg.s2am_levels) if cfg.use_s2am else ()  # decoder step i runs at level i
    for level, width in enumerate(cfg.widths):
        per_pixel = width * (8 + (2 * cfg.kernel_size**2 if level in modulated else 0))
        if level in attended:
            per_pixel += 9 * 2 * width + 2 * mid_channels(2 * width, cfg.s2am_mid_k)
        total += 4.0 * per_pixel * side(2**level) ** 2
    if cfg.semantic != "none":
        total += 4.0 * semantic_pass_floats(cfg, resolution)
    return total


def check_resolution(cfg, resolution: int) -> None:
    """GknetError if a pass at ``resolution`` would need more than MAX_PASS_BYTES, naming the largest
    resolution that fits."""
    if pass_bytes(cfg, resolution) <= MAX_PASS_BYTES:
        return
    low, high = MIN_RESOLUTION, resolution  # pass_bytes grows with the resolution: bisect
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if pass_bytes(cfg, mid) <= MAX_PASS_BYTES else (low, mid)
    raise GknetError(
        f"resolution {resolution} is too large for this model: one network pass would need about "
        f"{pass_bytes(cfg, resolution) / 1e9:,.0f} GB (limit {MAX_PASS_BYTES / 1e9:g} GB); use at most {low}"
    )
