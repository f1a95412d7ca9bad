"""Data files found beside the photos folder (``../shared/data/<name>/...``), and reading them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gknet.errors import GknetError


def resolve_beside(root: str | Path, default: Path, choice: str | Path | bool, what: str) -> Path | None:
    """``choice`` True: ``root / default`` when it exists, else None (the caller does without);
    False: None; a path: that file, or GknetError naming ``what`` when it is missing."""
    if choice is False:
        return None
    path = Path(root) / default if choice is True else Path(choice)
    if path.is_file():
        return path
    if choice is True:
        return None
    raise GknetError(f"{what} not found: {choice}")


def load_arrays(path: str | Path, keys: Sequence[str], what: str) -> list[np.ndarray]:
    """The arrays ``keys`` of the .npz file at ``path``, or GknetError saying why not."""
    try:
        with np.load(path) as data:
            return [data[key] for key in keys]
    except (OSError, KeyError, ValueError) as exc:
        raise GknetError(f"cannot read {what} {path}: {exc}") from exc
