"""Real realistic composites as unchanged training items: the held-out half, the mix, the config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from gknet.config import ConfigError, DataConfig, TrainConfig
from gknet.data.realistic import RealisticComposites, WithRealistic, is_held_out
from tests.conftest import box_mask, random_rgb, write_image


def _lalonde(root, count=12):
    labels = {f"im{i:02d}": "realistic" if i % 3 else "unrealistic" for i in range(count)}
    for i, name in enumerate(labels):
        write_image(root / "composites" / f"{name}.jpg", random_rgb((40, 30), seed=i), quality=95)
        write_image(root / "masks" / f"{name}.png", box_mask((40, 30)))
    (root / "labels.csv").write_text("name,human_label\n" + "".join(f"{n},{v}\n" for n, v in labels.items()))
    return labels


class Numbered(Dataset):
    def __init__(self, n):
        self.n, self.epochs = n, []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return {"name": f"base{index}"}


def test_realistic_items_are_their_own_target_and_the_held_out_half_is_never_used(tmp_path):
    labels = _lalonde(tmp_path)
    data = RealisticComposites(tmp_path, image_size=16, crop_scale=(0.5, 1.0))
    expected = sorted(n for n, v in labels.items() if v == "realistic" and not is_held_out(n))
    assert data.names == expected and 0 < len(expected) < 8  # 8 realistic, some held out
    item = data.item(0, np.random.default_rng(0))
    assert item["composite"].shape == (3, 16, 16) and item["mask"].shape == (1, 16, 16)
    assert torch.equal(item["target"], item["composite"]) and 0 < item["mask"].mean() < 1


def test_the_mix_replaces_a_share_of_items_by_seed_epoch_and_index(tmp_path):
    _lalonde(tmp_path)
    realistic = RealisticComposites(tmp_path, image_size=8)
    base = Numbered(600)
    names = lambda ds: [ds[i]["name"] for i in range(len(ds))]  # noqa: E731
    assert names(WithRealistic(base, realistic, 0.0)) == names(base)
    assert all(n in realistic.names for n in names(WithRealistic(Numbered(20), realistic, 1.0)))
    mix = WithRealistic(base, realistic, 0.25, seed=3)
    first = names(mix)
    share = sum(not n.startswith("base") for n in first) / len(first)
    assert 0.19 < share < 0.31
    assert names(mix) == first  # the same items again
    mix.set_epoch(1)
    assert names(mix) != first and base.epochs == [1]


def test_config_needs_the_folder_for_a_share(tmp_path):
    with pytest.raises(ConfigError, match="realistic_composites"):
        DataConfig(realistic_share=0.1)
    with pytest.raises(ConfigError):
        DataConfig(realistic_composites=str(tmp_path), realistic_share=1.5)


def test_build_datasets_mixes_them_into_the_training_items(tmp_path):
    from gknet.training.data import build_datasets
    from tests.train_helpers import write_triplet_folder

    _lalonde(tmp_path / "lalonde")
    root = write_triplet_folder(tmp_path / "triplets", count=16, size=24)
    lalonde = str(tmp_path / "lalonde")
    data = DataConfig(source="folder", root=str(root), realistic_composites=lalonde, realistic_share=0.5)
    fit, val = build_datasets(data, TrainConfig(image_size=16))
    assert isinstance(fit, WithRealistic) and not isinstance(val, WithRealistic)
    items = [fit[i] for i in range(len(fit))]
    assert any(torch.equal(it["target"], it["composite"]) for it in items)
    assert {it["composite"].shape for it in items} == {(3, 16, 16)}
