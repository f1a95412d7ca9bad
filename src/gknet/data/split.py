"""The one train/validation split rule, shared by every training source.

A name is in validation when the seeded SHA-1 hash of ``f"{seed}:{name}"`` (its first 8
bytes read as a fraction of 2**64) is below ``val_fraction``: the same name always lands
on the same side, on every machine and Python run.
"""

from __future__ import annotations

import hashlib


def unit_hash(text: str) -> float:
    """Uniform number in [0, 1) from a string, identical on every machine and Python run."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") / 2.0**64


def is_validation(name: str, seed: int, val_fraction: float) -> bool:
    """The fixed split: ``name`` is held out when its seeded hash is below ``val_fraction``."""
    return unit_hash(f"{seed}:{name}") < val_fraction
