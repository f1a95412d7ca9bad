"""Film grades: trilinear 3D-LUT application, the shared tables and the film_grade family."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from gknet.data.luts import FilmLuts, apply_lut
from gknet.data.perturbations import perturb_foreground, perturb_scene
from gknet.data.synthetic import SyntheticComposites, each_edit
from gknet.errors import GknetError
from tests.conftest import require_shared


def naive_lut(pixel, lut):
    """One pixel (r, g, b) in [0, 1] through lut[b, g, r] by the textbook trilinear formula."""
    size = lut.shape[0]
    coords = [min(max(v, 0.0), 1.0) * (size - 1) for v in pixel]
    base = [min(int(np.floor(c)), size - 2) for c in coords]
    out = np.zeros(3)
    for dr in (0, 1):
        for dg in (0, 1):
            for db in (0, 1):
                weight = 1.0
                for c, b0, d in zip(coords, base, (dr, dg, db), strict=True):
                    t = c - b0
                    weight *= t if d else 1 - t
                out += weight * lut[base[2] + db, base[1] + dg, base[0] + dr]
    return out


def test_apply_lut_matches_a_naive_reference():
    rng = np.random.default_rng(0)
    lut = rng.random((4, 4, 4, 3))
    pixels = np.concatenate([rng.random((3, 50)), [[0, 1, 1 / 3], [1, 0, 2 / 3], [0.5, 1, 0]]], axis=1)
    out = apply_lut(torch.from_numpy(pixels), torch.from_numpy(lut)).numpy()
    expected = np.stack([naive_lut(p, lut) for p in pixels.T], axis=1)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # grid points come back exactly; the identity table is the identity
    grid = np.linspace(0, 1, 5)
    b, g, r = np.meshgrid(grid, grid, grid, indexing="ij")
    identity = torch.from_numpy(np.stack([r, g, b], axis=-1))
    x = torch.from_numpy(rng.random((3, 100)))
    torch.testing.assert_close(apply_lut(x, identity), x, atol=1e-12, rtol=0)
    np.testing.assert_allclose(
        apply_lut(torch.tensor([[1 / 3], [2 / 3], [0.0]]), torch.from_numpy(lut)).numpy()[:, 0], lut[0, 2, 1]
    )


def test_shared_film_grades():
    luts = FilmLuts(require_shared("data", "film_luts", "film_luts_33.npz"))
    assert len(luts) == len(luts.names) == 226 and luts.luts.shape[1:] == (33, 33, 33, 3)
    x = torch.rand(3, 20, generator=torch.Generator().manual_seed(0))
    table = luts.luts[7].double().numpy() / 255
    expected = np.stack([naive_lut(p, table) for p in x.double().numpy().T], axis=1)
    np.testing.assert_allclose(luts.apply(x, 7).numpy(), expected, atol=1e-5)


def test_bad_lut_files(tmp_path):
    np.savez(tmp_path / "wrong.npz", luts=np.zeros((2, 4, 4, 3), np.uint8), names=np.array(["a", "b"]))
    with pytest.raises(GknetError, match="must be uint8"):
        FilmLuts(tmp_path / "wrong.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GknetError, match="cannot read film grades"):
        FilmLuts(tmp_path / "junk.npz")


def test_film_grade_on_object_and_scene():
    luts = FilmLuts(require_shared("data", "film_luts", "film_luts_33.npz"))
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 24, 24, generator=g)
    mask = torch.zeros(1, 24, 24)
    mask[:, 6:18, 4:20] = 1
    composite, info = perturb_foreground(
        image, mask, np.random.default_rng(0), families=["film_grade"], luts=luts
    )
    assert info["families"] == ["film_grade"] and info["params"]["film_grade"]["lut"] in luts.names
    assert torch.equal(composite[:, mask[0] == 0], image[:, mask[0] == 0])
    assert (composite - image).abs()[:, mask[0] > 0].mean() > 0.005
    graded, info = perturb_scene(image, np.random.default_rng(0), ["film_grade"], luts)
    params = info["params"]["film_grade"]
    k = luts.names.index(params["lut"])
    expected = image.reshape(3, -1) + params["alpha"] * (
        luts.apply(image.reshape(3, -1), k) - image.reshape(3, -1)
    )
    torch.testing.assert_close(graded.reshape(3, -1), expected.clamp(0, 1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="needs film grades"):
        perturb_scene(image, np.random.default_rng(0), ["film_grade"])
    # never drawn without the tables
    for seed in range(30):
        _, info = perturb_scene(image, np.random.default_rng(seed))
        assert "film_grade" not in info["families"]


def test_missing_film_grades_are_skipped_with_a_message(tmp_path):
    shared = require_shared("data", "photos")
    for sub, suffix in (("images", ".jpg"), ("masks", ".png")):  # one real photo, nothing beside it
        (tmp_path / "photos" / sub).mkdir(parents=True)
        shutil.copy(shared / sub / f"image_100005{suffix}", tmp_path / "photos" / sub)
    ds = SyntheticComposites(tmp_path / "photos", "train", image_size=16, val_fraction=1e-9)
    assert ds.luts is None and any(line.startswith("film_grade:") for line in ds.skipped)
    assert all("film_grade" not in [*(a or []), *(b or [])] for _, a, b in each_edit(ds))
    for i in range(20):
        ds.set_epoch(i)
        _, info = ds.sample(0)
        for edit in (info["object"], info["scene"]):
            assert edit is None or "film_grade" not in edit["families"]
    with pytest.raises(GknetError, match="film grades not found"):
        SyntheticComposites(tmp_path / "photos", "train", film_luts=tmp_path / "none.npz", val_fraction=1e-9)
    beside = SyntheticComposites(shared, "val", image_size=16, limit=1)
    assert beside.luts is not None and not beside.skipped
