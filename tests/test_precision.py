"""Mixed-precision training (train.precision): the modulation's sums, a step against float32,
and a bfloat16 run that checkpoints, resumes bit for bit and exports float32 weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gknet.config import ConfigError, TrainConfig
from gknet.errors import GknetError
from gknet.inference.checkpoints import export_checkpoint
from gknet.models import build_model
from gknet.models.losses import fn_mse_loss
from gknet.models.ops import kernel_modulation
from gknet.training import train
from gknet.training.precision import resolve_precision
from gknet.training.state import load_state
from tests.conftest import load_script, tiny_config
from tests.train_helpers import checkpoint_tensors, tiny_train_config, write_triplet_folder

CPU = torch.device("cpu")


def test_precision_settings_fail_clearly():
    with pytest.raises(ConfigError, match="train.precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(GknetError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    bf16 = resolve_precision("bf16", CPU)
    assert bf16.dtype is torch.bfloat16 and not bf16.scaler().is_enabled()
    assert resolve_precision("fp32", CPU).dtype is None


def test_modulation_of_bfloat16_inputs_sums_in_float32(one_thread):
    """Products of two bfloat16 numbers are exact in float32, so with float32 sums the forward
    pass and the feature gradient equal float64 arithmetic on the same inputs to ~1e-6;
    bfloat16 sums would be off by ~1e-2. The kernel gradient (one product per value) is
    bfloat16, rounded once (relative error <= 2^-8)."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 4, 9, 11, generator=g).bfloat16().requires_grad_()
    k = torch.randn(2, 4, 9, 9, 11, generator=g).bfloat16().requires_grad_()
    grad_out = torch.randn(2, 4, 9, 11, generator=g)
    out = kernel_modulation(f, k)
    out.backward(grad_out)
    f64, k64 = f.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    expected = kernel_modulation(f64, k64)
    expected.backward(grad_out.double())
    assert out.dtype == torch.float32 and f.grad.dtype == torch.bfloat16 and k.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    # the feature gradient is rounded once to bfloat16 at the end (its input's type)
    torch.testing.assert_close(f.grad.double(), f64.grad, rtol=2**-8, atol=1e-6)
    torch.testing.assert_close(k.grad.double(), k64.grad, rtol=2**-8, atol=1e-6)


def test_bf16_step_matches_float32_within_tolerance(one_thread):
    """One forward + FN-MSE loss + backward under bfloat16 autocast against float32 from the same
    weights: loss within 1%, the whole gradient in the same direction (float32 parameters)."""
    model = build_model(tiny_config()).train()
    g = torch.Generator().manual_seed(1)
    x, target = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    m = torch.zeros(2, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    grads, losses = {}, {}
    for name in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with resolve_precision(name, CPU).autocast():
            pred = model(x, m)
        loss = fn_mse_loss(pred.float(), target, m)
        loss.backward()
        losses[name] = loss.item()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.01)
    assert all(g.dtype == torch.float32 for g in grads["bf16"].values())
    low, high = (torch.cat([g.flatten() for g in grads[name].values()]) for name in ("bf16", "fp32"))
    cosine, error = float(F.cosine_similarity(low, high, dim=0)), float((low - high).norm() / high.norm())
    # bfloat16 keeps 8 bits of each convolution input: on these tiny random models the gradient
    # moves by 11-16% (L2) with or without KPB, a plain U-Net included (cosine 0.987-0.994)
    assert cosine > 0.98 and error < 0.25, (cosine, error)


def test_bf16_run_resumes_bit_identically_and_exports_float32(tmp_path):
    root = write_triplet_folder(tmp_path / "data", count=12, size=40)
    settings = dict(precision="bf16", ckpt_every=3, val_every=3, ema_decay=0.9, warmup_steps=2)
    full = train(tiny_train_config(root, max_steps=6, **settings), tmp_path / "full")
    train(tiny_train_config(root, max_steps=3, **settings), tmp_path / "parts")
    resumed = train(tiny_train_config(root, max_steps=6, **settings), tmp_path / "parts", resume="auto")
    assert full["step"] == resumed["step"] == 6 and full["loss"] == resumed["loss"]
    a = load_state(tmp_path / "full" / "ckpt" / "last.pt")
    b = load_state(tmp_path / "parts" / "ckpt" / "last.pt")
    tensors_a, tensors_b = checkpoint_tensors(a), checkpoint_tensors(b)
    assert tensors_a.keys() == tensors_b.keys()
    assert all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)
    assert {v.dtype for k, v in tensors_a.items() if v.is_floating_point()} == {torch.float32}
    assert a["config"]["train"]["precision"] == "bf16"

    released = load_file(
        export_checkpoint(tmp_path / "full" / "ckpt" / "last.pt", tmp_path / "w.safetensors")
    )
    assert {v.dtype for v in released.values() if v.is_floating_point()} == {torch.float32}
    assert torch.equal(released["head.weight"], a["ema"]["model"]["head.weight"])


def test_gpu_check_script_runs_on_the_cpu(tmp_path, capsys):
    """scripts/gpu_check.py with --device cpu: the same code a GPU machine runs, every precision the
    CPU serves ok, fp16 refused with one clear line (and a non-zero exit)."""
    import json

    import yaml

    from gknet.config import to_dict

    script = load_script("gpu_check")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(to_dict(tiny_train_config(tmp_path))))
    common = ["--device", "cpu", "--config", str(config), "--steps", "3", "--resume-steps", "1"]
    common += ["--size", "32", "--batch", "2", "--out", str(tmp_path / "runs")]
    assert script.main([*common, "--precisions", "fp32", "bf16"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["precision"], r["ok"], r["resumed_to_step"]) for r in lines] == [
        ("fp32", True, 4),
        ("bf16", True, 4),
    ]
    assert all(r["checkpoint_dtypes"] == ["torch.float32"] and r["images_per_s"] > 0 for r in lines)
    assert script.main([*common, "--precisions", "fp16"]) == 1
    assert "needs a CUDA device" in capsys.readouterr().out
