import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from gknet.cli import main
from gknet.data.luts import FilmLuts
from gknet.data.perturbations import FAMILIES, SCENE_FAMILIES, perturb_foreground
from gknet.data.split import is_validation
from gknet.data.synthetic import SyntheticComposites, list_photos
from gknet.data.transfers import IlluminationMaps
from gknet.errors import GknetError
from gknet.io.images import to_pil_image
from tests.conftest import require_shared


def _scene(size=48, seed=0):
    """A colourful textured image and a blob mask covering about a quarter of it."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    smooth = torch.stack([0.2 + 0.6 * xx, 0.7 - 0.5 * yy, 0.3 + 0.4 * xx * yy])
    image = (smooth + 0.08 * torch.rand(3, size, size, generator=g)).clamp(0, 1)
    mask = (((yy - 0.5) ** 2 + (xx - 0.45) ** 2) < 0.08).float()[None]
    return image, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_changes_the_foreground_only(family):
    image, mask = _scene()
    fg = mask[0] > 0.5
    maps = luts = None
    if family == "illuminant":
        maps = IlluminationMaps(require_shared("data", "illumination_maps", "ccharmony_polynomial_maps.npz"))
    if family == "film_grade":
        luts = FilmLuts(require_shared("data", "film_luts", "film_luts_33.npz"))
    for seed in range(4):
        rng = np.random.default_rng(seed)
        composite, info = perturb_foreground(image, mask, rng, families=[family], illuminants=maps, luts=luts)
        assert info["families"] == [family]
        assert torch.equal(composite[:, ~fg], image[:, ~fg])
        change = (composite - image).abs()[:, fg].mean().item()
        assert change > 0.005, f"{family} seed {seed}: mean change {change:.4f}"
        assert composite.min() >= 0 and composite.max() <= 1


def test_color_transfer_moves_towards_the_reference():
    image, mask = _scene()
    fg = mask[0] > 0.5
    reference = torch.tensor([0.1, 0.2, 0.6]).view(3, 1, 1).expand(3, 8, 8) + 0.05 * torch.rand(3, 8, 8)
    composite, _ = perturb_foreground(image, mask, np.random.default_rng(0), reference, ["lab_transfer"])
    before = (image[:, fg].mean(1) - reference.mean((1, 2))).abs().sum()
    after = (composite[:, fg].mean(1) - reference.mean((1, 2))).abs().sum()
    assert after < 0.7 * before


def test_random_families_are_one_to_three_and_background_is_exact():
    image, mask = _scene(seed=1)
    counts = set()
    for seed in range(40):
        composite, info = perturb_foreground(image, mask, np.random.default_rng(seed))
        counts.add(len(info["families"]))
        assert set(info["families"]) <= set(FAMILIES)
        assert torch.equal(composite[:, mask[0] <= 0.5], image[:, mask[0] <= 0.5])
    assert counts == {1, 2, 3}


def test_same_generator_same_composite_and_bad_input():
    image, mask = _scene()
    a, _ = perturb_foreground(image, mask, np.random.default_rng(3))
    b, _ = perturb_foreground(image, mask, np.random.default_rng(3))
    assert torch.equal(a, b)
    empty, _ = perturb_foreground(image, torch.zeros_like(mask), np.random.default_rng(0))
    assert torch.equal(empty, image)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb_foreground(image, mask, np.random.default_rng(0), families=["sepia"])
    with pytest.raises(ValueError, match="mask must be"):
        perturb_foreground(image, mask[:, :10], np.random.default_rng(0))


def test_split_is_a_seeded_name_hash():
    name = "image_100005"
    u = int.from_bytes(hashlib.sha1(f"7:{name}".encode()).digest()[:8], "big") / 2**64
    assert is_validation(name, 7, 0.1) == (u < 0.1)
    assert is_validation(name, 7, u + 1e-9) and not is_validation(name, 7, u - 1e-9)


def test_the_shared_photos_keep_their_validation_split():
    """The shipped weights were selected on these 201 photos: the split must never move."""
    names = list_photos(require_shared("data", "photos"))
    val = [n for n in names if is_validation(n, 0, 0.1)]
    assert len(names) == 1999 and len(val) == 201
    assert val[:3] == ["image_100022", "image_100261", "image_100285"]
    assert hashlib.sha1(",".join(val).encode()).hexdigest() == "a70b315079f5a0ce01ca10be73a10c44a45b5c1f"


def _photos():
    return require_shared("data", "photos")


def test_split_is_disjoint_and_about_val_fraction():
    root = _photos()
    train = SyntheticComposites(root, "train")
    val = SyntheticComposites(root, "val")
    assert not set(train.names) & set(val.names)
    total = len(train) + len(val)
    assert total == len(list((root / "images").glob("*.jpg")))
    assert 0.08 < len(val) / total < 0.12


def _check_item(item, size):
    comp, mask, target = item["composite"], item["mask"], item["target"]
    assert comp.shape == target.shape == (3, size, size) and mask.shape == (1, size, size)
    assert comp.dtype == mask.dtype == target.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}  # keeps both object and background
    bg = mask[0] == 0
    assert torch.equal(comp[:, bg], target[:, bg])


def test_validation_items_are_fixed_across_instances():
    a = SyntheticComposites(_photos(), "val", image_size=64, limit=4)
    b = SyntheticComposites(_photos(), "val", image_size=64, limit=4)
    b.set_epoch(5)  # epochs do not affect validation
    for i in range(4):
        x, y = a[i], b[i]
        _check_item(x, 64)
        assert x["name"] == y["name"]
        for key in ("composite", "mask", "target"):
            assert torch.equal(x[key], y[key])
    assert any(not torch.equal(a[i]["composite"], a[i]["target"]) for i in range(4))


def test_train_items_depend_on_seed_epoch_index_only():
    a = SyntheticComposites(_photos(), "train", image_size=64, limit=6)
    b = SyntheticComposites(_photos(), "train", image_size=64, limit=6)
    a.set_epoch(2)
    b.set_epoch(2)
    for i in (0, 5):
        assert torch.equal(a[i]["composite"], b[i]["composite"])
        assert torch.equal(a[i]["target"], b[i]["target"])
    first = [a[i]["composite"] for i in range(6)]
    a.set_epoch(3)
    assert sum(not torch.equal(x, a[i]["composite"]) for i, x in enumerate(first)) >= 5


def test_train_crops_keep_foreground_and_background():
    ds = SyntheticComposites(_photos(), "train", image_size=48, crop_scale=(0.08, 0.2), limit=30)
    for i in range(len(ds)):
        _check_item(ds[i], 48)


def test_missing_folders_raise_a_clear_error(tmp_path):
    with pytest.raises(GknetError, match="images/ and masks/"):
        SyntheticComposites(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.jpg")
    with pytest.raises(GknetError, match="no photo"):
        SyntheticComposites(tmp_path)


def test_cli_writes_a_preview_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    args = ["synth", "--root", str(_photos()), "--split", "val", "--n", "3", "--size", "40"]
    assert main([*args, "--preview", "-o", str(out), "--stats"]) == 0
    grid = Image.open(out)
    assert grid.size == (80 + 3 * 42, 3 * 42)
    out = capsys.readouterr().out
    assert "fMSE p10/25/50/90" in out and "object area p10/25/50/90" in out and "HCOCO 738" in out
    assert "modes: " in out and "families (share of items): " in out
    assert main([*args, "--preview", "-o", str(out)]) == 2  # never overwrites silently
    each = tmp_path / "each.png"
    assert main([*args, "--preview", "--each", "-o", str(each)]) == 0
    # one column per object family (the maps lie beside the photos), per scene family, and "both"
    assert Image.open(each).size == (80 + (len(FAMILIES) + len(SCENE_FAMILIES) + 1) * 42, 3 * 42)
    assert main(args) == 2  # nothing asked


def test_export_writes_lossless_pairs_that_evaluate_reads(tmp_path):
    from gknet.data import FolderDataset
    from gknet.data.synthetic import export_triplets

    ds = SyntheticComposites(_photos(), "val", image_size=32, limit=3)
    assert export_triplets(ds, tmp_path) == 3
    folder = FolderDataset(tmp_path / "composites", tmp_path / "masks", tmp_path / "targets")
    assert len(folder) == 3 and not folder.problems

    def as_uint8(x):
        return (x * 255).round().byte().permute(1, 2, 0).numpy()

    for i in range(3):
        item = ds[i]
        comp, mask, target = folder.load(i)
        assert np.array_equal(np.asarray(comp), as_uint8(item["composite"]))
        assert np.array_equal(np.asarray(target), as_uint8(item["target"]))
        assert np.array_equal(np.asarray(mask) > 127, item["mask"][0].numpy() > 0.5)
    with pytest.raises(GknetError, match="exists"):
        export_triplets(ds, tmp_path)


def test_references_never_cross_the_split(monkeypatch):
    val = SyntheticComposites(_photos(), "val", image_size=32, limit=12)
    loaded = []
    original = SyntheticComposites._load

    def spy(self, name):
        loaded.append(name)
        return original(self, name)

    monkeypatch.setattr(SyntheticComposites, "_load", spy)
    train_names = set(SyntheticComposites(_photos(), "train").names)
    for i in range(len(val)):
        val.sample(i)
    assert len(loaded) > len(val)  # the photos and their references
    assert set(loaded) <= set(val.pool) and not set(loaded) & train_names


def test_dataset_mixes_object_and_scene_edits():
    ds = SyntheticComposites(_photos(), "train", image_size=32, limit=40)
    assert ds.illuminants is not None  # found beside the photos: ../illumination_maps
    modes, families = set(), set()
    for i in range(len(ds)):
        item, info = ds.sample(i)
        _check_item(item, 32)
        modes.add(info["mode"])
        families |= set(info["object"]["families"] if info["object"] else [])
        if info["mode"] == "object":
            assert info["scene"] is None
        elif info["mode"] != "harmonious":
            assert set(info["scene"]["families"]) <= set(SCENE_FAMILIES)
    assert {"object", "scene", "both"} <= modes
    assert len(families) >= 6


def test_illumination_maps_option(tmp_path):
    assert SyntheticComposites(_photos(), "val", illumination_maps=False).illuminants is None
    with pytest.raises(GknetError, match="not found"):
        SyntheticComposites(_photos(), "val", illumination_maps=tmp_path / "none.npz")
    # a photo folder without maps beside it: the illuminant family is left out, nothing fails
    for sub in ("images", "masks"):
        (tmp_path / "photos" / sub).mkdir(parents=True)
    Image.new("RGB", (16, 16), (120, 90, 60)).save(tmp_path / "photos" / "images" / "a.jpg")
    mask = Image.new("L", (16, 16))
    mask.paste(255, (4, 4, 12, 12))
    mask.save(tmp_path / "photos" / "masks" / "a.png")
    ds = SyntheticComposites(tmp_path / "photos", "train", image_size=16, val_fraction=1e-9)
    assert ds.illuminants is None
    _check_item(ds[0], 16)


def test_composite_stats_counts_modes_families_and_areas():
    from gknet.data.synthetic import composite_stats

    ds = SyntheticComposites(_photos(), "val", image_size=32, limit=10)
    stats = composite_stats(ds, range(10))
    infos = [ds.sample(i)[1] for i in range(10)]
    areas = [ds[i]["mask"].mean().item() for i in range(10)]
    assert stats["count"] == 10 and abs(sum(stats["modes"].values()) - 1) < 1e-9
    assert stats["modes"].get("object", 0) == sum(i["mode"] == "object" for i in infos) / 10
    assert stats["area_percentiles"][50] == pytest.approx(float(np.median(areas)))
    p = stats["fmse_percentiles"]
    assert 0 <= p[10] <= p[50] <= p[90] and p[50] == pytest.approx(stats["fmse_median"])


def test_sample_can_force_the_edit():
    ds = SyntheticComposites(_photos(), "val", image_size=32, limit=2)
    item, info = ds.sample(0, "both", ["hist_transfer"], ["day_night"])
    assert info["mode"] == "both" and info["object"]["families"] == ["hist_transfer"]
    assert info["scene"]["families"] == ["day_night"]
    again, _ = ds.sample(0, "both", ["hist_transfer"], ["day_night"])
    assert torch.equal(again["composite"], item["composite"])
    with pytest.raises(GknetError, match="edit mix"):
        SyntheticComposites(_photos(), "val", mode_probs={"sideways": 1.0})


def test_the_config_edit_mix_reaches_the_training_data():
    from dataclasses import replace

    from gknet.config import DataConfig, TrainConfig
    from gknet.training.data import build_datasets

    only = "exposure_gamma"
    data = DataConfig(
        root=str(_photos()),
        val_size=6,
        edit_modes={"scene": 0, "both": 0},  # object edits only
        edit_families={f: 0 for f in FAMILIES if f != only},
        harmonious_share=0.0,
    )
    train_set, val_set = build_datasets(data, replace(TrainConfig(), image_size=32))
    for ds in (train_set, val_set):
        for i in range(6):
            _, info = ds.sample(i)
            assert info["mode"] == "object" and info["object"]["families"] == [only]
    default, _ = build_datasets(replace(data, edit_modes={}, edit_families={}), TrainConfig(image_size=32))
    assert len({default.sample(i)[1]["mode"] for i in range(30)}) == 3


def _photo_folder(root, count=6, size=40):
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for k in range(count):
        image, mask = (to_pil_image(t) for t in _scene(size, seed=k))
        image.save(root / "images" / f"p{k}.jpg")
        mask.save(root / "masks" / f"p{k}.png")
    return root


def test_decoded_photo_cache_gives_the_same_items_within_its_budget(tmp_path):
    root = _photo_folder(tmp_path)
    options = {"image_size": 32, "val_fraction": 0.2, "illumination_maps": False, "film_luts": False}
    per_photo = 40 * 40 * 4  # RGB + mask bytes
    plain = SyntheticComposites(root, **options)
    cached = SyntheticComposites(root, cache_mb=1, **options)
    small = SyntheticComposites(root, cache_mb=2.5 * per_photo / 2**20, **options)
    for epoch in (0, 1):
        for ds in (plain, cached, small):
            ds.set_epoch(epoch)
        for i in range(len(plain)):
            a, b, c = plain[i], cached[i], small[i]
            for key in ("composite", "mask", "target"):
                assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    assert set(cached._decoded) == set(plain.pool)  # references are photos of the split too
    assert len(small._decoded) == 2 and not plain._decoded
    # Cached photos are no longer read from disk.
    before = cached[0]["composite"]
    for path in (root / "images").iterdir():
        path.unlink()
    assert torch.equal(cached[0]["composite"], before)
    with pytest.raises(GknetError, match="disappeared"):
        plain[0]
