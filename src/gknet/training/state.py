"""Resumable training state: one ``torch.save``'d dict per checkpoint, written atomically.

A state holds everything needed to continue a run exactly where it stopped: model,
optimiser, scheduler and grad-scaler state dicts, the Python / NumPy / torch RNG states,
the epoch, the number of batches of that epoch already consumed, the optimiser step, the
best validation fMSE and the resolved config. Only plain containers, numbers, strings and
tensors are stored, so states load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

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
    return state


def selection(state: dict[str, Any]) -> tuple[str, float | None]:
    """(what chose the best checkpoint, its best score) of a training state; states written
    before real-composite validation kept only ``best_fmse`` (chosen by validation fMSE)."""
    best = state["best_score"] if "best_score" in state else state["best_fmse"]
    return state.get("select_on", "val.fmse"), best
