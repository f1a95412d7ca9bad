import pytest
import torch

from gknet.baselines import BASELINES, _match_values, get_baseline
from gknet.color import rgb_to_lab
from gknet.errors import GknetError


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


def test_histogram_matching_values_by_hand():
    # equally sized sets map rank to rank
    out = _match_values(torch.tensor([3.0, 0.0, 2.0, 1.0]), torch.tensor([40.0, 10.0, 30.0, 20.0]))
    assert out.tolist() == [40.0, 10.0, 30.0, 20.0]
    # ties share the CDF value of the tie's upper end: q = 2/3 -> 2nd of 3 sorted refs, q = 1 -> last
    out = _match_values(torch.tensor([5.0, 5.0, 7.0]), torch.tensor([60.0, 0.0, 30.0]))
    assert out.tolist() == pytest.approx([30.0, 30.0, 60.0])
    # more reference values: q = 1/2 -> position 1.0 of 4 sorted refs (1-based 2/4)
    out = _match_values(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 10.0, 20.0, 30.0]))
    assert out.tolist() == pytest.approx([10.0, 30.0])


def test_unknown_baseline_lists_valid_names():
    assert set(BASELINES) == {"composite", "reinhard", "histogram"}
    with pytest.raises(GknetError, match="valid: composite, reinhard, histogram"):
        get_baseline("poisson")
