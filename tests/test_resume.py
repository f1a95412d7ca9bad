"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import torch
import yaml

from gknet.cli import main as cli_main
from gknet.config import to_dict
from gknet.training import train
from gknet.training.log import read_log
from gknet.training.state import load_state
from tests.train_helpers import GKNET, checkpoint_tensors, tiny_train_config, write_triplet_folder

STEPS = 30  # 7.5 epochs of 4 steps; the victim dies after the 2nd
KILL_AFTER = 8  # the victim is killed as soon as this step's checkpoint exists


def _wait_for(path, proc, timeout=120.0):
    """Until ``path`` exists and ``last.pt`` beside it has been replaced by it (published after it)."""
    last = path.with_name("last.pt")
    deadline = time.monotonic() + timeout
    while not (path.exists() and last.exists() and os.path.samefile(path, last)):
        assert proc.poll() is None, f"training exited early:\n{proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {path} published as {last} after {timeout} s"
        time.sleep(0.005)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    root = write_triplet_folder(tmp_path / "data", count=12, size=40)
    # Cosine + warmup (scheduler state matters), a weight average, validation in the middle, many
    # epochs of 4 steps.
    cfg = tiny_train_config(
        root,
        max_steps=STEPS,
        schedule="cosine",
        warmup_steps=5,
        val_every=10,
        ckpt_every=4,
        log_every=3,
        ema_decay=0.9,
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))

    victim_out = tmp_path / "victim"
    victim = subprocess.Popen(
        [GKNET, "train", "--config", str(config), "--out", str(victim_out), "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(victim_out / "ckpt" / f"step_{KILL_AFTER:07d}.pt", victim)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = load_state(victim_out / "ckpt" / "last.pt")["step"]
    assert KILL_AFTER <= killed_at < STEPS  # it really died mid-run

    # No --config: the run continues with the config stored in its checkpoint.
    assert cli_main(["train", "--out", str(victim_out), "--resume", "auto"]) == 0
    reference = train(cfg, tmp_path / "reference")

    resumed_state = load_state(victim_out / "ckpt" / "last.pt")
    reference_state = load_state(tmp_path / "reference" / "ckpt" / "last.pt")
    for key in ("step", "epoch", "batch_in_epoch", "scheduler", "best_score"):
        assert resumed_state[key] == reference_state[key], key
    resumed, expected = checkpoint_tensors(resumed_state), checkpoint_tensors(reference_state)
    assert resumed.keys() == expected.keys() and any(k.endswith("exp_avg_sq") for k in resumed)
    assert any(k.startswith("ema.") for k in resumed) and resumed_state["ema"]["updates"] == STEPS
    worst = max((resumed[k].double() - expected[k].double()).abs().max().item() for k in expected)
    assert worst <= 1e-6, worst

    # The log reads as one run: the killed run's records after its checkpoint were dropped.
    train_records, val_records = read_log(victim_out / "log.jsonl")
    steps = [r["step"] for r in train_records]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
    assert [r["val"] for r in val_records][-1] == reference["val"]
    reference_params = dict(reference_state["model"])
    assert not all(
        torch.equal(v, load_state(victim_out / "ckpt" / "step_0000004.pt")["model"][k])
        for k, v in reference_params.items()
    )  # training did move the weights
