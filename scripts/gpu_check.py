"""Mixed-precision check on a GPU: run it as is on a machine with CUDA.

    .venv/bin/python scripts/gpu_check.py                # gknet_paper, 256 px, 300 steps per precision

For every precision (fp32, bf16, fp16) it trains configs/gknet_paper.yaml on synthetic data
(random images with a recoloured square, generated once in memory, so the data path never
limits the GPU) with ``gknet.training.train``, prints the training images/s (median of the
log windows after the first) and the peak GPU memory, then resumes the run from its last
checkpoint for a few more steps and checks that it continued from there. One line of JSON per
precision; the exit status is non-zero if a precision fails. ``--device cpu`` with a small
``--steps``/``--size`` runs the same code on a CPU (bf16 and fp32 only; the test suite does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gknet.config import load_config
from gknet.errors import GknetError
from gknet.runtime.device import resolve_device
from gknet.training import train
from gknet.training.log import read_log
from gknet.training.state import load_state

REPO = Path(__file__).resolve().parents[1]


class RandomComposites(Dataset):
    """``count`` items of ``size`` px: smooth random images whose centre square is recoloured."""

    def __init__(self, count: int, size: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        ramps = torch.linspace(0, 1, size)
        base = torch.rand(count, 3, 1, 1, generator=g) * 0.6 + 0.2
        slope = (torch.rand(count, 3, 1, 1, generator=g) - 0.5) * 0.6
        self.target = (base + slope * ramps.view(1, 1, size, 1) * ramps.view(1, 1, 1, size)).clamp(0, 1)
        self.mask = torch.zeros(count, 1, size, size)
        self.mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
        gain = torch.rand(count, 3, 1, 1, generator=g) + 0.5
        self.composite = torch.where(self.mask > 0, (self.target * gain).clamp(0, 1), self.target)

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> dict:
        return {
            "composite": self.composite[i],
            "mask": self.mask[i],
            "target": self.target[i],
            "name": str(i),
        }


def check(precision: str, args, device: torch.device, root: Path) -> dict:
    cfg = load_config(args.config)
    tc = replace(
        cfg.train,
        image_size=args.size,
        batch_size=args.batch,
        max_steps=args.steps,
        log_every=max(1, args.steps // 6),
        ckpt_every=args.steps,
        val_every=args.steps,
        precision=precision,
    )
    cfg = replace(cfg, train=tc, data=replace(cfg.data, real_val=""))
    datasets = (RandomComposites(4 * args.batch, args.size, 0), RandomComposites(args.batch, args.size, 1))
    out = root / precision
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.monotonic()
    result = train(cfg, out, device=str(device), datasets=datasets)
    seconds = time.monotonic() - started
    speeds = [r["img_per_s"] for r in read_log(out / "log.jsonl")[0] if "img_per_s" in r][1:]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    saved = load_state(out / "ckpt" / "last.pt")
    floats = {v.dtype for v in saved["model"].values() if v.is_floating_point()}
    more = replace(cfg, train=replace(tc, max_steps=args.steps + args.resume_steps))
    resumed = train(more, out, resume="auto", device=str(device), datasets=datasets)
    ok = (
        saved["step"] == args.steps
        and resumed["step"] == args.steps + args.resume_steps
        and floats == {torch.float32}
        and all(map(torch.isfinite, torch.tensor([result["loss"], resumed["loss"]])))
    )
    return {
        "precision": precision,
        "ok": bool(ok),
        "images_per_s": statistics.median(speeds) if speeds else None,
        "peak_gpu_mib": peak,
        "seconds": seconds,
        "loss": result["loss"],
        "resumed_to_step": resumed["step"],
        "checkpoint_dtypes": sorted(str(d) for d in floats),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "gknet_paper.yaml"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--resume-steps", type=int, default=20)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except GknetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        print(json.dumps({"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__}))
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        for precision in args.precisions:
            try:
                line = check(precision, args, device, root)
            except GknetError as exc:
                line = {"precision": precision, "ok": False, "error": str(exc)}
            failed += not line["ok"]
            print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
