"""``gknet export``: release weights from a training checkpoint, and ONNX exports."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write release weights from a training checkpoint, or an ONNX model",
        description=(
            "Write the model weights of a training checkpoint CKPT as OUT.safetensors plus OUT.json "
            "(model config and metadata: step, epoch, validation metrics, config name), and/or the "
            "model as ONNX (--onnx; dynamic batch, height and width; needs pip install 'gknet[onnx]'). "
            "Without CKPT, --onnx exports the release weights given by --weights."
        ),
    )
    p.add_argument(
        "checkpoint", nargs="?", metavar="CKPT", help="training checkpoint, e.g. runs/NAME/ckpt/best.pt"
    )
    p.add_argument("-o", "--output", metavar="OUT.safetensors", help="release weights file (needs CKPT)")
    p.add_argument("--onnx", metavar="OUT.onnx", help="also (or only) write the model as ONNX")
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="with --onnx and no CKPT: release .safetensors to export (default: the shipped weights)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def _onnx_source(args: argparse.Namespace):
    """(model, inference settings, name) to export to ONNX: the checkpoint's, or the release of --weights."""
    from gknet.inference.checkpoints import checkpoint_model
    from gknet.inference.harmonizer import Harmonizer

    if args.checkpoint:
        model, _cfg, state, inference = checkpoint_model(args.checkpoint)
        return model, inference, state["config_name"] or Path(args.checkpoint).stem
    harmonizer = Harmonizer.from_pretrained(args.weights or "default", backend="torch")
    return harmonizer.model, harmonizer.settings, harmonizer.name


def run(args: argparse.Namespace) -> int:
    from gknet.errors import GknetError
    from gknet.inference.checkpoints import export_checkpoint
    from gknet.io.atomic import check_writable, remove_stale_temporaries

    if args.output is None and args.onnx is None:
        raise GknetError("nothing to write: give -o OUT.safetensors and/or --onnx OUT.onnx")
    if args.output is not None and not args.checkpoint:
        raise GknetError("-o OUT.safetensors needs a training checkpoint CKPT")
    if args.checkpoint and args.weights:
        raise GknetError("give either CKPT or --weights, not both")
    onnx = Path(args.onnx) if args.onnx is not None else None
    if onnx is not None:
        if onnx.suffix.lower() != ".onnx":
            raise GknetError(f"--onnx output must end in .onnx, got {onnx}")
        if onnx.is_dir():
            raise GknetError(f"--onnx output is a directory: {onnx}")
        if onnx.exists() and not args.overwrite:
            raise GknetError(f"output exists: {onnx} (pass --overwrite to replace it)")
        check_writable(onnx)
    if args.output is not None:
        release = export_checkpoint(args.checkpoint, args.output, overwrite=args.overwrite)
        print(f"wrote {release} and {release.with_suffix('.json')}")
    if onnx is not None:
        from gknet.inference.onnx_backend import export_onnx

        model, settings, name = _onnx_source(args)
        remove_stale_temporaries(onnx.parent, [onnx.name])
        print(f"wrote {export_onnx(model.cpu(), onnx, settings, name)}")
    return 0
