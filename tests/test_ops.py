from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from gknet.models import ops
from gknet.models.ops import head_modulation, kernel_modulation, kernel_modulation_unfold


def naive_modulation(features, kernels):
    """Per-pixel loop straight from Eq. 6, zero padding, row-major kernel index."""
    b, c, h, w = features.shape
    n = int(round(kernels.shape[2] ** 0.5))
    r = n // 2
    out = torch.zeros_like(features)
    for y in range(h):
        for x in range(w):
            for k in range(n * n):
                dy, dx = divmod(k, n)
                qy, qx = y + dy - r, x + dx - r
                if 0 <= qy < h and 0 <= qx < w:
                    out[:, :, y, x] += kernels[:, :, k, y, x] * features[:, :, qy, qx]
    return out


@pytest.mark.parametrize("n,h,w", [(1, 4, 5), (3, 7, 9), (5, 6, 11), (7, 9, 8)])
def test_matches_naive_loop(n, h, w):
    f = torch.randn(2, 3, h, w)
    k = torch.randn(2, 3, n * n, h, w)
    expected = naive_modulation(f, k)
    torch.testing.assert_close(kernel_modulation(f, k), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kernel_modulation_unfold(f, k), expected, atol=1e-5, rtol=1e-5)
    with mock.patch("torch.onnx.is_in_onnx_export", return_value=True):  # the plain-op form export traces
        torch.testing.assert_close(kernel_modulation(f, k), expected, atol=1e-5, rtol=1e-5)


def test_index_zero_is_top_left_neighbour():
    f = torch.zeros(1, 1, 3, 3)
    f[0, 0, 0, 0] = 5.0  # top-left pixel
    k = torch.zeros(1, 1, 9, 3, 3)
    k[0, 0, 0, 1, 1] = 2.0  # centre pixel looks at its top-left neighbour
    assert kernel_modulation(f, k)[0, 0, 1, 1].item() == 10.0


def test_identity_kernel_returns_features():
    f = torch.randn(2, 4, 5, 6)
    k = torch.zeros(2, 4, 9, 5, 6)
    k[:, :, 4] = 1
    torch.testing.assert_close(kernel_modulation(f, k), f)


def test_gradcheck_float64():
    f = torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 9, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kernel_modulation, (f, k))


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        kernel_modulation(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 8, 4, 4))
    with pytest.raises(ValueError):
        kernel_modulation(torch.randn(1, 2, 4, 4), torch.randn(1, 3, 9, 4, 4))


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("band", [ops.BAND_ELEMENTS, 1])  # one band / one row per band
def test_head_modulation_equals_head_then_modulation(n, channels_last, band, monkeypatch):
    monkeypatch.setattr(ops, "BAND_ELEMENTS", band)
    features, source = torch.randn(2, 3, 7, 9), torch.randn(2, 5, 7, 9)
    if channels_last:
        features, source = (t.contiguous(memory_format=torch.channels_last) for t in (features, source))
    weight, bias = torch.randn(3 * n * n, 5, 1, 1), torch.randn(3 * n * n)
    kernels = F.conv2d(source, weight, bias).view(2, 3, n * n, 7, 9)
    expected = naive_modulation(features, kernels)
    torch.testing.assert_close(
        head_modulation(features, source, weight, bias, n), expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("band", [ops.BAND_ELEMENTS, 1])
def test_head_modulation_gradcheck_float64(n, band, monkeypatch):
    """The fused backward (kernels recomputed band by band) against finite differences."""
    monkeypatch.setattr(ops, "BAND_ELEMENTS", band)
    f, s = torch.randn(2, 3, 5, 4, dtype=torch.float64), torch.randn(2, 4, 5, 4, dtype=torch.float64)
    w, b = torch.randn(3 * n * n, 4, 1, 1, dtype=torch.float64), torch.randn(3 * n * n, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (f, s, w, b))
    assert torch.autograd.gradcheck(lambda *t: head_modulation(*t, n), inputs)


def test_head_modulation_gradients_of_features_alone():
    """Only the features need a gradient (a frozen head): equal to the unfused op's."""
    f = torch.randn(1, 3, 6, 5, requires_grad=True)
    s, w, b = torch.randn(1, 4, 6, 5), torch.randn(27, 4, 1, 1), torch.randn(27)
    (grad,) = torch.autograd.grad(head_modulation(f, s, w, b, 3).square().sum(), f)
    f2 = f.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(
        kernel_modulation(f2, F.conv2d(s, w, b).view(1, 3, 9, 6, 5)).square().sum(), f2
    )
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-5)


def test_head_modulation_sums_in_float32_under_bfloat16_autocast():
    features, source = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    weight, bias = torch.randn(36, 4, 1, 1), torch.randn(36)
    expected = head_modulation(features, source, weight, bias, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head_modulation(features, source, weight, bias, 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_head_modulation_rejects_a_head_of_another_width():
    with pytest.raises(ValueError, match="do not fit"):
        head_modulation(
            torch.randn(1, 3, 4, 4), torch.randn(1, 5, 4, 4), torch.randn(26, 5, 1, 1), torch.randn(26), 3
        )
