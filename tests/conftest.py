"""Shared test fixtures: a tiny model config and its release files, image and mask writers, and
the location of ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gknet.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def tiny_config(**overrides) -> ModelConfig:
    """A GKNet small enough to run a forward pass in milliseconds."""
    base = dict(widths=(8, 16), lre_heads=2, scf_groups=4, kpb_levels=2)
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(cfg: ModelConfig | None = None, seed: int = 0) -> torch.nn.Module:
    """A model of ``cfg`` (default: :func:`tiny_config`) with the weights that ``seed`` draws; the
    global random state is left as it was."""
    from gknet.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(cfg or tiny_config())


def load_script(name: str):
    """The module of ``scripts/NAME.py`` (scripts are not a package: loaded by path)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory) -> Path:
    """Release files (``tiny.safetensors`` + ``tiny.json``) of :func:`tiny_model`, written once per
    run. Shared by every test that asks for it: read it, or copy it before changing anything."""
    from gknet.inference.release import save_release

    folder = tmp_path_factory.mktemp("tiny_release")
    return save_release(tiny_model(), tiny_config(), folder / "tiny.safetensors")


def random_rgb(size=(60, 40), seed: int = 0) -> np.ndarray:
    """uint8 RGB noise of ``size`` (width, height) drawn from ``seed``: a composite with texture."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def box_mask(size=(60, 40)) -> np.ndarray:
    """A 0/255 mask of ``size`` (width, height) whose foreground is the centred rectangle spanning
    half of each side."""
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : height * 3 // 4, width // 4 : width * 3 // 4] = 255
    return mask


def write_image(path: Path, array: np.ndarray, **save) -> Path:
    """Save ``array`` (uint8, H x W or H x W x C) as the image file ``path``, creating its folders;
    ``save`` goes to Pillow's ``Image.save`` (e.g. ``quality``, ``exif``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def write_pair(folder: Path, size=(60, 40), seed: int = 0) -> tuple[Path, Path]:
    """``folder/comp.png`` (:func:`random_rgb`) and ``folder/mask.png`` (:func:`box_mask`)."""
    return (
        write_image(folder / "comp.png", random_rgb(size, seed)),
        write_image(folder / "mask.png", box_mask(size)),
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def require_shared(*parts: str) -> Path:
    """Path inside ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every test runs torch on one CPU thread: the suite's models are tiny, and on a busy 2-core
    machine threads that spin-wait for each other cost more than the work (measured: four model
    test files took 48 s on torch's 2 threads beside other jobs, 13 s on one). A test that needs
    more threads sets them itself and restores them."""
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
