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


def _forward(features: torch.Tensor, kernels: torch.Tensor, n: int) -> torch.Tensor:
    r = n // 2
    h, w = features.shape[-2:]
    padded = F.pad(features, (r, r, r, r))
    out = torch.empty_like(features)
    for k in range(n * n):
        dy, dx = divmod(k, n)
        shifted = padded[:, :, dy : dy + h, dx : dx + w]
        if k == 0:
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
            padded = F.pad(features, (r, r, r, r))
            grad_k = torch.empty_like(kernels)
            for k in range(n * n):
                dy, dx = divmod(k, n)
                torch.mul(grad_out, padded[:, :, dy : dy + h, dx : dx + w], out=grad_k[:, :, k])
        if ctx.needs_input_grad[0]:
            grad_padded = grad_out.new_zeros(*grad_out.shape[:2], h + 2 * r, w + 2 * r)
            for k in range(n * n):
                dy, dx = divmod(k, n)
                grad_padded[:, :, dy : dy + h, dx : dx + w].addcmul_(grad_out, kernels[:, :, k])
            grad_f = grad_padded[:, :, r : r + h, r : r + w]
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


def kernel_modulation_unfold(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Straightforward ``unfold`` implementation of :func:`kernel_modulation` (the benchmark reference)."""
    b, c, h, w = features.shape
    n = int(round(kernels.shape[2] ** 0.5))
    patches = F.unfold(features, n, padding=n // 2).view(b, c, n * n, h, w)
    return (patches * kernels).sum(dim=2)
