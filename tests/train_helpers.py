"""Helpers shared by the training tests: a folder of real triplet files and tiny configs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gknet.config import Config, DataConfig, TrainConfig
from tests.conftest import tiny_config

GKNET = str(Path(sys.executable).with_name("gknet"))


def write_triplet_folder(root: Path, count: int = 16, size: int = 40, seed: int = 0) -> Path:
    """``root/{composites,masks,targets}``: smooth random photos whose square object is recoloured."""
    rng = np.random.default_rng(seed)
    for sub in ("composites", "masks", "targets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        base = rng.uniform(0.2, 0.8, 3)
        slope = rng.uniform(-0.3, 0.3, (2, 3))
        target = np.clip(base + yy[..., None] * slope[0] + xx[..., None] * slope[1], 0, 1)
        mask = np.zeros((size, size), bool)
        top, left = rng.integers(2, size // 2, 2)
        mask[top : top + size // 3, left : left + size // 3] = True
        composite = target.copy()
        composite[mask] = np.clip(composite[mask] * rng.uniform(0.5, 1.5, 3), 0, 1)
        name = f"img{i:03d}"
        Image.fromarray((target * 255).round().astype(np.uint8)).save(root / "targets" / f"{name}.png")
        Image.fromarray((composite * 255).round().astype(np.uint8)).save(root / "composites" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    return root


def tiny_train_config(data_root: Path, model_overrides: dict | None = None, **train) -> Config:
    """A tiny model on 32x32 crops of a triplet folder, one CPU thread (bit-reproducible)."""
    base = dict(image_size=32, batch_size=2, epochs=100, lr=1e-3, log_every=1, threads=1)
    base.update(train)
    return Config(
        model=tiny_config(**(model_overrides or {})),
        train=TrainConfig(**base),
        data=DataConfig(source="folder", root=str(data_root), val_fraction=0.25),
    )


def checkpoint_tensors(state: dict) -> dict[str, torch.Tensor]:
    """Every model parameter/buffer, weight-average tensor and optimiser state tensor of a training
    state, by name."""
    tensors = {f"model.{k}": v for k, v in state["model"].items()}
    if state.get("ema"):
        tensors |= {f"ema.{k}": v for k, v in state["ema"]["model"].items()}
    for pid, slots in state["optimizer"]["state"].items():
        for key, value in slots.items():
            tensors[f"optimizer.{pid}.{key}"] = torch.as_tensor(value)
    return tensors


def write_iharmony4_tree(root: Path, subsets: dict[str, int], size: int = 40, seed: int = 1) -> Path:
    """An iHarmony4-layout test split (``<Subset>/{composite_images,masks,real_images}``) of
    recoloured-square triplets, ``subsets[name]`` images per subset."""
    for k, (subset, count) in enumerate(subsets.items()):
        flat = write_triplet_folder(root / f".flat_{subset}", count=count, size=size, seed=seed + k)
        names = []
        for i in range(count):
            photo = f"{subset[:2].lower()}{i}"
            for folder, target_name in (
                ("composites", f"composite_images/{photo}_1_1.png"),
                ("masks", f"masks/{photo}_1.png"),
                ("targets", f"real_images/{photo}.png"),
            ):
                dst = root / subset / target_name
                dst.parent.mkdir(parents=True, exist_ok=True)
                (flat / folder / f"img{i:03d}.png").rename(dst)
            names.append(f"{photo}_1_1.png")
        (root / f"{subset}_test.txt").write_text("\n".join(names) + "\n")
    return root
