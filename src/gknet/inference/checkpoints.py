"""Training checkpoints as inference models: their stored config, their model, and their export
as release weights (``gknet export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gknet.config import Config, ConfigError, InferenceConfig, from_dict, to_dict
from gknet.errors import GknetError
from gknet.inference.release import check_finite, save_release
from gknet.io.atomic import check_writable, remove_stale_temporaries
from gknet.training.state import load_state, selection


def _stored_config(state: dict[str, Any], path: str | Path) -> Config:
    try:
        return from_dict(Config, state["config"], where=f"{Path(path).name}:config")
    except ConfigError as exc:
        raise GknetError(f"invalid config in {path}: {exc}") from None


def config_from_checkpoint(path: str | Path) -> tuple[Config, str | None]:
    """The resolved config (and config name) stored in a training checkpoint."""
    state = load_state(path)
    return _stored_config(state, path), state["config_name"]


def checkpoint_model(checkpoint: str | Path) -> tuple[torch.nn.Module, Config, dict, InferenceConfig]:
    """(model in eval mode, its Config, the loaded state, the inference settings of its release)
    of a training checkpoint: its weight average when the run kept one (train.ema_decay), which is
    what it validated."""
    from gknet.models import build_model

    state = load_state(checkpoint)
    cfg = _stored_config(state, checkpoint)
    weights = state["ema"]["model"] if state.get("ema") else state["model"]
    check_finite(weights, f"checkpoint {checkpoint}")
    model = build_model(cfg.model, pretrained=False)  # the checkpoint holds every weight
    model.load_state_dict(weights)
    inference = InferenceConfig(train_size=cfg.train.image_size, normalization=model.normalization)
    return model.eval(), cfg, state, inference


def export_checkpoint(checkpoint: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write a checkpoint's model as release weights (``save_release``) with its training metadata."""
    if Path(output).name in ("", ".", "..") or Path(output).is_dir():
        raise GknetError(f"output must name a file such as model.safetensors, got {str(output)!r}")
    output = Path(output).with_suffix(".safetensors")
    if not overwrite and (output.exists() or output.with_suffix(".json").exists()):
        raise GknetError(f"output exists: {output} (pass --overwrite to replace it)")
    check_writable(output)
    remove_stale_temporaries(output.parent, [output.name, output.with_suffix(".json").name])
    model, cfg, state, inference = checkpoint_model(checkpoint)
    select_on, best_score = selection(state)
    meta = {
        "step": state["step"],
        "epoch": state["epoch"],
        "weights": "moving average" if state.get("ema") else "last step",
        "val": state["val"],
        "real_val": state.get("real_val"),
        "best_score": best_score,
        "select_on": select_on,
        "config_name": state["config_name"],
        "train": to_dict(cfg.train),
        "data": to_dict(cfg.data),
    }
    return save_release(model, cfg.model, output, meta=meta, inference=inference)
