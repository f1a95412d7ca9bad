"""The strength dial: how much of the model's change is applied.

``output = composite + strength * (harmonized - composite)``, clamped to [0, 1]: 0 returns the
composite, 1 the model's result, values up to MAX_STRENGTH push further in the same direction
(image editors' harmonization filters offer the same slider). It acts on full-resolution images,
after the network and the full-resolution transfer, so changing it never re-runs the network.
"""

from __future__ import annotations

import math

import torch

from gknet.errors import GknetError

MAX_STRENGTH = 1.5


def check_strength(strength) -> float:
    """``strength`` as a float, or GknetError unless it is a finite number in [0, MAX_STRENGTH]."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise GknetError(f"strength must be a number in [0, {MAX_STRENGTH:g}], got {strength!r}")
    if not (math.isfinite(strength) and 0 <= strength <= MAX_STRENGTH):
        raise GknetError(
            f"strength must be in [0, {MAX_STRENGTH:g}] (1 = the model's result), got {strength!r}"
        )
    return float(strength)


def apply_strength(
    composite: torch.Tensor, harmonized: torch.Tensor, mask: torch.Tensor, strength: float
) -> torch.Tensor:
    """``composite + strength * (harmonized - composite)`` in [0, 1] where ``mask`` > 0; elsewhere
    the composite bit for bit. Strength 0 and 1 return the composite and ``harmonized`` themselves."""
    strength = check_strength(strength)
    if strength == 1:
        return harmonized
    if strength == 0:
        return composite.clone()
    scaled = (composite + strength * (harmonized - composite)).clamp(0, 1)
    return torch.where(mask > 0, scaled, composite)
