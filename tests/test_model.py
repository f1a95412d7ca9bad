from pathlib import Path

import pytest
import torch

from gknet.config import load_config
from gknet.models import build_model
from gknet.models.kpb import KPBlock
from gknet.models.lre import LRE, sinusoidal_2d
from gknet.models.ops import kernel_modulation
from gknet.models.scf import SCF, ConcatFusion, pool_to_at_most
from tests.conftest import tiny_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def inputs(b=2, h=32, w=40):
    mask = torch.zeros(b, 1, h, w)
    mask[:, :, h // 4 : h // 2, w // 3 : w // 2 + 3] = 1
    return torch.rand(b, 3, h, w), mask


def test_lre_any_grid_and_shapes():
    for pos in ("sinusoidal", "learned"):
        lre = LRE(16, 16, layers=2, heads=4, mlp_ratio=2.0, pos=pos)
        for h, w in ((3, 5), (8, 8), (20, 7)):
            out, maps = lre(torch.randn(2, 16, h, w), return_attention=True)
            assert out.shape == (2, 16, h, w)
            assert len(maps) == 2 and maps[0].shape == (2, 4, h * w, h * w)
            torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 4, h * w))


def test_sinusoidal_embedding_distinguishes_positions():
    emb = sinusoidal_2d(16, 4, 5)
    assert emb.shape == (20, 16)
    assert torch.cdist(emb, emb).fill_diagonal_(1.0).min() > 1e-3


def test_scf_matches_equations():
    scf = SCF(channels=8, prev_channels=16, groups=4, kernel_size=3)
    f_e, f_prev = torch.randn(2, 8, 10, 12), torch.randn(2, 16, 5, 6)
    fused, w = scf(f_e, f_prev)
    assert fused.shape == (2, 8, 10, 12)
    assert w["relation"].shape == (2, 4, 4) and w["s_e"].shape == (2, 8)
    # Eq. 2: A = alpha~_KPB alpha~_E^T from the two attention vectors.
    a_e, a_k = scf.att_e(f_e), scf.att_kpb(f_prev)
    torch.testing.assert_close(w["relation"], a_k.view(2, 4, 2) @ a_e.view(2, 4, 2).transpose(1, 2))
    # Eq. 4 with the returned selective weights.
    up = torch.nn.functional.interpolate(
        w["s_kpb"][:, :, None, None] * scf.conv_kpb(f_prev), size=(10, 12), mode="bilinear"
    )
    torch.testing.assert_close(fused, w["s_e"][:, :, None, None] * scf.conv_e(f_e) + up)
    assert ((w["s_e"] > 0) & (w["s_e"] < 1)).all()


@pytest.mark.parametrize("h,w", [(5, 7), (16, 16), (17, 40), (32, 33), (100, 64)])
def test_pool_to_at_most_is_adaptive_average_pooling(h, w):
    """The matrix form SCF's attention vectors use under ONNX export."""
    x = torch.randn(2, 3, h, w)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, (min(h, 16), min(w, 16)))
    torch.testing.assert_close(pool_to_at_most(x, 16), expected, atol=1e-6, rtol=1e-5)
    if max(h, w) <= 16:
        assert torch.equal(pool_to_at_most(x, 16), x)


def test_kpb_kernels_are_the_head_output_plus_the_identity_kernel():
    """The identity is folded into the head's bias: same kernels as adding it afterwards."""
    block = KPBlock(8, 16, 8, kernel_size=3, norm="batch", use_scf=True, scf_groups=4).eval()
    f_e, f_prev = torch.randn(2, 8, 6, 7), torch.randn(2, 16, 3, 4)
    kernels, f_kpb, _ = block(f_e, f_prev)
    identity = torch.zeros(1, 1, 9, 1, 1)
    identity[:, :, 4] = 1
    expected = block.head(f_kpb).view(2, 8, 9, 6, 7) + identity
    torch.testing.assert_close(kernels, expected, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        block.head.weight.zero_()
    assert torch.equal(block(f_e, f_prev)[0], identity.expand(2, 8, 9, 6, 7))


def test_concat_fusion_and_kpb_shapes():
    fused, w = ConcatFusion(8, 16)(torch.randn(1, 8, 6, 6), torch.randn(1, 16, 3, 3))
    assert fused.shape == (1, 8, 6, 6) and w == {}
    block = KPBlock(8, 16, 8, kernel_size=5, norm="batch", use_scf=True, scf_groups=4)
    k, f, _ = block(torch.randn(2, 8, 6, 7), torch.randn(2, 16, 3, 4))
    assert k.shape == (2, 8, 25, 6, 7) and f.shape == (2, 8, 6, 7)


@pytest.mark.parametrize("size", [(97, 131), (32, 32), (5, 9)])
def test_any_input_size(size):
    model = build_model(tiny_config()).eval()
    x, m = inputs(1, *size)
    assert model(x, m).shape == x.shape


def test_outside_mask_unchanged_and_zero_mask_identity():
    model = build_model(tiny_config()).eval()
    x, m = inputs()
    with torch.no_grad():
        out = model(x, m)
        assert torch.equal(out * (1 - m), x * (1 - m))
        assert torch.equal(out[(m == 0).expand_as(x)], x[(m == 0).expand_as(x)])
        assert torch.equal(model(x, torch.zeros_like(m)), x)
        assert out.min() >= 0 and out.max() <= 1


def test_every_parameter_gets_a_gradient():
    variants = (
        tiny_config(),
        tiny_config(use_scf=False),
        tiny_config(lre_pos="learned"),
        tiny_config(use_s2am=True),
    )
    for cfg in variants:
        model = build_model(cfg).train()
        x, m = inputs()
        target = torch.rand_like(x)
        ((model(x, m) - target) ** 2 * m).sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, f"no gradient reaches: {missing}"


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_kernel_heads_equal_the_reference_path(channels_last):
    """Without gradients the kernel heads run fused with the modulation (ops.head_modulation);
    the reference predicts every K whole and applies it with kernel_modulation."""
    from unittest import mock

    from gknet.models import kpb

    model = build_model(tiny_config(kpb_levels=2, widths=(8, 16, 32))).eval()
    x, m = inputs(2, 40, 56)
    if channels_last:
        model, x, m = (t.to(memory_format=torch.channels_last) for t in (model, x, m))
    with torch.no_grad():
        with mock.patch.object(kpb, "head_modulation", wraps=kpb.head_modulation) as fused:
            out = model(x, m)
        assert fused.call_count == 2
        model.fused_heads = False
        reference = model(x, m)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    assert not torch.equal(reference, x)  # the kernels did change the image


def test_kernel_heads_run_whole_off_the_cpu():
    """The banded fused heads are a CPU path; on other devices (here the shape-only "meta"
    device) the kernels are predicted whole and applied by kernel_modulation."""
    from unittest import mock

    from gknet.models import kpb

    model = build_model(tiny_config(kpb_levels=2, widths=(8, 16, 32))).eval().to("meta")
    x, m = (t.to("meta") for t in inputs(1, 32, 32))
    with torch.no_grad(), mock.patch.object(kpb, "head_modulation", wraps=kpb.head_modulation) as fused:
        assert model(x, m).shape == (1, 3, 32, 32)
    assert fused.call_count == 0


def test_fused_kernel_heads_train_like_the_reference_path():
    """With gradients the fused heads save no kernels and recompute them in the backward pass:
    outputs and every parameter's gradient equal the reference path's, in either memory layout
    (the trainer runs channels-last on the CPU)."""
    model = build_model(tiny_config(kpb_levels=2, widths=(8, 16, 32))).train()
    x, m = inputs(2, 40, 56)
    results = []
    contiguous, channels_last = torch.contiguous_format, torch.channels_last
    for fused, layout in ((False, contiguous), (True, contiguous), (True, channels_last)):
        model.fused_heads = fused
        model.to(memory_format=layout).zero_grad()
        out = model(*(t.contiguous(memory_format=layout) for t in (x, m)))
        out.square().mean().backward()
        results.append((out, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (reference, expected), *variants = results
    for out, grads in variants:
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
        assert grads.keys() == expected.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_eval_is_deterministic():
    model = build_model(tiny_config()).eval()
    x, m = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, m), model(x, m))


def test_ablation_switches_change_modules():
    plain = build_model(tiny_config(use_kpb=False, use_lre=False, use_scf=False))
    assert plain.lre is None and len(plain.kpb) == 0
    no_scf = build_model(tiny_config(use_scf=False))
    assert all(isinstance(b.fusion, ConcatFusion) for b in no_scf.kpb)
    full = build_model(tiny_config())
    assert all(isinstance(b.fusion, SCF) for b in full.kpb) and full.lre is not None
    x, m = inputs()
    with torch.no_grad():
        inter = full.eval().trace(x, m)
        assert torch.equal(inter.output, full(x, m))  # the same pass as forward
    assert [(k.kernels.shape[1:3], k.stride) for k in inter.kernels] == [((16, 9), 2), ((8, 9), 1)]
    assert [(s.features.shape[1], s.stride) for s in inter.scf] == [(16, 2), (8, 1)]
    assert len(inter.lre_attention) == 2 and inter.lre_grid == (16, 20) and inter.lre_stride == 2
    assert [f.shape[1] for f in inter.encoder] == [8, 16] and [d.shape[1] for d in inter.decoder] == [16, 8]
    assert inter.size == (32, 40) and torch.equal(inter.output, inter.prediction * m + (1 - m) * x)


def test_kernels_change_the_output():
    model = build_model(tiny_config()).eval()
    x, m = inputs()
    with torch.no_grad():
        before = model(x, m)
        model.kpb[-1].head.bias.add_(0.3)
        assert not torch.allclose(before, model(x, m))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_run_forward(path):
    model = build_model(load_config(path).model).eval()
    x, m = inputs(1, 64, 64)
    with torch.no_grad():
        out = model(x, m)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_scf_selective_factors_eq3_recomputed_by_hand():
    """Eq. 2-3 from the module's parts, with plain loops: A, the N x N relation conv, the factors, S."""
    torch.manual_seed(1)
    n, m, c = 4, 2, 8
    scf = SCF(channels=c, prev_channels=16, groups=n, kernel_size=3)
    f_e, f_prev = torch.randn(2, c, 10, 12), torch.randn(2, 16, 5, 6)
    for b_value in (0.37, 0.0):
        with torch.no_grad():
            scf.b.fill_(b_value)
            _, w = scf(f_e, f_prev)
            a_e, a_k = scf.att_e(f_e).double(), scf.att_kpb(f_prev).double()  # alpha_E, alpha_KPB [B, C]
        weight, bias = scf.relation.weight.detach().double(), scf.relation.bias.detach().double()
        for bi in range(2):
            g_e, g_k = a_e[bi].view(n, m), a_k[bi].view(n, m)  # grouped: n groups of m channels
            # Eq. 2: A = alpha~_KPB alpha~_E^T
            rel = [[sum(g_k[i, t] * g_e[j, t] for t in range(m)) for j in range(n)] for i in range(n)]
            # "N x N convolutions with splitting": one 3x3 conv over A (zero padding) with two output
            # maps, R_KPB (map 0) and R_E (map 1).
            r = [
                [
                    [
                        bias[o]
                        + sum(
                            weight[o, 0, di + 1, dj + 1] * rel[i + di][j + dj]
                            for di in (-1, 0, 1)
                            for dj in (-1, 0, 1)
                            if 0 <= i + di < n and 0 <= j + dj < n
                        )
                        for j in range(n)
                    ]
                    for i in range(n)
                ]
                for o in range(2)
            ]
            # Selective factors: relation-weighted mixtures of the other branch's groups.
            bar_kpb = torch.stack([sum(r[0][i][j] * g_e[j] for j in range(n)) for i in range(n)]).flatten()
            bar_e = torch.stack([sum(r[1][j][i] * g_k[j] for j in range(n)) for i in range(n)]).flatten()
            branches = ((a_e[bi], bar_e, scf.fc_e, "s_e"), (a_k[bi], bar_kpb, scf.fc_kpb, "s_kpb"))
            for alpha, bar, fc, key in branches:
                fc_bar = fc.weight.detach().double() @ bar + fc.bias.detach().double()
                expected = 1 / (1 + torch.exp(-(alpha + b_value * fc_bar)))  # Eq. 3
                torch.testing.assert_close(w[key][bi].double(), expected, rtol=1e-5, atol=1e-6)
        if b_value == 0.0:  # b = 0: the factors are the plain channel attention sigmoid(alpha)
            torch.testing.assert_close(w["s_e"], torch.sigmoid(a_e.float()))


def receptive_radius(cfg) -> int:
    """Upper bound (input pixels) on how far an output pixel of a model without LRE and SCF sees.

    Walks the model's structure: a 3x3 conv at stride s adds s; a 2x2 max pool from stride s
    adds s; bilinear x2 upsampling to stride s adds 2s (the two nearest coarse cells); an
    N x N kernel modulation at stride s adds (N // 2) * s; 1x1 convs add nothing.
    """
    levels, half = len(cfg.widths), cfg.kernel_size // 2
    enc = [2]  # level 0: two 3x3 convs at stride 1
    for i in range(1, levels):
        enc.append(enc[-1] + 2 ** (i - 1) + 2 * 2**i)  # max pool, two 3x3 convs at stride 2**i
    kpb, prev = [], enc[-1]
    for j in range(cfg.kpb_levels):
        s = 2 ** (levels - 1 - j)
        up = prev + (2 * s if j else 0)  # F_KPB^{l-1} upsampled (the deepest block takes F_E^1 itself)
        prev = max(enc[levels - 1 - j], up) + 2 * s  # concat-fusion 3x3 conv, body 3x3 conv
        kpb.append(prev)
    d = enc[-1]
    for j in range(levels):
        s = 2 ** (levels - 1 - j)
        if j:
            d = max(d + 2 * s, enc[levels - 1 - j]) + 2 * s  # upsample, concat the skip, two 3x3 convs
        if j < cfg.kpb_levels:
            d = max(d + half * s, kpb[j])  # kernel modulation with this level's kernels
    return d


def test_lre_gives_the_foreground_a_view_beyond_the_receptive_field():
    """Sec. 3.2: a background patch far from the object changes its harmonization only through the LRE.

    SCF is off in both models: its attention vectors are global averages (a global path of
    their own, see docs/model.md), so the comparison isolates the LRE. BatchNorm is in eval
    mode (training-mode batch statistics would be global too). At random initialisation the
    LRE's effect is small (about 1e-7 here: near-uniform attention, kernels near the identity),
    so the models run in float64, where it stands far above rounding.
    """
    h, w = 16, 96
    composite = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mask = torch.zeros(1, 1, h, w, dtype=torch.float64)
    mask[..., 4:12, 4:12] = 1
    far = composite.clone()
    far[..., :, 80:92] = 1 - far[..., :, 80:92]  # a far background patch, changed
    near = composite.clone()
    near[..., 4:12, 16:20] = 1 - near[..., 4:12, 16:20]  # a near one, 4 px from the object
    outputs = {}
    for use_lre in (True, False):
        model = build_model(tiny_config(use_lre=use_lre, use_scf=False)).double().eval()
        with torch.no_grad():
            outputs[use_lre] = [model(x, mask)[..., 4:12, 4:12] for x in (composite, far, near)]
        if not use_lre:
            radius = receptive_radius(model.cfg)
            assert radius == 16 and radius < 80 - 11  # the far patch lies beyond the receptive field
            # the bound holds: the gradient of a foreground pixel vanishes beyond it
            x = composite.clone().requires_grad_(True)
            model(x, mask)[0, :, 8, 11].sum().backward()
            cols = x.grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
            assert int(cols.max()) - 11 <= radius and 11 - int(cols.min()) <= radius
    base, moved_far, moved_near = outputs[False]
    assert torch.equal(base, moved_far) and not torch.allclose(base, moved_near)
    base, moved_far, _ = outputs[True]
    assert (base - moved_far).abs().max() > 1e-9


def test_kpb_starts_near_not_at_the_identity_kernel():
    block = KPBlock(8, 16, 8, kernel_size=3, norm="batch", use_scf=True, scf_groups=4).eval()
    f_e, f_prev = torch.randn(2, 8, 6, 7), torch.randn(2, 16, 3, 4)
    with torch.no_grad():
        k, f_kpb, _ = block(f_e, f_prev)
        identity = torch.zeros(1, 1, 9, 1, 1)
        identity[:, :, 4] = 1  # 1 at the window centre of every channel
        deviation = k - identity
        # K = identity + head(F_KPB): the identity plus the (0.1-scaled) head's output, bias 0
        torch.testing.assert_close(deviation, block.head(f_kpb).view_as(k))
        assert torch.equal(block.head.bias, torch.zeros_like(block.head.bias))
        assert 0 < deviation.abs().max() < 0.2  # close to the identity, not equal to it
        x = torch.randn(2, 8, 6, 7)
        assert not torch.equal(kernel_modulation(x, k), x)
        block.head.weight.zero_()  # only a zero head gives an exact pass-through
        k, _, _ = block(f_e, f_prev)
        assert torch.equal(kernel_modulation(x, k), x)
