import pytest
import torch

from gknet.color.histogram import match_quantiles
from gknet.color.spaces import lab_to_rgb, rgb_to_lab
from gknet.errors import GknetError
from gknet.evaluation.baselines import BASELINES, get_baseline


def _scene(seed: int = 0):
    """Two images: a dull-blue foreground square pasted on a warm textured background."""
    g = torch.Generator().manual_seed(seed)
    comp = torch.empty(2, 3, 16, 16)
    comp[:, 0].uniform_(0.5, 0.7, generator=g)
    comp[:, 1].uniform_(0.35, 0.5, generator=g)
    comp[:, 2].uniform_(0.2, 0.3, generator=g)
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 4:10, 3:12] = 1
    mask[1, :, 0:8, :] = 1
    fg_colour = torch.tensor([0.25, 0.3, 0.55])[:, None, None]
    noise = torch.rand(2, 3, 16, 16, generator=g) * 0.1
    comp = torch.where(mask > 0.5, fg_colour + noise, comp)
    return comp, mask


def _lab_stats(img, region):
    lab = rgb_to_lab(img)[:, region]
    return lab.mean(dim=1), lab.std(dim=1, unbiased=False)


@pytest.mark.parametrize("name", ["composite", "reinhard", "histogram"])
def test_protocol_shape_range_and_untouched_background(name):
    comp, mask = _scene()
    out = get_baseline(name)(comp, mask)
    assert out.shape == comp.shape and out.dtype == comp.dtype
    assert out.min() >= 0 and out.max() <= 1
    bg = (mask < 0.5).expand_as(comp)
    assert torch.equal(out[bg], comp[bg])
    if name == "composite":
        assert torch.equal(out, comp) and out is not comp
    else:
        assert (out - comp).abs().max() > 0.05


@pytest.mark.parametrize("name", ["reinhard", "histogram"])
def test_foreground_statistics_move_to_the_background(name):
    comp, mask = _scene()
    out = get_baseline(name)(comp, mask)
    for i in range(2):
        fg, bg = mask[i, 0] > 0.5, mask[i, 0] < 0.5
        out_mean, out_std = _lab_stats(out[i], fg)
        bg_mean, bg_std = _lab_stats(comp[i], bg)
        before_mean, _ = _lab_stats(comp[i], fg)
        assert (out_mean - bg_mean).abs().max() < 1.0 < (before_mean - bg_mean).abs().max()
        if name == "reinhard":
            assert torch.allclose(out_std, bg_std, atol=0.3)


@pytest.mark.parametrize("name", ["reinhard", "histogram"])
def test_empty_or_full_mask_returns_the_composite(name):
    comp, _ = _scene()
    for fill in (0.0, 1.0):
        mask = torch.full((2, 1, 16, 16), fill)
        assert torch.equal(get_baseline(name)(comp, mask), comp)


def test_histogram_baseline_is_lab_histogram_matching_with_ties():
    # A background of two flat colours (48 pixels in 2 tie groups) under a graded foreground:
    # the foreground's quantiles fall between the tie groups, where ties decide the output.
    comp = torch.empty(1, 3, 8, 8)
    comp[..., :3, :] = torch.tensor([0.8, 0.5, 0.3])[:, None, None]
    comp[..., 3:6, :] = torch.tensor([0.3, 0.6, 0.7])[:, None, None]
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 6:, :] = 1
    comp[..., 6:, :] = torch.linspace(0.1, 0.9, 16).view(1, 1, 2, 8)
    out = get_baseline("histogram")(comp, mask)
    lab = rgb_to_lab(comp)[0].numpy()
    fg = mask[0, 0].numpy() > 0.5
    for c in range(3):
        lab[c][fg] = match_quantiles(lab[c][fg], lab[c][~fg])
    expected = torch.where(mask > 0.5, lab_to_rgb(torch.from_numpy(lab)[None]), comp)
    assert torch.allclose(out, expected, atol=1e-6)
    assert len(torch.unique(out[0, 0][mask[0, 0] > 0.5])) > 2  # interpolated between the two colours


def test_unknown_baseline_lists_valid_names():
    assert set(BASELINES) == {"composite", "reinhard", "histogram"}
    with pytest.raises(GknetError, match="valid: composite, reinhard, histogram"):
        get_baseline("poisson")
