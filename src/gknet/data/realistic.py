"""Real composites that people judged realistic, as training items that must stay unchanged.

Synthetic harmonious items (``data.harmonious_share``) teach the model to leave alone what the
generator made; real composites labelled ``realistic`` (Lalonde & Efros's layout:
``composites/NAME.jpg``, ``masks/NAME.png``, ``labels.csv``; see
:mod:`gknet.evaluation.realism`) show it real objects in real scenes that need no correction:
their target is the composite itself. Half of them (a fixed hash split of the names,
:func:`is_held_out`) are never trained on, so the realism check keeps unseen realistic
composites to measure on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from gknet.data.augment import random_resized_crop_flip
from gknet.data.samples import Sample, triplet_item
from gknet.data.split import is_validation
from gknet.errors import GknetError
from gknet.evaluation.realism import read_labels

HELD_OUT_SEED, HELD_OUT_FRACTION = 0, 0.5


def is_held_out(name: str) -> bool:
    """The realistic composites kept for the realism check, never trained on."""
    return is_validation(name, HELD_OUT_SEED, HELD_OUT_FRACTION)


class RealisticComposites(Dataset):
    """The training half of the ``realistic`` composites under ``root``: items whose target is
    their composite, random-resized-cropped and flipped like the other training items."""

    def __init__(self, root: str | Path, image_size: int, crop_scale=(0.5, 1.0), hflip=True):
        self.root = Path(root).expanduser()
        labels = read_labels(self.root)
        self.names = sorted(n for n, label in labels.items() if label == "realistic" and not is_held_out(n))
        if not self.names:
            raise GknetError(f"{self.root} has no realistic composites outside the held-out half")
        self.image_size, self.crop_scale, self.hflip = image_size, crop_scale, hflip

    def __len__(self) -> int:
        return len(self.names)

    def item(self, index: int, rng: np.random.Generator) -> dict:
        name = self.names[index]
        sample = Sample(
            name, "realistic", self.root / "composites" / f"{name}.jpg", self.root / "masks" / f"{name}.png"
        )
        composite, mask, _ = sample.load()
        composite, mask = random_resized_crop_flip(
            [composite, mask], self.image_size, self.crop_scale, self.hflip, rng
        )
        return triplet_item([composite, mask, composite], name)


class WithRealistic(Dataset):
    """``base``'s items, each replaced with probability ``share`` by a realistic composite; the
    draw depends only on ``(seed, epoch, index)``, as every training item does."""

    def __init__(self, base: Dataset, realistic: RealisticComposites, share: float, seed: int = 0):
        self.base, self.realistic, self.share, self.seed = base, realistic, share, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        if rng.random() >= self.share:
            return self.base[index]
        return self.realistic.item(int(rng.integers(len(self.realistic))), rng)
