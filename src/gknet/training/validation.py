"""Validation during training: synthetic validation metrics, real composites scored as the
evaluator scores them, and the rule that makes a checkpoint the best one."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from gknet.errors import GknetError
from gknet.evaluation.metrics import image_metrics


def to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(batch[k].to(device, non_blocking=True) for k in ("composite", "mask", "target"))


@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Mean MSE / fMSE / PSNR (0-255 scale, as the evaluator) over the validation items.

    In float32 whatever the training precision: the score that picks the best checkpoint is the
    one its exported (float32) weights get."""
    was_training = model.training
    model.eval()
    sums = {"mse": 0.0, "fmse": 0.0, "psnr": 0.0}
    count = 0
    for batch in loader:
        composite, mask, target = to_device(batch, device)
        pred = model(composite, mask)
        metrics = image_metrics(pred * 255, target * 255, mask)
        for key in sums:
            sums[key] += float(metrics[key].sum())
        count += len(composite)
    model.train(was_training)
    return {k: v / max(count, 1) for k, v in sums.items()}


def is_better(score: float, best: float | None) -> bool:
    """Whether a validation score (lower is better) makes a new best checkpoint: never a non-finite one."""
    return math.isfinite(score) and (best is None or score < best)


class RealValidation:
    """Real composites with ground truth (an iHarmony4-layout folder), scored as the evaluator does.

    Synthetic validation only tells whether a model learns; real composites decide which
    checkpoint is best. The images are loaded and resized once (evaluation protocol, 256 px),
    and every call scores the model on all of them with the evaluator's
    :func:`gknet.evaluation.protocol.score_batch`. ``score`` is the mean over subsets of the model's fMSE
    as a ratio to the composite's (lower is better; 1 = no change).
    """

    def __init__(self, root: str | Path, subsets: tuple[str, ...], size: int = 256):
        from gknet.data.iharmony4 import IHarmony4
        from gknet.evaluation.protocol import prepare_images

        self.samples = IHarmony4(root, list(subsets), split="test")
        if self.samples.problems:
            path, message = self.samples.problems[0]
            raise GknetError(f"real validation set {root}: {path}: {message}")
        self.items = []
        for index, sample in enumerate(self.samples):
            composite, mask, target = sample.load()
            if target is None:
                raise GknetError(f"real validation set {root}: no target for {sample.composite}")
            comp, fg, tgt = prepare_images(composite, mask, target, size)
            self.items.append({"index": index, "composite": comp, "mask": fg, "target": tgt})
        if not self.items:
            raise GknetError(f"real validation set {root} lists no images for {', '.join(subsets)}")

    def __len__(self) -> int:
        return len(self.items)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, device: torch.device, batch_size: int = 8) -> dict:
        """``{subset: {"n", "mse", "fmse", "psnr", "composite_fmse", "fmse_ratio"}, ..., "score"}``."""
        from gknet.evaluation.metrics import mean_metrics
        from gknet.evaluation.protocol import score_batch

        was_training = model.training
        model.eval()
        rows = []
        for start in range(0, len(self), batch_size):
            rows += score_batch(model, self.items[start : start + batch_size], self.samples, device)
        model.train(was_training)
        result: dict = {}
        for subset in dict.fromkeys(r["subset"] for r in rows):
            group = [r for r in rows if r["subset"] == subset]
            means = mean_metrics(group, ("mse", "fmse", "psnr", "composite_fmse"))
            means["fmse_ratio"] = means["fmse"] / max(means["composite_fmse"], 1e-9)
            result[subset] = means
        result["score"] = float(np.mean([m["fmse_ratio"] for m in result.values()]))
        return result
