"""``gknet export``: turn a training checkpoint into release weights (.safetensors + .json)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write release weights from a training checkpoint",
        description=(
            "Write the model weights of a training checkpoint as OUT.safetensors plus OUT.json "
            "(model config and metadata: step, epoch, validation metrics, config name)."
        ),
    )
    p.add_argument("checkpoint", metavar="CKPT", help="training checkpoint, e.g. runs/NAME/ckpt/best.pt")
    p.add_argument("-o", "--output", required=True, metavar="OUT.safetensors", help="release weights file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gknet.train import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.output, overwrite=args.overwrite)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
