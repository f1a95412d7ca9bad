"""The weight average (train.ema_decay): the update rule, and that training validates and exports it."""

from __future__ import annotations

import pytest
import torch

from gknet.cli import main as cli_main
from gknet.evaluation.metrics import image_metrics
from gknet.inference.release import load_release
from gknet.models import build_model
from gknet.training import train
from gknet.training.data import build_datasets
from gknet.training.ema import WeightAverage, ema_decay_at
from gknet.training.log import read_log
from gknet.training.state import load_state
from tests.conftest import tiny_config
from tests.train_helpers import tiny_train_config, write_triplet_folder


def test_decay_warms_up_then_holds():
    assert [ema_decay_at(0.9, n) for n in (1, 2, 80, 10_000)] == pytest.approx([2 / 11, 3 / 12, 0.9, 0.9])
    assert ema_decay_at(0.5, 1) == pytest.approx(2 / 11) and ema_decay_at(0.5, 9) == 0.5


def test_average_follows_the_naive_formula_and_copies_integer_buffers():
    torch.manual_seed(0)
    model = build_model(tiny_config())
    average = WeightAverage(model, decay=0.6)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    expected = {k: v.double() for k, v in start.items() if v.is_floating_point()}
    for n in range(1, 5):
        with torch.no_grad():
            for value in model.state_dict().values():
                if value.is_floating_point():
                    value.add_(torch.randn_like(value))
                else:
                    value.add_(1)
        average.update(model)
        d = min(0.6, (1 + n) / (10 + n))
        expected = {k: d * v + (1 - d) * model.state_dict()[k].double() for k, v in expected.items()}
    state = average.model.state_dict()
    for name, value in expected.items():
        assert torch.allclose(state[name].double(), value, atol=1e-6), name
    counters = [k for k, v in start.items() if not v.is_floating_point()]
    assert counters and all(torch.equal(state[k], start[k] + 4) for k in counters)
    assert not any(p.requires_grad for p in average.model.parameters()) and not average.model.training
    assert average.updates == 4


def test_training_validates_keeps_and_exports_the_average(tmp_path):
    root = write_triplet_folder(tmp_path / "data", count=12, size=40)
    cfg = tiny_train_config(root, max_steps=6, val_every=3, ckpt_every=3, ema_decay=0.8)
    out = tmp_path / "run"
    result = train(cfg, out)
    state = load_state(out / "ckpt" / "last.pt")
    averaged = state["ema"]["model"]
    assert state["ema"]["updates"] == 6
    assert not torch.equal(averaged["head.weight"], state["model"]["head.weight"])

    # The logged validation is the average's, not the last weights'.
    _, val_set = build_datasets(cfg.data, cfg.train)
    items = [val_set[i] for i in range(len(val_set))]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("composite", "mask", "target")}

    def fmse(weights: dict) -> float:
        model = build_model(cfg.model)
        model.load_state_dict(weights)
        with torch.no_grad():
            pred = model.eval()(batch["composite"], batch["mask"])
        return float(image_metrics(pred * 255, batch["target"] * 255, batch["mask"])["fmse"].mean())

    _, val_records = read_log(out / "log.jsonl")
    assert val_records[-1]["step"] == 6
    assert result["val"]["fmse"] == pytest.approx(fmse(averaged), rel=1e-5)
    assert fmse(state["model"]) != pytest.approx(result["val"]["fmse"], rel=1e-3)

    assert cli_main(["export", str(out / "ckpt" / "last.pt"), "-o", str(tmp_path / "m.safetensors")]) == 0
    released, _, meta = load_release(tmp_path / "m.safetensors")
    assert meta["weights"] == "moving average"
    assert all(torch.equal(v, averaged[k]) for k, v in released.state_dict().items())
