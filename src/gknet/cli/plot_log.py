"""``gknet plot-log``: training loss and validation curves from a run's log.jsonl."""

from __future__ import annotations

import argparse

from gknet.cli._args import number


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot-log",
        help="plot training loss and validation fMSE/PSNR from log.jsonl",
        description="Plot the smoothed training loss and the validation fMSE and PSNR against the step.",
    )
    p.add_argument("log", metavar="LOG", help="a run's log.jsonl")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="output image (.png, .pdf, .svg)")
    p.add_argument(
        "--smooth",
        type=number(0, 1, high_open=True),
        default=0.9,
        help="EMA factor for the loss curve (default: 0.9)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gknet.io.guard import Inputs
    from gknet.training.log import plot_training_log

    Inputs([args.log]).check(args.output)
    path = plot_training_log(args.log, args.output, smooth=args.smooth, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
