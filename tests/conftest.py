"""Shared test fixtures: a tiny model config and the location of ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gknet.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def tiny_config(**overrides) -> ModelConfig:
    """A GKNet small enough to run a forward pass in milliseconds."""
    base = dict(widths=(8, 16), lre_heads=2, scf_groups=4, kpb_levels=2)
    base.update(overrides)
    return ModelConfig(**base)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def require_shared(*parts: str) -> Path:
    """Path inside ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path
