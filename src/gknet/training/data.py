"""Training and validation datasets for a ``DataConfig``.

Every source yields the same items, ready for the default collate:
``{"composite": [3, S, S], "mask": [1, S, S], "target": [3, S, S], "name": str}``, floats in
[0, 1], masks binary (> 50%). Training items are random-resized-cropped and flipped with a NumPy
generator seeded by ``(seed, epoch, index)``, so an item depends only on those three
numbers (resuming mid-epoch and DataLoader workers see the same data); validation items
are plainly resized and never change.

Sources (``data.source``):

- ``synthetic``: :class:`gknet.data.synthetic.SyntheticComposites` over photos + masks
  under ``data.root``; it has its own fixed train/validation split (by source picture when the
  photos come with a categories.csv).
- ``iharmony4``: the benchmark's *train* lists of ``data.subsets`` under ``data.root``;
  ``data.val_fraction`` of them (chosen by :func:`gknet.data.split.is_validation` on
  ``subset/name``, the rule of the synthetic photos) is held out for validation, so the
  benchmark's test split stays untouched.
- ``folder``: ``data.root/{composites,masks,targets}`` paired by file stem, split like
  iHarmony4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from gknet.config import DataConfig, TrainConfig
from gknet.data.augment import random_resized_crop_flip, resize_triplet
from gknet.data.samples import SampleDataset, triplet_item
from gknet.data.split import is_validation
from gknet.errors import GknetError


class TripletDataset(Dataset):
    """Selected samples of a SampleDataset (iHarmony4, folder) as training or validation items."""

    def __init__(
        self,
        samples: SampleDataset,
        indices: list[int],
        image_size: int,
        train: bool,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        hflip: bool = True,
        seed: int = 0,
    ):
        self.samples, self.indices = samples, indices
        self.image_size, self.train = image_size, train
        self.crop_scale, self.hflip, self.seed = crop_scale, hflip, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[self.indices[index]]
        composite, mask, target = sample.load()
        if target is None:
            raise GknetError(f"training needs a ground-truth target for {sample.composite}")
        images = [composite, mask, target]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            images = random_resized_crop_flip(images, self.image_size, self.crop_scale, self.hflip, rng)
        else:
            images = resize_triplet(images, self.image_size)
        return triplet_item(images, sample.name)


def _split_samples(samples: SampleDataset, data: DataConfig, train: TrainConfig, root: Path):
    if samples.problems:
        path, message = samples.problems[0]
        raise GknetError(f"{len(samples.problems)} unusable file(s) under {root}, e.g. {path}: {message}")
    names = [s.name if s.subset == "folder" else f"{s.subset}/{s.name}" for s in samples]
    val = [i for i, n in enumerate(names) if is_validation(n, data.seed, data.val_fraction)]
    held_out = set(val)
    fit = [i for i in range(len(samples)) if i not in held_out]
    if data.val_size:
        val = val[: data.val_size]
    if not fit or not val:
        raise GknetError(
            f"{root} has {len(samples)} samples: too few for a train/validation split "
            f"with data.val_fraction={data.val_fraction}"
        )
    common = {"image_size": train.image_size, "seed": data.seed}
    return (
        TripletDataset(samples, fit, train=True, crop_scale=train.crop_scale, hflip=train.hflip, **common),
        TripletDataset(samples, val, train=False, **common),
    )


def build_datasets(data: DataConfig, train: TrainConfig) -> tuple[Dataset, Dataset]:
    """(training dataset, validation dataset) for the config; validation is capped at data.val_size.
    With ``data.realistic_share`` a share of the training items are real realistic composites."""
    fit, val = _source_datasets(data, train)
    if data.realistic_share:
        from gknet.data.realistic import RealisticComposites, WithRealistic

        folder = Path(data.realistic_composites).expanduser()
        if not folder.is_dir():
            raise GknetError(f"data.realistic_composites is not a directory: {folder}")
        realistic = RealisticComposites(folder, train.image_size, train.crop_scale, train.hflip)
        fit = WithRealistic(fit, realistic, data.realistic_share, data.seed)
    return fit, val


def _source_datasets(data: DataConfig, train: TrainConfig) -> tuple[Dataset, Dataset]:
    if not data.root:
        raise GknetError("data.root is not set: the photo folder, iHarmony4 root or triplet folder")
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise GknetError(f"data.root is not a directory: {root}")
    if data.source == "synthetic":
        from gknet.data.perturbations import FAMILY_WEIGHTS, MODE_PROBS
        from gknet.data.synthetic import SyntheticComposites

        common = {
            "image_size": train.image_size,
            "val_fraction": data.val_fraction,
            "seed": data.seed,
            "mode_probs": {**MODE_PROBS, **data.edit_modes},
            "family_weights": {**FAMILY_WEIGHTS, **data.edit_families},
            "same_category_share": data.same_category_share,
            "harmonious_share": data.harmonious_share,
            "mild_share": data.mild_share,
            "film_luts": data.film_grades,
            "cache_mb": data.cache_mb,
        }
        fit = SyntheticComposites(root, "train", crop_scale=train.crop_scale, hflip=train.hflip, **common)
        val = SyntheticComposites(root, "val", limit=data.val_size, **common)
        return fit, val
    if data.source == "iharmony4":
        from gknet.data.iharmony4 import IHarmony4

        samples = IHarmony4(root, data.subsets, split="train")
    else:
        from gknet.data.folders import FolderDataset

        samples = FolderDataset(root / "composites", root / "masks", root / "targets")
    return _split_samples(samples, data, train, root)
