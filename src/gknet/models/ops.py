"""Harmony kernel modulation (paper Eqs. 5-6): the one hot op of GKNet.

``out[b, c, p] = sum_{q in N(p)} K[b, c, k(p - q), p] * F[b, c, q]``

with an N x N neighbourhood, zero padding and the kernel index ``k`` in row-major order
over the window: index 0 multiplies the top-left neighbour ``p + (-r, -r)``, index
``N*N // 2`` the pixel itself, ``r = N // 2``.

Implementation: instead of ``unfold`` (which materialises all N*N shifted copies of the
features, N*N x the feature memory), we loop over the N*N window offsets -- not over
pixels -- and accumulate ``K[:, :, k] * shifted(F)`` into the output in place. Each shifted
copy is a view into one zero-padded copy of F, so a call needs:

- output: B*C*H*W values, padded features: B*C*(H+N-1)*(W+N-1) values,

That is about 2x the feature map (the products are accumulated in place with ``addcmul_``)
against (N*N + 1)x for unfold. Training saves only F and K, which exist anyway; the
backward pass writes dK once and accumulates dF in one padded buffer.

The model computes the kernels where they are used: :func:`head_modulation` runs the 1x1
kernel head and the modulation band by band, so the C*N*N kernel maps are never written out
whole (they outgrow the cache from about 128 x 128 pixels on) and each band's kernels are
applied while still in cache; its backward pass recomputes them band by band the same way.

Under ONNX export (``torch.onnx.is_in_onnx_export()``) the same sum is written with plain
out-of-place slices, multiplications and additions (:func:`_forward_plain`): no custom
autograd Function, no ``out=`` or in-place writes, and slice bounds that follow the
exported graph's dynamic height and width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(features: torch.Tensor, kernels: torch.Tensor) -> int:
    """Validate shapes; return N."""
    if features.dim() != 4 or kernels.dim() != 5:
        raise ValueError(
            f"expected features [B,C,H,W] and kernels [B,C,N*N,H,W], got {tuple(features.shape)} "
            f"and {tuple(kernels.shape)}"
        )
    b, c, h, w = features.shape
    n = int(round(kernels.shape[2] ** 0.5))
    if n * n != kernels.shape[2] or n % 2 == 0 or kernels.shape[:2] != (b, c) or kernels.shape[3:] != (h, w):
        raise ValueError(
            f"kernels {tuple(kernels.shape)} do not match features {tuple(features.shape)} "
            "with an odd N x N window"
        )
    return n


def accumulation_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32 for sums of bfloat16 / float16 products (mixed precision), else the inputs' type."""
    dtype = torch.promote_types(tensors[0].dtype, tensors[-1].dtype)
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def _forward(features: torch.Tensor, kernels: torch.Tensor, n: int) -> torch.Tensor:
    r = n // 2
    h, w = features.shape[-2:]
    padded = F.pad(features, (r, r, r, r))
    out = torch.empty_like(features, dtype=accumulation_dtype(features, kernels))
    # mul(out=) would round a bfloat16 product to bfloat16; addcmul_ computes in the output's type
    widened = out.dtype != torch.promote_types(features.dtype, kernels.dtype)
    if widened:
        out.zero_()
    for k in range(n * n):
        dy, dx = divmod(k, n)
        shifted = padded[:, :, dy : dy + h, dx : dx + w]
        if k == 0 and not widened:
            torch.mul(kernels[:, :, k], shifted, out=out)
        else:
            out.addcmul_(kernels[:, :, k], shifted)
    return out


def _forward_plain(features: torch.Tensor, kernels: torch.Tensor, n: int) -> torch.Tensor:
    """The sum of :func:`_forward` in the same order, out of place (what ONNX export traces)."""
    r = n // 2
    h, w = features.shape[-2:]
    padded = F.pad(features, (r, r, r, r))
    out = kernels[:, :, 0] * padded[:, :, :h, :w]
    for k in range(1, n * n):
        dy, dx = divmod(k, n)
        out = out + kernels[:, :, k] * padded[:, :, dy : dy + h, dx : dx + w]
    return out


class _KernelModulation(torch.autograd.Function):
    """Explicit backward: autograd through N*N slices would allocate and zero-fill a full-size
    gradient buffer per slice (N*N times the kernels' size); here each gradient is written once."""

    @staticmethod
    def forward(ctx, features, kernels, n):
        ctx.save_for_backward(features, kernels)
        ctx.n = n
        return _forward(features, kernels, n)

    @staticmethod
    def backward(ctx, grad_out):
        features, kernels = ctx.saved_tensors
        n = ctx.n
        r = n // 2
        h, w = features.shape[-2:]
        grad_f = grad_k = None
        if ctx.needs_input_grad[1]:
            # one product per value, in the wider of the two types, rounded once to the kernels' type
            padded = F.pad(features, (r, r, r, r))
            grad_k = torch.empty_like(kernels)
            for k in range(n * n):
                dy, dx = divmod(k, n)
                torch.mul(grad_out, padded[:, :, dy : dy + h, dx : dx + w], out=grad_k[:, :, k])
        if ctx.needs_input_grad[0]:
            # a sum of N*N products per value: accumulated in float32 under mixed precision
            acc = accumulation_dtype(features, kernels)
            grad_padded = grad_out.new_zeros(*grad_out.shape[:2], h + 2 * r, w + 2 * r, dtype=acc)
            for k in range(n * n):
                dy, dx = divmod(k, n)
                grad_padded[:, :, dy : dy + h, dx : dx + w].addcmul_(grad_out, kernels[:, :, k])
            grad_f = grad_padded[:, :, r : r + h, r : r + w].to(features.dtype)
        return grad_f, grad_k, None


def kernel_modulation(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Apply per-pixel, per-channel N x N kernels to ``features``.

    features: [B, C, H, W]; kernels: [B, C, N*N, H, W] with N odd. Returns [B, C, H, W].
    """
    n = _check(features, kernels)
    if torch.onnx.is_in_onnx_export():
        return _forward_plain(features, kernels, n)
    if torch.is_grad_enabled() and (features.requires_grad or kernels.requires_grad):
        return _KernelModulation.apply(features, kernels, n)
    return _forward(features, kernels, n)


# Elements of one band's kernels (4 MiB in float32): large enough for both threads of a
# 2-core machine to share each band's ops, small enough to stay in cache.
BAND_ELEMENTS = 2**20


def _bands(b: int, h: int, w: int, c: int, taps: int):
    """Row ranges (y0, y1) of about BAND_ELEMENTS kernel values each."""
    rows = max(1, min(h, BAND_ELEMENTS // (taps * c * w * b)))
    for y0 in range(0, h, rows):
        yield y0, min(y0 + rows, h)


def _padded(features: torch.Tensor, r: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, H + 2r, W + 2r, C]: the features pixel-major, zero-padded by r."""
    b, c, h, w = features.shape
    padded = features.new_zeros(b, h + 2 * r, w + 2 * r, c, dtype=dtype)
    padded[:, r : r + h, r : r + w] = features.permute(0, 2, 3, 1)
    return padded


def _windows(padded: torch.Tensor, y0: int, y1: int, w: int, n: int) -> torch.Tensor:
    """[B, y1 - y0, W, N, N, C]: every output pixel's N x N window, a strided view (no copy)."""
    s_b, s_h, s_w, _ = padded.stride()
    shape = (padded.shape[0], y1 - y0, w, n, n, padded.shape[3])
    return padded[:, y0:].as_strided(shape, (s_b, s_h, s_w, s_h, s_w, 1))


def _band_kernels(src, rows_first, bias, y0, y1, n) -> torch.Tensor:
    """The kernel head on rows y0:y1 of the pixel-major source: [B, y1 - y0, W, N, N, C]."""
    b, _, w, c_in = src.shape
    kernels = torch.addmm(bias, src[:, y0:y1].reshape(-1, c_in), rows_first)
    return kernels.view(b, y1 - y0, w, n, n, -1)


def _operands(features, source, rows_first, bias, n):
    """(padded features, pixel-major source [B, H, W, C_in], head weights, bias), all in the
    accumulation type: what the forward pass and the backward pass both compute with."""
    dtype = accumulation_dtype(features, source)
    src = source.to(dtype).permute(0, 2, 3, 1)  # a view when channels-last
    return _padded(features, n // 2, dtype), src, rows_first.to(dtype), bias.to(dtype)


def _head_forward(features, source, rows_first, bias, n) -> torch.Tensor:
    b, c, h, w = features.shape
    padded, src, rows_first, bias = _operands(features, source, rows_first, bias, n)
    out = torch.empty(b, h, w, c, dtype=padded.dtype, device=features.device)
    for y0, y1 in _bands(b, h, w, c, n * n):
        kernels = _band_kernels(src, rows_first, bias, y0, y1, n)
        torch.sum(kernels.mul_(_windows(padded, y0, y1, w, n)), dim=(3, 4), out=out[:, y0:y1])
    return out


class _HeadModulation(torch.autograd.Function):
    """Training through the fused head: only the features and the head's input are saved; the
    backward pass recomputes each band's kernels (one more 1x1 head) instead of writing and
    reading the C*N*N maps and their gradient whole."""

    @staticmethod
    def forward(ctx, features, source, rows_first, bias, n):
        ctx.save_for_backward(features, source, rows_first, bias)
        ctx.n = n
        return _head_forward(features, source, rows_first, bias, n)

    @staticmethod
    def backward(ctx, grad_out):  # grad_out: [B, H, W, C]
        features, source, rows_first, bias = ctx.saved_tensors
        n, (b, c, h, w), c_in = ctx.n, features.shape, source.shape[1]
        need_f, need_head = ctx.needs_input_grad[0], any(ctx.needs_input_grad[1:4])
        padded, src, weights, shift = _operands(features, source, rows_first, bias, n)
        r, grad = n // 2, grad_out.to(padded.dtype)
        grad_padded = torch.zeros_like(padded) if need_f else None
        grad_src = src.new_empty(b, h, w, c_in) if need_head else None
        grad_rows, grad_bias = torch.zeros_like(weights), torch.zeros_like(shift)
        for y0, y1 in _bands(b, h, w, c, n * n):
            g = grad[:, y0:y1, :, None, None, :]  # [B, rows, W, 1, 1, C]
            if need_head:  # dK = dOut x window; the head's gradients follow from dK
                window = _windows(padded, y0, y1, w, n)
                grad_k = torch.mul(window, g, out=padded.new_empty(window.shape)).view(-1, n * n * c)
                grad_rows.addmm_(src[:, y0:y1].reshape(-1, c_in).t(), grad_k)
                grad_bias += grad_k.sum(0)
                grad_src[:, y0:y1] = (grad_k @ weights.t()).view(b, y1 - y0, w, c_in)
            if need_f:  # dF: each tap's K x dOut added back where that tap read its feature
                kernels = _band_kernels(src, weights, shift, y0, y1, n).mul_(g)
                for dy in range(n):
                    for dx in range(n):
                        grad_padded[:, y0 + dy : y1 + dy, dx : dx + w] += kernels[:, :, :, dy, dx]
        grad_f = None
        if need_f:
            grad_f = grad_padded[:, r : r + h, r : r + w].permute(0, 3, 1, 2).to(features.dtype)
        if not need_head:
            return grad_f, None, None, None, None
        grad_s = grad_src.permute(0, 3, 1, 2).to(source.dtype)
        return grad_f, grad_s, grad_rows.to(rows_first.dtype), grad_bias.to(bias.dtype), None


def head_modulation(
    features: torch.Tensor, source: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n: int
) -> torch.Tensor:
    """``kernel_modulation(features, conv1x1(source, weight, bias).view(B, C, N*N, H, W))``
    computed band by band, with or without gradients.

    features: [B, C, H, W]; source: [B, C_in, H, W], the map the 1x1 head reads; weight:
    [C*N*N, C_in, 1, 1] with row ``c * N*N + k`` for tap k of channel c; bias: [C*N*N].
    Works in pixel-major (channels-last) order: the head's rows are reordered tap-major, so a
    band's kernels come out of one matrix product as [pixels, N, N, C] and every tap is a
    contiguous run of channels, multiplied with a strided view of the padded features (no
    copies of the window). Products and sums are float32 under mixed precision. Returns a
    channels-last [B, C, H, W] tensor.
    """
    b, c, h, w = features.shape
    taps, c_in = n * n, source.shape[1]
    if weight.shape[:2] != (c * taps, c_in) or source.shape[-2:] != (h, w) or source.shape[0] != b:
        raise ValueError(
            f"head {tuple(weight.shape)} and source {tuple(source.shape)} do not fit "
            f"features {tuple(features.shape)} with an N = {n} window"
        )
    with torch.autocast(features.device.type, enabled=False):
        rows_first = weight.view(c, taps, c_in).transpose(0, 1).reshape(taps * c, c_in).t()
        bias = bias.view(c, taps).t().reshape(-1)
        inputs = (features, source, rows_first, bias)
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            out = _HeadModulation.apply(*inputs, n)
        else:
            out = _head_forward(*inputs, n)
    return out.permute(0, 3, 1, 2)


def kernel_modulation_unfold(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Straightforward ``unfold`` implementation of :func:`kernel_modulation` (the benchmark reference)."""
    b, c, h, w = features.shape
    n = int(round(kernels.shape[2] ** 0.5))
    patches = F.unfold(features, n, padding=n // 2).view(b, c, n * n, h, w)
    return (patches * kernels).sum(dim=2)
