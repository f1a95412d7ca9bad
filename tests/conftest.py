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


@pytest.fixture
def readonly_dir(tmp_path) -> Path:
    """A folder in which no file can be created: a chmod 555 one, or /sys/kernel when running as
    root (root writes through permissions); skips where neither refuses."""

    def refuses(folder: Path) -> bool:
        try:
            (folder / "probe").touch()
        except OSError:
            return True
        (folder / "probe").unlink()
        return False

    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if refuses(folder):
        yield folder
        folder.chmod(0o755)
        return
    folder.chmod(0o755)
    system = Path("/sys/kernel")
    if system.is_dir() and refuses(system):
        yield system
        return
    pytest.skip("no folder here refuses to create files")


def ship_weights(monkeypatch, folder: Path, release: Path | None = None) -> Path:
    """Make ``folder`` gknet's shipped-weights folder; copy ``release`` (+ .json) in as the default."""
    import shutil

    from gknet.inference.release import DEFAULT_NAME

    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr("gknet.inference.release.WEIGHTS_DIR", folder)
    target = folder / f"{DEFAULT_NAME}.safetensors"
    if release is not None:
        shutil.copy(release, target)
        shutil.copy(release.with_suffix(".json"), target.with_suffix(".json"))
    return target
