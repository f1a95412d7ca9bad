"""Numerical checks of the edits in gknet.data.perturbations against naive references."""

import numpy as np
import pytest
import torch

from gknet.color.histogram import match_quantiles
from gknet.data.perturbations import make_composite, perturb_foreground, perturb_scene, quantize
from gknet.data.transfers import (
    MAX_NEW_CLIPPED,
    IlluminationMaps,
    blend_plausible,
    clipped_fraction,
    covariance_transfer,
    histogram_transfer,
    iterative_distribution_transfer,
)
from gknet.errors import GknetError
from tests.conftest import require_shared


def _gaussian(n, mean, cov, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multivariate_normal(mean, cov, n).T.copy())


def test_covariance_transfer_gives_the_reference_mean_and_covariance():
    cov_s = [[0.010, 0.004, 0.0], [0.004, 0.012, 0.003], [0.0, 0.003, 0.008]]
    cov_r = [[0.015, -0.005, 0.002], [-0.005, 0.010, 0.0], [0.002, 0.0, 0.02]]
    src, ref = _gaussian(4000, [0.3, 0.5, 0.6], cov_s, 0), _gaussian(3000, [0.6, 0.4, 0.3], cov_r, 1)
    out = covariance_transfer(src, ref).numpy()
    assert np.allclose(out.mean(1), ref.numpy().mean(1), atol=1e-9)
    assert np.allclose(np.cov(out), np.cov(ref.numpy()), atol=2e-4)  # the regulariser is 1e-4

    # it is the closed form mu_r + C_r^1/2 C_s^-1/2 (x - mu_s) with symmetric roots
    def root(c, p):
        w, v = np.linalg.eigh(c + 1e-4 * np.eye(3))
        return (v * w**p) @ v.T

    s, r = src.numpy(), ref.numpy()
    transform = root(np.cov(r), 0.5) @ root(np.cov(s), -0.5)
    expected = r.mean(1, keepdims=True) + transform @ (s - s.mean(1, keepdims=True))
    assert np.allclose(out, expected, atol=1e-9)


def test_covariance_transfer_limits_the_stretch_of_flat_objects():
    flat = _gaussian(500, [0.5, 0.5, 0.5], np.eye(3) * 1e-6, 2)
    ref = _gaussian(500, [0.5, 0.5, 0.5], np.eye(3) * 0.04, 3)
    out, src = covariance_transfer(flat, ref).numpy(), flat.numpy()
    # no direction is stretched by more than 2x (the Lab transfer's std ratio limit)
    spread = np.linalg.norm(out - out.mean(1, keepdims=True), axis=0)
    assert np.all(spread <= 2 * np.linalg.norm(src - src.mean(1, keepdims=True), axis=0) + 1e-12)
    assert spread.max() > 1.9 * np.linalg.norm(src - src.mean(1, keepdims=True), axis=0).min()


def test_histogram_matching_gives_the_reference_quantiles():
    rng = np.random.default_rng(0)
    src = rng.random(1000) ** 2
    ref = rng.normal(0.6, 0.1, 777)
    out = match_quantiles(src, ref)
    q = np.linspace(0.05, 0.95, 19)
    assert np.allclose(np.quantile(out, q), np.quantile(ref, q), atol=0.01)
    assert np.array_equal(np.argsort(out, kind="stable"), np.argsort(src, kind="stable"))  # monotone
    ties = match_quantiles(np.array([0.2, 0.2, 0.2, 0.9]), ref)
    assert ties[0] == ties[1] == ties[2] < ties[3]
    # per channel on [3, N] pixels
    x, r = torch.rand(3, 500, dtype=torch.float64), torch.rand(3, 300, dtype=torch.float64) * 0.5
    matched = histogram_transfer(x, r)
    for c in range(3):
        assert np.allclose(
            np.sort(matched[c].numpy()),
            np.quantile(r[c].numpy(), (np.arange(500) + 1) / 500, method="inverted_cdf"),
            atol=0.02,
        )


def _sliced_wasserstein(a, b, rng, directions=64):
    w = rng.normal(size=(directions, 3))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    q = np.linspace(0.01, 0.99, 99)
    return float(np.mean([np.abs(np.quantile(d @ a, q) - np.quantile(d @ b, q)).mean() for d in w]))


def test_idt_moves_the_3d_distribution_to_the_reference():
    src = _gaussian(3000, [0.3, 0.5, 0.6], np.diag([0.01, 0.02, 0.005]), 4)
    # a non-Gaussian, correlated reference: covariance matching alone cannot reach it
    rng = np.random.default_rng(5)
    ref = torch.from_numpy(
        np.concatenate(
            [rng.normal([0.7, 0.2, 0.2], 0.05, (1500, 3)), rng.normal([0.2, 0.3, 0.8], 0.05, (1500, 3))]
        ).T.copy()
    )
    before = _sliced_wasserstein(src.numpy(), ref.numpy(), np.random.default_rng(0))
    out = iterative_distribution_transfer(src, ref, np.random.default_rng(1))
    after = _sliced_wasserstein(out.numpy(), ref.numpy(), np.random.default_rng(0))
    cov = _sliced_wasserstein(covariance_transfer(src, ref).numpy(), ref.numpy(), np.random.default_rng(0))
    assert after < 0.3 * before and after < 0.5 * cov, (before, cov, after)


def test_blend_plausible_weakens_or_rejects_clipping_draws():
    x = torch.full((3, 100), 0.5)
    mild = x + 0.1
    out, alpha = blend_plausible(x, mild, 1.0)
    assert alpha == 1.0 and torch.allclose(out, mild)
    # half the pixels blow out at full strength; at half strength none do
    moved = x.clone()
    moved[:, :50] = 1.4
    out, alpha = blend_plausible(x, moved, 1.0)
    assert alpha == 0.5 and clipped_fraction(out) - clipped_fraction(x) <= MAX_NEW_CLIPPED
    out, alpha = blend_plausible(x, torch.full_like(x, 100.0), 1.0)
    assert alpha == 0.0 and torch.equal(out, x)
    out, alpha = blend_plausible(x, torch.full_like(x, float("nan")), 1.0)
    assert alpha == 0.0 and torch.equal(out, x)


def _maps_path():
    return require_shared("data", "illumination_maps", "ccharmony_polynomial_maps.npz")


def test_illumination_maps_apply_the_polynomial_terms():
    maps = IlluminationMaps(_maps_path())
    assert 100 < len(maps) <= 350  # maps that blow up test colours are left out
    pixels = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.3, 0.3], [0.8, 0.2, 0.4], [1.0, 1.0, 1.0]]).T
    out = maps.apply(pixels, 3, 7)
    f, r = maps.forward[3].double().numpy(), maps.reverse[7].double().numpy()
    for n in range(pixels.shape[1]):
        rgb = pixels[:, n].double().numpy() * 255
        for matrix in (f, r):
            red, green, blue = rgb
            terms = [
                red,
                green,
                blue,
                red * green,
                red * blue,
                green * blue,
                red**2,
                green**2,
                blue**2,
                red * green * blue,
                1.0,
            ]
            rgb = np.clip([sum(matrix[c, k] * terms[k] for k in range(11)) for c in range(3)], 0, 255)
        assert np.allclose(out[:, n].double().numpy(), rgb / 255, atol=1e-4)


def test_illumination_maps_filter_and_bad_files(tmp_path):
    good = np.zeros((3, 11))
    good[[0, 1, 2], [0, 1, 2]] = 1.0  # identity
    wild = good.copy()
    wild[0, 9] = 1.0  # + r*g*b: values in the millions
    forward, reverse = np.stack([good, wild, good]), np.stack([good, good, wild])
    np.savez(tmp_path / "maps.npz", forward=forward, reverse=reverse)
    maps = IlluminationMaps(tmp_path / "maps.npz")
    assert len(maps) == 1
    x = torch.rand(3, 20)
    assert torch.allclose(maps.apply(x, 0, 0), x, atol=1e-6)
    np.savez(tmp_path / "bad.npz", forward=np.zeros((2, 3, 10)), reverse=np.zeros((2, 3, 10)))
    with pytest.raises(GknetError, match="3, 11"):
        IlluminationMaps(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GknetError, match="cannot read"):
        IlluminationMaps(tmp_path / "junk.npz")


def test_illuminant_family_redraws_or_weakens_clipping_draws():
    maps = IlluminationMaps(_maps_path())
    image = torch.rand(3, 32, 32) * 0.6 + 0.2
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 8:24] = 1
    fg = mask[0] > 0.5
    changed = 0
    for seed in range(30):
        out, info = perturb_foreground(image, mask, np.random.default_rng(seed), None, ["illuminant"], maps)
        assert clipped_fraction(out[:, fg]) - clipped_fraction(image[:, fg]) <= MAX_NEW_CLIPPED
        changed += info["params"]["illuminant"]["alpha"] > 0
    assert changed >= 25
    with pytest.raises(ValueError, match="illumination maps"):
        perturb_foreground(image, mask, np.random.default_rng(0), None, ["illuminant"])


def _photo(seed=0, size=40):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = quantize(
        (
            torch.stack([0.2 + 0.6 * xx, 0.7 - 0.5 * yy, 0.4 + 0.3 * xx * yy])
            + 0.05 * torch.rand(3, size, size, generator=g)
        ).clamp(0, 1)
    )
    mask = (((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.06).float()[None]
    return image, mask


@pytest.mark.parametrize("mode", ["object", "scene", "both"])
def test_make_composite_modes(mode):
    photo, mask = _photo()
    fg, bg = mask[0] > 0.5, mask[0] <= 0.5
    reference = torch.rand(3, 1, 200) * 0.5
    for seed in range(6):
        rng = np.random.default_rng(seed)
        composite, target, info = make_composite(photo, mask, rng, reference, mode=mode)
        assert info["mode"] == mode
        assert torch.equal(composite[:, bg], target[:, bg])  # outside the mask: exactly the target
        assert torch.equal(quantize(composite), composite) and torch.equal(quantize(target), target)
        # the target is B(photo): the same generator state gives the same scene edit first
        if mode == "object":
            assert info["scene"] is None and torch.equal(target, photo)
        else:
            edited, scene_info = perturb_scene(photo, np.random.default_rng(seed))
            assert scene_info == info["scene"] and torch.equal(target, quantize(edited))
            assert (target - photo)[:, bg].abs().mean() > 0.002  # the background changed
        if mode == "scene":
            assert info["object"] is None and torch.equal(composite[:, fg], photo[:, fg])
        else:
            assert info["object"]["families"]
    with pytest.raises(ValueError, match="unknown edit mode"):
        make_composite(photo, mask, np.random.default_rng(0), mode="sepia")


def test_scene_edits_are_global():
    photo, _ = _photo()
    # a whole-image edit is a function of the pixel value (plus global statistics) only:
    # equal input pixels give equal output pixels anywhere in the frame
    photo[:, :4, :4] = photo[:, -4:, -4:] = torch.tensor([0.3, 0.5, 0.7]).view(3, 1, 1)
    for seed in range(10):
        edited, _ = perturb_scene(photo, np.random.default_rng(seed))
        assert torch.equal(edited[:, :4, :4], edited[:, -4:, -4:])
