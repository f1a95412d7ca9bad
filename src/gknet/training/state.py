"""Resumable training state: one ``torch.save``'d dict per checkpoint, written atomically.

A state holds everything needed to continue a run exactly where it stopped: model,
optimiser, scheduler and grad-scaler state dicts, the Python / NumPy / torch RNG states,
the epoch, the number of batches of that epoch already consumed, the optimiser step, the
best validation fMSE and the resolved config. Only plain containers, numbers, strings and
tensors are stored, so states load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gknet.errors import GknetError
from gknet.io.atomic import atomic_path

STATE_VERSION = 1


def rng_states() -> dict[str, Any]:
    """The global RNG states of Python, NumPy and torch (CPU and every CUDA device)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`."""
    random.setstate(_tuples(states["python"]))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def _tuples(value: Any) -> Any:
    """random.setstate needs tuples; a loaded state may hand lists back."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temporary file and ``os.replace``.

    A reader (or a run killed mid-write) never sees a half-written checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, durable=True) as tmp:
        torch.save({"version": STATE_VERSION, **state}, tmp)
    return path


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a state written by :func:`save_state`; GknetError if missing or not a gknet state."""
    path = Path(path)
    if not path.is_file():
        raise GknetError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before it refuses them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in reason:
            reason = "it holds Python objects other than tensors, which are never unpickled"
        raise GknetError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "model" not in state:
        raise GknetError(f"{path} is not a gknet training checkpoint (version {STATE_VERSION})")
    check_state(state, path)
    return state


def selection(state: dict[str, Any]) -> tuple[str, float | None]:
    """(what chose the best checkpoint, its best score) of a training state; states written
    before real-composite validation kept only ``best_fmse`` (chosen by validation fMSE)."""
    best = state["best_score"] if "best_score" in state else state["best_fmse"]
    return state.get("select_on", "val.fmse"), best


# What a resumed run reads from a state with state[key] (best_score: best_fmse in older states).
REQUIRED = ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "batch_in_epoch", "step")
REQUIRED += ("val", "elapsed", "config", "config_name")
COUNTERS = ("epoch", "batch_in_epoch", "step")


def check_state(state: dict[str, Any], path: str | Path) -> None:
    """GknetError unless ``state`` can be resumed and exported as it stands: every key a run reads,
    a config that parses, counters that are integers >= 0, the model's (and its weight average's)
    tensors with the config's names, shapes and dtypes, and finite numbers in them and in the
    optimiser's state. Checked as release weights are, where the file is read."""
    from gknet.config import Config, ConfigError, from_dict
    from gknet.inference.release import check_finite

    bad = f"{path} is not a usable gknet training checkpoint"
    missing = [key for key in REQUIRED if key not in state]
    if "best_score" not in state and "best_fmse" not in state:
        missing.append("best_score")
    if missing:
        raise GknetError(f"{bad}: it lacks {', '.join(missing)}")
    for key in COUNTERS:
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GknetError(f"{bad}: {key} must be an integer >= 0, got {_short(value)}")
    for key in ("elapsed", "best_score" if "best_score" in state else "best_fmse"):
        value = state[key]
        if key != "elapsed" and value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value >= 0):
            raise GknetError(f"{bad}: {key} must be a finite number >= 0, got {_short(value)}")
    if state["config_name"] is not None and not isinstance(state["config_name"], str):
        raise GknetError(f"{bad}: config_name must be text, got {_short(state['config_name'])}")
    try:
        cfg = from_dict(Config, state["config"], where=f"{Path(path).name}:config")
    except ConfigError as exc:
        raise GknetError(f"invalid config in {path}: {exc}") from None
    expected = _expected_tensors(cfg)
    average = state.get("ema")
    models = {"model": state["model"]}
    if average is not None:
        models["ema"] = average.get("model") if isinstance(average, dict) else None
    for where, tensors in models.items():
        _check_tensors(tensors, expected, f"{bad}: {where}")
        check_finite(tensors, f"checkpoint {path}")
    tensors = dict(_tensors(state["optimizer"], "optimizer"))
    check_finite(tensors, f"checkpoint {path}")
    if not _is_rng_state(state["rng"]):
        raise GknetError(f"{bad}: rng does not hold the random generators' states")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _expected_tensors(cfg) -> dict[str, torch.Tensor]:
    """The model's state dict for ``cfg``, on the meta device (names, shapes, dtypes; no memory)."""
    from gknet.models import GKNet

    with torch.device("meta"):
        return GKNet(cfg.model).state_dict()


def _check_tensors(tensors: Any, expected: dict[str, torch.Tensor], where: str) -> None:
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise GknetError(f"{where} is not a mapping of names to tensors")
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise GknetError(
            f"{where} does not match its config: missing {', '.join(missing[:3]) or 'none'}, "
            f"unexpected {', '.join(unexpected[:3]) or 'none'}"
        )
    for name, tensor in tensors.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise GknetError(
                f"{where}: {name} is {tensor.dtype} {list(tensor.shape)}, the config's model has "
                f"{want.dtype} {list(want.shape)}"
            )


def _tensors(value: Any, name: str):
    """(dotted name, tensor) of every tensor in nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{name}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{name}.{i}")


def _is_rng_state(states: Any) -> bool:
    """The layout :func:`rng_states` writes."""
    if not isinstance(states, dict) or not {"python", "numpy", "torch", "cuda"} <= set(states):
        return False
    numpy = states["numpy"]
    return (
        isinstance(states["torch"], torch.Tensor)
        and states["torch"].dtype == torch.uint8
        and isinstance(states["python"], (list, tuple))
        and isinstance(numpy, (list, tuple))
        and len(numpy) == 5
        and isinstance(numpy[1], torch.Tensor)
        and isinstance(states["cuda"], (list, tuple))
    )
