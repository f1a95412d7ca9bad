"""gknet.color.histogram.match_quantiles against a naive reference, by hand and against scikit-image."""

import numpy as np
import pytest

from gknet.color.histogram import match_quantiles


def _naive(source, reference):
    """Literal definition: quantile q of a value = share of source values <= it; the distinct
    reference values u sit at the share of reference values <= u; linear in between, clamped."""
    points = sorted({(sum(r <= u for r in reference) / len(reference), u) for u in reference})
    out = []
    for v in source:
        q = sum(s <= v for s in source) / len(source)
        if q <= points[0][0]:
            out.append(points[0][1])
            continue
        for (q0, u0), (q1, u1) in zip(points[:-1], points[1:], strict=True):
            if q0 < q <= q1:
                out.append(u0 + (u1 - u0) * (q - q0) / (q1 - q0))
                break
    return np.array(out)


def test_matches_the_naive_reference_with_ties_on_both_sides():
    rng = np.random.default_rng(0)
    for n, m, levels in [(40, 25, 6), (7, 60, 3), (50, 50, 50), (1, 9, 2), (12, 1, 4)]:
        source = rng.integers(0, levels, n) / levels + rng.integers(0, 2) * 0.5
        reference = rng.normal(0, 1, m).round(1)  # rounding makes reference ties
        assert np.allclose(match_quantiles(source, reference), _naive(source, reference), atol=1e-12)


def test_values_by_hand():
    # equally sized sets without ties map rank to rank
    assert match_quantiles(np.array([3.0, 0.0, 2.0, 1.0]), np.array([40.0, 10.0, 30.0, 20.0])).tolist() == [
        40.0,
        10.0,
        30.0,
        20.0,
    ]
    # source ties share the quantile of the tie's upper end: q = 2/3 -> 2nd of 3 refs, q = 1 -> last
    assert match_quantiles(np.array([5.0, 5.0, 7.0]), np.array([60.0, 0.0, 30.0])).tolist() == [30, 30, 60]
    # more reference values: q = 1/2 -> the 2nd of 4 sorted refs
    assert match_quantiles(np.array([1.0, 2.0]), np.array([0.0, 10.0, 20.0, 30.0])).tolist() == [10, 30]
    # a reference tie is one point at its upper end (3/4, 5): q = 1/2 lies between (1/4, 0) and it
    out = match_quantiles(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 5.0, 5.0, 10.0]))
    assert out.tolist() == [0.0, 2.5, 5.0, 10.0]


def test_agrees_with_scikit_image():
    exposure = pytest.importorskip("skimage.exposure")
    source = np.array([[0.2, 0.2, 0.5], [0.9, 0.5, 0.2]])
    reference = np.array([[0.1, 0.1, 0.1, 0.4], [0.4, 0.8, 0.8, 1.0]])
    expected = exposure.match_histograms(source, reference)
    assert np.allclose(match_quantiles(source.ravel(), reference.ravel()).reshape(source.shape), expected)
