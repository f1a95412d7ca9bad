"""A running average of the weights (``train.ema_decay``), validated and exported instead of them.

Checkpoints of one run differ a lot on a few real composites (real_val subsets of 3-10 images
moved by up to 0.3 in fMSE ratio between checkpoints 250 steps apart): the weights of
one step carry the noise of the last batches, BatchNorm's running statistics included. An
exponential moving average over the steps smooths that out, so the best checkpoint is picked
among less noisy models. Every floating-point tensor of the state dict (parameters and
BatchNorm statistics) is averaged; integer buffers (batch counters) are copied.
"""

from __future__ import annotations

import copy

import torch


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (1-based): ``min(decay, (1 + n) / (10 + n))``, so the
    first updates follow the weights instead of remembering the initial ones for ~1/(1-decay) steps."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """``average = d * average + (1 - d) * weights`` after every optimiser step (d: :func:`ema_decay_at`)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - ema_decay_at(self.decay, self.updates)
        averaged = self.model.state_dict()
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                averaged[name].lerp_(value, weight)
            else:
                averaged[name].copy_(value)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]
