"""``gknet synth``: look at (``--preview``), measure (``--stats``) or write out (``--export``)
the synthetic composites."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gknet.cli._args import integer


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="preview or measure synthetic composites made from photos + masks",
        description="Make synthetic composites from ROOT/images/NAME.jpg + ROOT/masks/NAME.png and "
        "write a preview grid (rows: composite | mask | target) and/or print their difficulty "
        "(MSE, fMSE, PSNR of the raw composites against the targets).",
    )
    p.add_argument("--root", required=True, help="photo folder: images/NAME.jpg + masks/NAME.png")
    p.add_argument("--split", choices=("train", "val"), default="val", help="default: %(default)s")
    p.add_argument("--preview", action="store_true", help="write a preview grid to -o")
    p.add_argument("-o", "--output", help="grid image path (.png or .jpg) for --preview")
    p.add_argument(
        "--each",
        action="store_true",
        help="--preview: one column per object family, per scene family and a 'both' edit "
        "(on --n photos spread over the split, in turn) instead of the items' random edits",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument(
        "--stats",
        action="store_true",
        help="print the composites' difficulty (MSE, fMSE percentiles, PSNR), object areas and edit mix "
        "beside the iHarmony4 test figures",
    )
    p.add_argument(
        "--export", metavar="DIR", help="write the whole split as DIR/{composites,masks,targets}/NAME.png"
    )
    p.add_argument("--n", type=integer(1), default=8, help="items shown / measured (default: %(default)s)")
    p.add_argument(
        "--seed", type=integer(0), default=0, help="split and perturbation seed (default: %(default)s)"
    )
    p.add_argument("--epoch", type=integer(0), default=0, help="train split epoch (default: %(default)s)")
    p.add_argument("--size", type=integer(1), default=256, help="image size (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gknet.errors import GknetError

    if not (args.preview or args.stats or args.export):
        raise GknetError("nothing to do: pass --preview -o GRID.png, --stats and/or --export DIR")
    if args.preview and not args.output:
        raise GknetError("--preview needs -o GRID.png")

    from gknet.data.synthetic import (
        SyntheticComposites,
        composite_stats,
        each_edit,
        export_triplets,
        format_stats,
        preview_grid,
        spread_indices,
    )
    from gknet.io.atomic import check_writable, remove_stale_temporaries
    from gknet.io.images import check_output_path, save_image_atomic

    if args.preview:  # outputs first: the composites take a while
        check_output_path(args.output, args.overwrite)
        remove_stale_temporaries(Path(args.output).parent, [Path(args.output).name])  # of a killed run
    if args.export:
        check_writable(Path(args.export) / "composites" / "x.png")
        for folder in ("composites", "masks", "targets"):  # only the export writes there
            remove_stale_temporaries(Path(args.export) / folder)
    dataset = SyntheticComposites(args.root, split=args.split, image_size=args.size, seed=args.seed)
    for line in dataset.skipped:  # a family whose data file is missing
        print(f"gknet synth: note: {line}", file=sys.stderr)
    dataset.set_epoch(args.epoch)
    indices = spread_indices(len(dataset), args.n)
    if args.preview:
        edits = each_edit(dataset) if args.each else None
        grid = preview_grid(dataset, indices, edits)
        path = save_image_atomic(grid, args.output, overwrite=args.overwrite)
        print(f"wrote {path} ({len(edits or indices)} {args.split} items)")
    if args.stats:
        stats = composite_stats(dataset, range(min(args.n, len(dataset))))
        print(format_stats(stats, f"{args.split} at {args.size}px"))
    if args.export:
        count = export_triplets(dataset, args.export, overwrite=args.overwrite)
        print(f"wrote {count} {args.split} triplets to {args.export}/{{composites,masks,targets}}")
    return 0
