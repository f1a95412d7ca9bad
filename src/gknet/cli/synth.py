"""``gknet synth``: look at (``--preview``), measure (``--stats``) or write out (``--export``)
the synthetic composites."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gknet.cli._args import integer

# Each item is made from float copies of a --size x --size crop (photo, mask, composite, target
# and the edits' working maps): peak memory grew by 127-138 bytes per item pixel (measured on
# three validation items at 512, 1024 and 2048 px).
ITEM_BYTES_PER_PIXEL = 140
MAX_ITEM_BYTES = 8e9  # as one network pass of gknet harmonize (gknet.inference.harmonizer)


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

    from gknet.data.categories import CATEGORIES_FILE
    from gknet.data.synthetic import (
        DEFAULT_FILM_LUTS,
        DEFAULT_ILLUMINATION_MAPS,
        SyntheticComposites,
        composite_stats,
        each_edit,
        export_triplets,
        format_stats,
        preview_grid,
        spread_indices,
    )
    from gknet.io.atomic import check_writable, remove_stale_temporaries
    from gknet.io.guard import Inputs
    from gknet.io.images import check_output_path, save_image_atomic

    _check_size(args.size)
    root = Path(args.root)
    beside = [root / DEFAULT_ILLUMINATION_MAPS, root / DEFAULT_FILM_LUTS, root / CATEGORIES_FILE]
    inputs = Inputs(beside, [root / "images", root / "masks"])
    if args.preview:  # outputs first: the composites take a while
        inputs.check(args.output)
        check_output_path(args.output, args.overwrite)
        remove_stale_temporaries(Path(args.output).parent, [Path(args.output).name])  # of a killed run
    if args.export:
        inputs.check(*(Path(args.export) / folder for folder in ("composites", "masks", "targets")))
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


def _check_size(size: int) -> None:
    """GknetError if one item at ``size`` would need more memory than MAX_ITEM_BYTES."""
    from gknet.errors import GknetError

    if ITEM_BYTES_PER_PIXEL * size**2 > MAX_ITEM_BYTES:
        largest = int((MAX_ITEM_BYTES / ITEM_BYTES_PER_PIXEL) ** 0.5)
        raise GknetError(
            f"--size {size} is too large: one item would need about "
            f"{ITEM_BYTES_PER_PIXEL * size**2 / 1e9:,.0f} GB (limit {MAX_ITEM_BYTES / 1e9:g} GB); "
            f"use at most {largest}"
        )
