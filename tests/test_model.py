from pathlib import Path

import pytest
import torch

from gknet.config import load_config
from gknet.models import build_model
from gknet.models.kpb import KPBlock
from gknet.models.lre import LRE, sinusoidal_2d
from gknet.models.scf import SCF, ConcatFusion
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
        tiny_config(), tiny_config(use_scf=False), tiny_config(lre_pos="learned"), tiny_config(use_s2am=True)
    )
    for cfg in variants:
        model = build_model(cfg).train()
        x, m = inputs()
        target = torch.rand_like(x)
        ((model(x, m) - target) ** 2 * m).sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, f"no gradient reaches: {missing}"


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
    _, inter = full(*inputs(), return_intermediates=True)
    assert [k.shape[1:3] for k in inter["kernels"]] == [(16, 9), (8, 9)]
    assert len(inter["lre_attention"]) == 2


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
