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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny forward passes: on a busy 2-core machine, syncing threads costs more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
