"""The evaluation protocol: methods scored on resized iHarmony4 triplets, per image and aggregated.

Protocol (DoveNet / iDIH, used by the paper; see docs/evaluation.md):
1. composite, target and mask are resized to 256x256 with Pillow's bilinear filter on the
   8-bit images (the mask as 8-bit grayscale); the mask is then binarised as ``/255 > 0.5``;
2. the method runs on the resized composite (float [0, 1]) with the binarised mask;
3. its output is scaled to 0-255 (float, not rounded), clamped, and scored against the
   resized target with :func:`gknet.evaluation.metrics.image_metrics`;
4. means over images per subset, over every image (ALL) and per foreground-ratio bucket.
The composite itself is scored in the same pass, so each method is also reported as a
ratio to the composite measured under exactly the same resizing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from gknet.data.samples import SampleDataset
from gknet.errors import GknetError
from gknet.evaluation.baselines import Method, get_baseline
from gknet.evaluation.metrics import fg_bucket, image_metrics, ratio_to_reference, summarize
from gknet.evaluation.restraint import restraint_summary
from gknet.runtime.device import resolve_device

EVAL_SIZE = 256
METRICS = ("mse", "psnr", "fmse")


def load_method(
    baseline: str | None = None, weights: str | None = None, device: str | torch.device = "auto"
) -> tuple[Method, str]:
    """(method, name) for a baseline name, or release weights (a shipped name or a path).

    Weights are run through :class:`gknet.inference.harmonizer.Harmonizer`, exactly as users run them.
    """
    if (baseline is None) == (weights is None):
        raise GknetError("choose exactly one of a baseline or weights")
    if baseline is not None:
        return get_baseline(baseline), baseline
    from gknet.inference.harmonizer import Harmonizer

    harmonizer = Harmonizer.from_pretrained(weights, device=device)
    return harmonizer.harmonize_tensor, harmonizer.name


def prepare_images(
    composite: Image.Image, mask: Image.Image, target: Image.Image, size: int = EVAL_SIZE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Protocol step 1: uint8 composite [3,S,S], bool mask [1,S,S], uint8 target [3,S,S]."""

    def resized(img: Image.Image) -> np.ndarray:
        return np.asarray(img.resize((size, size), Image.BILINEAR))

    comp, tgt = (torch.from_numpy(resized(im).transpose(2, 0, 1).copy()) for im in (composite, target))
    fg = torch.from_numpy(resized(mask.convert("L")).astype(np.float64) / 255.0 > 0.5)[None]
    return comp, fg, tgt


def limit_per_subset(samples: SampleDataset, limit: int) -> SampleDataset:
    """The first ``limit`` samples of each subset (listing problems kept)."""
    if limit < 1:
        raise GknetError(f"limit must be positive, got {limit}")
    kept, seen = [], {}
    for sample in samples:
        seen[sample.subset] = seen.get(sample.subset, 0) + 1
        if seen[sample.subset] <= limit:
            kept.append(sample)
    return SampleDataset(kept, samples.problems)


class _ProtocolInputs(torch.utils.data.Dataset):
    """Loads and resizes samples; a failure becomes an ``error`` record, not an exception."""

    def __init__(self, samples: SampleDataset, size: int):
        self.samples, self.size = samples, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        try:
            composite, mask, target = sample.load()
            if target is None:
                raise GknetError(f"no target (ground-truth) image for {sample.composite}")
            comp, fg, tgt = prepare_images(composite, mask, target, self.size)
        except GknetError as exc:
            return {"index": index, "error": str(exc)}
        return {"index": index, "composite": comp, "mask": fg, "target": tgt}


@dataclass
class Evaluation:
    """Per-image rows and failures of one run, with the aggregates computed from them."""

    method: str
    rows: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    protocol: dict = field(default_factory=dict)
    source: str = ""
    seconds: float = 0.0
    shard: dict | None = None  # which slice of the samples, for a run split over processes

    def results(self) -> dict:
        """The results.json document."""
        measured = summarize(self.rows)
        composite = summarize([{**r, **{k: r[f"composite_{k}"] for k in METRICS}} for r in self.rows])
        return {
            "method": self.method,
            **measured,
            "composite": composite,
            "ratio_to_composite": ratio_to_reference(measured, composite),
            "restraint": restraint_summary(self.rows),
            "n_images": len(self.rows),
            "n_failed": len(self.failures),
            "failures": self.failures,
            "protocol": self.protocol,
            "data": self.source,
            "seconds": round(self.seconds, 3),
            **({"shard": self.shard} if self.shard else {}),
        }


def evaluate(
    method: Method,
    samples: SampleDataset,
    method_name: str,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    psnr_peak: str = "255",
    workers: int = 0,
    size: int = EVAL_SIZE,
    source: str = "",
    progress: bool = True,
) -> Evaluation:
    """Run ``method`` over ``samples`` under the benchmark protocol.

    A sample that cannot be loaded (missing, unreadable, size mismatch, no target) is
    recorded in ``failures`` with its path and the run goes on; so are the dataset's
    listing ``problems``.
    """
    if batch_size < 1 or workers < 0:
        raise GknetError(f"need batch size >= 1 and workers >= 0, got {batch_size} and {workers}")
    if psnr_peak not in ("255", "target_max"):
        raise GknetError(f"psnr peak must be 255 or target_max, got {psnr_peak!r}")
    device = resolve_device(device)
    run = Evaluation(
        method=method_name,
        failures=[{"path": str(path), "error": message} for path, message in samples.problems],
        protocol={
            "size": size,
            "resize": "Pillow bilinear on 8-bit images (mask as 8-bit grayscale)",
            "mask": "binarised after resizing as L / 255 > 0.5; also the method's mask input",
            "prediction": "output * 255 as float, clamped to [0, 255], not rounded",
            "psnr_peak": psnr_peak,
            "fmse_empty_mask": 0.0,
            "aggregation": "plain mean over images; ALL over every image",
        },
        source=source,
    )
    loader = torch.utils.data.DataLoader(
        _ProtocolInputs(samples, size), batch_size=batch_size, num_workers=workers, collate_fn=list
    )
    start = time.perf_counter()
    with (
        torch.inference_mode(),
        tqdm(total=len(samples), desc=f"evaluate {method_name}", unit="img", disable=not progress) as bar,
    ):
        for batch in loader:
            for item in batch:
                if "error" in item:
                    sample = samples[item["index"]]
                    run.failures.append({"path": str(sample.composite), "error": item["error"]})
                    tqdm.write(f"failed: {item['error']}")
            ok = [item for item in batch if "error" not in item]
            if ok:
                run.rows.extend(score_batch(method, ok, samples, device, psnr_peak))
            bar.update(len(batch))
    run.seconds = time.perf_counter() - start
    return run


def score_batch(
    method: Method, items: list[dict], samples: SampleDataset, device, psnr_peak: str = "255"
) -> list[dict]:
    """Per-image rows of the method and of the composite itself for one batch of protocol inputs
    (``{"index", "composite", "mask", "target"}`` as :func:`prepare_images` makes them)."""
    comp, fg, target = (
        torch.stack([it[k] for it in items]).to(device) for k in ("composite", "mask", "target")
    )
    comp255, target255 = comp.float(), target.float()
    output = method(comp255 / 255.0, fg.float())
    if output.shape != comp.shape:
        raise ValueError(f"method returned shape {tuple(output.shape)}, expected {tuple(comp.shape)}")
    scores = image_metrics(output.float() * 255.0, target255, fg, psnr_peak)
    anchor = image_metrics(comp255, target255, fg, psnr_peak)
    rows = []
    for i, item in enumerate(items):
        sample = samples[item["index"]]
        ratio = float(scores["fg_ratio"][i])
        rows.append(
            {
                "subset": sample.subset,
                "name": sample.name,
                "fg_ratio": ratio,
                "fg_bucket": fg_bucket(ratio),
                **{k: float(scores[k][i]) for k in METRICS},
                **{f"composite_{k}": float(anchor[k][i]) for k in METRICS},
            }
        )
    return rows
