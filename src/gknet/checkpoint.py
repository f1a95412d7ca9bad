"""Release weights: safetensors tensors + a JSON file with the model config and metadata.

``save_release(model, cfg, "m.safetensors")`` writes ``m.safetensors`` and ``m.json``;
``load_release`` rebuilds the model from the JSON config and loads the tensors strictly,
turning every failure into one clear GknetError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gknet.atomic import atomic_path, write_atomic
from gknet.config import ConfigError, ModelConfig, from_dict, to_dict
from gknet.errors import GknetError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "gknet_small.safetensors"
FORMAT = "gknet-release-1"


def weights_path(weights: str | Path) -> Path:
    """The release file a ``--weights`` value names: a path, or ``"default"`` for the shipped one."""
    return DEFAULT_WEIGHTS if str(weights) == "default" else Path(weights)


def save_release(
    model: torch.nn.Module, cfg: ModelConfig, path: str | Path, meta: dict | None = None
) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar atomically."""
    path = Path(path).with_suffix(".safetensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info = {"format": FORMAT, "model": to_dict(cfg), "meta": meta or {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": FORMAT})
    write_atomic(path.with_suffix(".json"), json.dumps(info, indent=2))
    return path


def read_release_info(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a release file (format, model config, metadata)."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not path.is_file():
        raise GknetError(f"weights file not found: {path}")
    if not sidecar.is_file():
        raise GknetError(f"config file missing next to the weights: {sidecar}")
    try:
        info = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GknetError(f"{sidecar} is not valid JSON: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or "model" not in info:
        raise GknetError(f"{sidecar} is not a gknet release config (expected format {FORMAT!r})")
    return info


def load_release(path: str | Path, map_location: str | torch.device = "cpu"):
    """Load release weights -> (model in eval mode, ModelConfig, meta dict)."""
    from gknet.models import build_model

    path = Path(path)
    info = read_release_info(path)
    try:
        cfg = from_dict(ModelConfig, info["model"], where=f"{path.with_suffix('.json').name}:model")
    except ConfigError as exc:
        raise GknetError(f"invalid model config for {path}: {exc}") from None
    try:
        tensors = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise GknetError(f"cannot read weights {path}: {exc}") from None
    model = build_model(cfg)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise GknetError(f"weights {path} do not match their config: {first}") from None
    if missing or unexpected:
        raise GknetError(
            f"weights {path} do not match their config: missing {len(missing)} tensors "
            f"({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}), unexpected {len(unexpected)} "
            f"({', '.join(unexpected[:3])}{'...' if len(unexpected) > 3 else ''})"
        )
    return model.to(map_location).eval(), cfg, info.get("meta", {})
