"""``gknet train``: train a model from a YAML config (single process, or DDP under torchrun)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a config (resumable; DDP under torchrun)",
        description=(
            "Train GKNet from a YAML config into OUT (ckpt/last.pt, best.pt, step_*.pt, log.jsonl, "
            "config.yaml). Launch with torchrun for multi-GPU / multi-node DDP. See docs/training.md."
        ),
    )
    p.add_argument("--config", metavar="YAML", help="config file (default when resuming: the checkpoint's)")
    p.add_argument("--resume", metavar="PATH|auto", help="checkpoint to continue; auto = OUT/ckpt/last.pt")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<config name>)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.lr=3e-4 (repeatable)",
    )
    p.add_argument("--device", default="auto", help="auto (default: CUDA if present), cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        help="sets train.precision: fp32, bf16 (autocast; CPU or GPU) or fp16 (CUDA, gradient scaler)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from gknet.config import load_config, override
    from gknet.errors import GknetError
    from gknet.inference.checkpoints import config_from_checkpoint
    from gknet.training import train

    resume_file = args.resume not in (None, "auto")
    auto_last = Path(args.out) / "ckpt" / "last.pt" if args.out and args.resume == "auto" else None
    if args.config:
        cfg, name = load_config(args.config), Path(args.config).stem
    elif resume_file:
        cfg, name = config_from_checkpoint(args.resume)
    elif auto_last is not None and auto_last.is_file():
        cfg, name = config_from_checkpoint(auto_last)
    else:
        raise GknetError("pass --config YAML (or --resume CHECKPOINT to continue with its config)")
    cfg = override(cfg, args.overrides + ([f"train.precision={args.precision}"] if args.precision else []))
    if args.out:
        out = Path(args.out)
    elif resume_file and Path(args.resume).parent.name == "ckpt":
        out = Path(args.resume).parent.parent
    else:
        out = Path("runs") / (name or "run")
    _check_run_folder(cfg, out, args.config)
    result = train(cfg, out, resume=args.resume, device=args.device, config_name=name)
    if int(os.environ.get("RANK", 0)) == 0:  # one summary line, not one per DDP rank
        print(json.dumps({"out": str(out), **result}))
    return 0


def _check_run_folder(cfg, out, config_file: str | None) -> None:
    """Refuse a run folder that is, or lies in, the data read, or whose files are the config or
    the initial weights. (A resumed checkpoint is the run's own state: it continues there.)"""
    from pathlib import Path

    from gknet.inference.release import release_files
    from gknet.io.guard import Inputs

    weights = release_files(cfg.train.init_weights) if cfg.train.init_weights else ()
    read = (cfg.data.root, cfg.data.real_val, cfg.data.realistic_composites)
    folders = [Path(root).expanduser() for root in read if root]
    Inputs([config_file, *weights], folders).check(out, out / "config.yaml", out / "log.jsonl", out / "ckpt")
