"""Training that goes wrong: a diverging run, a non-finite validation, SIGTERM, a killed run's temporaries."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time

import pytest
import torch
import yaml
from safetensors.torch import save_file

from gknet.cli import main
from gknet.config import to_dict
from gknet.errors import GknetError
from gknet.inference.release import load_release, save_release
from gknet.models import build_model
from gknet.training import train
from gknet.training.state import load_state, save_state
from tests.train_helpers import GKNET, tiny_train_config, write_iharmony4_tree, write_triplet_folder


@pytest.fixture
def config(tmp_path):
    root = write_triplet_folder(tmp_path / "data", count=8, size=40)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(to_dict(tiny_train_config(root, max_steps=6, val_every=2))))
    return path


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("gknet ")]
    assert len(lines) == 1 and lines[0].startswith(f"gknet {command}: error: "), err
    assert "Traceback" not in err and "warning" not in err, err
    return lines[0]


def test_a_diverging_run_stops_at_the_first_non_finite_loss(config, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--set", "train.lr=1e12", "--set", "train.warmup_steps=0"]) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    records = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    diverged = [r for r in records if r.get("event") == "diverged"]
    assert len(diverged) == 1 and f"the loss is nan at step {diverged[0]['step']} " in line
    # Every step before it had a finite loss, and nothing after it ran.
    losses = [r["loss"] for r in records if "loss" in r and "event" not in r]
    assert all(math.isfinite(v) for v in losses) and records[-1] is diverged[0]
    best = out / "ckpt" / "best.pt"
    assert not best.exists() or math.isfinite(load_state(best)["best_score"])


def test_a_non_finite_validation_never_becomes_the_best_checkpoint(tmp_path, monkeypatch, capsys):
    root = write_triplet_folder(tmp_path / "data", count=8, size=40)
    nan = {"mse": math.nan, "fmse": math.nan, "psnr": math.nan}
    monkeypatch.setattr("gknet.training.loop.validate", lambda *args, **kwargs: dict(nan))
    result = train(tiny_train_config(root, max_steps=4, val_every=2), tmp_path / "run")
    assert result["best_score"] is None and not (tmp_path / "run" / "ckpt" / "best.pt").exists()
    assert "validation at step 2 is not finite: not kept as best.pt" in capsys.readouterr().out


def test_a_non_finite_real_validation_score_never_becomes_the_best(tmp_path, monkeypatch, capsys):
    import dataclasses

    from gknet.training.validation import RealValidation

    real = write_iharmony4_tree(tmp_path / "real", {"HFlickr": 2})
    root = write_triplet_folder(tmp_path / "data", count=8, size=40)
    cfg = tiny_train_config(root, max_steps=6, val_every=2)
    data = dataclasses.replace(cfg.data, real_val=str(real), real_val_subsets=("HFlickr",))
    cfg = dataclasses.replace(cfg, data=data)
    scores = iter([math.nan, 0.5, math.inf])  # steps 2, 4, 6: only step 4's is finite
    monkeypatch.setattr(RealValidation, "__call__", lambda *args, **kwargs: {"score": next(scores)})
    result = train(cfg, tmp_path / "run")
    best = load_state(tmp_path / "run" / "ckpt" / "best.pt")
    assert result["best_score"] == 0.5 and best["step"] == 4 and best["select_on"] == "real_val.score"
    out = capsys.readouterr().out
    assert "validation at step 2 is not finite" in out and "validation at step 6 is not finite" in out


def test_export_and_loading_refuse_non_finite_weights(config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--device", "cpu"]) == 0
    state = load_state(out / "ckpt" / "last.pt")
    state["model"]["head.weight"][0, 0] = math.nan
    save_state(state, tmp_path / "nan.pt")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "nan.pt"), "-o", str(tmp_path / "nan.safetensors")]) == 2
    assert "non-finite values (NaN or infinity) in head.weight" in one_error_line(
        capsys.readouterr().err, "export"
    )
    assert not list(tmp_path.glob("nan.safetensors*")) and not list(tmp_path.glob("nan.json"))

    cfg = tiny_train_config(tmp_path).model
    model = build_model(cfg)
    with torch.no_grad():
        model.head.bias.fill_(math.inf)
    with pytest.raises(GknetError, match="non-finite"):
        save_release(model, cfg, tmp_path / "inf.safetensors")
    good = save_release(build_model(cfg), cfg, tmp_path / "good.safetensors")
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(good))  # a release file whose tensors were replaced by broken ones
    with pytest.raises(GknetError, match="weights .* holds non-finite values"):
        load_release(good)


def test_sigterm_stops_training_like_ctrl_c(config, tmp_path):
    yaml_cfg = yaml.safe_load(config.read_text())
    yaml_cfg["train"].update(max_steps=100_000, epochs=100_000, ckpt_every=1)
    config.write_text(yaml.safe_dump(yaml_cfg))
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [GKNET, "train", "--config", str(config), "--out", str(out), "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list((out / "ckpt").glob("step_0000003.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert "gknet train: interrupted (SIGTERM)" in err.splitlines()
    assert not list(out.rglob("*.tmp"))


def test_the_next_run_removes_a_killed_runs_temporaries(config, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--set", "train.max_steps=2"]) == 0
    ckpt = out / "ckpt"
    # What a run killed mid-write leaves: gknet.io.atomic's .NAME.<12 hex>.tmp files.
    stale = [ckpt / ".last.pt.0123456789ab.tmp", ckpt / ".step_0000004.pt.ba9876543210.tmp"]
    stale.append(out / ".log.jsonl.00000000abcd.tmp")
    kept = [out / "notes.tmp", out / ".someone_elses.txt.0123456789ab.tmp"]
    for path in stale + kept:
        path.write_bytes(b"half a checkpoint")
    assert main([*args, "--resume", "auto", "--set", "train.max_steps=4"]) == 0
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
    assert load_state(ckpt / "last.pt")["step"] == 4
