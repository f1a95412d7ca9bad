"""The full-resolution colour transfer: exact where it must be, faithful, detail-preserving."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gknet.inference.fullres import apply_local_affine, fit_local_affine, resize, transfer_to_full_resolution

IDENTITY = torch.cat([torch.eye(3).reshape(9), torch.zeros(3)]).view(1, 12, 1, 1)


def textured_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth colour gradients plus fine texture, in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([0.3 + 0.4 * xs, 0.3 + 0.4 * ys, 0.5 - 0.2 * xs * ys])
    return (base + 0.1 * (torch.rand(3, height, width, generator=g) - 0.5))[None].clamp(0.1, 0.9)


def box_mask(height: int, width: int) -> torch.Tensor:
    mask = torch.zeros(1, 1, height, width)
    mask[..., height // 4 : 3 * height // 4, width // 5 : 4 * width // 5] = 1
    return mask


@pytest.mark.parametrize("band_pixels", [2**16, 100])  # 100: bands of 1 row split each run
def test_apply_matches_dense_bilinear_reference(band_pixels, monkeypatch):
    monkeypatch.setattr("gknet.inference.fullres.BAND_PIXELS", band_pixels)
    g = torch.Generator().manual_seed(1)
    coeffs = IDENTITY + 0.2 * torch.randn(2, 12, 6, 9, generator=g)
    image = torch.rand(2, 3, 37, 53, generator=g)
    alpha = torch.rand(2, 1, 37, 53, generator=g)
    alpha[alpha < 0.3] = 0
    dense = F.interpolate(coeffs, size=(37, 53), mode="bilinear", align_corners=False)
    mapped = torch.einsum("bojhw,bjhw->bohw", dense[:, :9].unflatten(1, (3, 3)), image) + dense[:, 9:]
    expected = torch.where(alpha > 0, (image + alpha * (mapped - image)).clamp(0, 1), image)
    got = apply_local_affine(coeffs, image, alpha)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert torch.equal(got[(alpha == 0).expand_as(image)], image[(alpha == 0).expand_as(image)])


def test_outside_mask_bit_identical_and_empty_mask_is_identity():
    image = textured_image(40, 60).double()  # float64 input: no float32 round trip outside the mask
    mask = box_mask(40, 60)
    low = resize(image.float(), (16, 16))
    out = transfer_to_full_resolution(image, mask, low, 1 - low, resize(mask, (16, 16)))
    outside = (mask == 0).expand_as(image)
    assert out.dtype == torch.float64 and torch.equal(out[outside], image[outside])
    assert not torch.equal(out[~outside], image[~outside])
    empty = torch.zeros_like(mask)
    assert torch.equal(apply_local_affine(IDENTITY + 0.3, image, empty), image)


def test_fit_recovers_a_global_affine_colour_change():
    src = textured_image(32, 32)
    matrix = torch.tensor([[0.8, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.2, 0.7]])
    offset = torch.tensor([0.05, -0.02, 0.1])
    dst = torch.einsum("ij,bjhw->bihw", matrix, src) + offset.view(1, 3, 1, 1)
    weight = box_mask(32, 32)
    coeffs = fit_local_affine(src, dst, weight, radius=2, eps=1e-8)
    inside = coeffs[0, :, 12:20, 10:22].flatten(1)  # well inside the mask
    expected = torch.cat([matrix.reshape(9), offset])[:, None].expand_as(inside)
    torch.testing.assert_close(inside, expected, atol=2e-3, rtol=0)
    # Windows that never see the foreground get the identity exactly.
    assert torch.equal(coeffs[0, :, :2, :2], IDENTITY[0].expand(12, 2, 2))


def test_flat_windows_fall_back_to_identity_plus_shift():
    src = torch.full((1, 3, 12, 12), 0.4)
    dst = src + torch.tensor([0.1, 0.0, -0.1]).view(1, 3, 1, 1)
    coeffs = fit_local_affine(src, dst, torch.ones(1, 1, 12, 12))
    torch.testing.assert_close(coeffs[0, :9], IDENTITY[0, :9].expand(9, 12, 12))  # contrast kept
    torch.testing.assert_close(coeffs[0, 9:], torch.tensor([0.1, 0.0, -0.1]).view(3, 1, 1).expand(3, 12, 12))


def test_transfer_keeps_detail_that_naive_upsampling_loses():
    """Full-size truth = a smooth colour change of a textured image; the low-res result is exact."""
    full = textured_image(192, 256, seed=3)
    mask = box_mask(192, 256)
    gain = torch.tensor([1.1, 0.85, 0.7]).view(1, 3, 1, 1)
    truth = torch.where(mask > 0, (full * gain + 0.05).clamp(0, 1), full)
    low = (48, 48)
    low_comp, low_mask, low_truth = resize(full, low), resize(mask, low), resize(truth, low)
    low_out = low_mask * low_truth + (1 - low_mask) * low_comp
    ours = transfer_to_full_resolution(full, mask, low_comp, low_out, low_mask)
    naive = torch.where(mask > 0, resize(low_out, (192, 256)), full)
    inside = (mask > 0).expand_as(full)
    ours_err = (ours - truth)[inside].pow(2).mean()
    naive_err = (naive - truth)[inside].pow(2).mean()
    assert ours_err < naive_err / 10

    def detail(x):  # energy of the horizontal gradient inside the mask, away from its edge
        return (x[..., 60:130, 60:200].diff(dim=-1)).pow(2).mean()

    # Texture finer than the low-res pixels keeps (about) the composite's contrast: more than
    # the truth's, since that texture's contrast change cannot be seen at low resolution.
    assert 0.9 < detail(ours) / detail(truth) <= detail(full) / detail(truth)
    assert detail(naive) / detail(truth) < 0.1
