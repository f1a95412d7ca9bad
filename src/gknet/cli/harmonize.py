"""``gknet harmonize``: harmonize one composite, or a folder of composites, at full resolution."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from gknet.cli._args import integer
from gknet.config import MIN_RESOLUTION
from gknet.inference.files import COMPARE_SUFFIX, CPU_BATCH, CPU_WORKERS, GPU_BATCH, GPU_WORKERS

PROG = "gknet harmonize"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "harmonize",
        help="make a composite look real (your own images, full resolution)",
        description=(
            "Harmonize COMPOSITE (its foreground given by MASK) and write OUT at the composite's full "
            "resolution, or every composite of --composites DIR with the mask of the same file stem in "
            "--masks DIR into OUTDIR. The mask is used as alpha (255 = foreground, soft values blend; "
            "see --threshold). See docs/harmonize.md."
        ),
    )
    p.add_argument("composite", nargs="?", metavar="COMPOSITE", help="composite image file")
    p.add_argument("mask", nargs="?", metavar="MASK", help="foreground mask file")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file (folder in folder mode)")
    p.add_argument("--composites", metavar="DIR", help="folder mode: folder of composites")
    p.add_argument("--masks", metavar="DIR", help="folder mode: folder of masks, paired by file stem")
    p.add_argument(
        "--weights",
        default="default",
        metavar="NAME|PATH",
        help="shipped weights (default: gknet_small), a release .safetensors file or an .onnx export "
        "(runs with ONNX Runtime)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument(
        "--resolution",
        type=integer(MIN_RESOLUTION),
        help="size of the network pass in pixels (default: the weights' setting; the largest depends on "
        "the model's memory)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="binarise the mask: foreground where mask >= T (0-1); default: soft mask used as alpha",
    )
    p.add_argument("--resize-mask", action="store_true", help="resize a mask of another size to fit")
    p.add_argument(
        "--strength",
        type=float,
        default=1.0,
        metavar="S",
        help="share of the model's change applied: 0 = the composite, 1 = the model (default), up to 1.5",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help=f"also write composite | harmonized | mask outline as <OUT stem>{COMPARE_SUFFIX}",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (folder mode)")
    p.add_argument(
        "--batch-size",
        type=integer(1),
        help=f"folder mode: images per network pass (default: {GPU_BATCH} on a GPU, {CPU_BATCH} on the CPU)",
    )
    p.add_argument(
        "--workers",
        type=integer(0),
        help=f"folder mode: threads reading and writing files (default: {GPU_WORKERS} on a GPU, "
        f"{CPU_WORKERS} on the CPU)",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="folder mode: harmonize only the K-th of N slices of the sorted inputs (default under "
        "torchrun: RANK+1/WORLD_SIZE)",
    )
    p.set_defaults(func=run)


@contextlib.contextmanager
def _warnings_as_lines():
    """Show every warning (e.g. an empty mask) as one plain line, repeats included.

    Set once for the whole run: warnings.catch_warnings is process-wide, not per thread, so
    folder mode names the file in the warning's text instead."""
    import warnings

    from tqdm import tqdm

    def show(message, *_args, **_kwargs):
        tqdm.write(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _harmonize_folder(
    harmonizer, jobs: list, unmatched: list, options, args: argparse.Namespace, shard
) -> int:
    from tqdm import tqdm

    from gknet.inference.files import harmonize_folder

    failed = [f"{path}: {message}" for path, message in unmatched]
    for line in failed:
        print(f"{PROG}: skipped {line}", file=sys.stderr)
    done = 0
    results = harmonize_folder(harmonizer, jobs, options, batch_size=args.batch_size, workers=args.workers)
    for job, error in tqdm(
        results, total=len(jobs), desc="harmonize", unit="image", disable=args.no_progress
    ):
        if error is None:
            done += 1
        else:
            failed.append(f"{job[0]}: {error}")
            tqdm.write(f"{PROG}: error: {job[0].name}: {error}", file=sys.stderr)
    where = f" (shard {shard.index} of {shard.count})" if shard is not None else ""
    print(f"{done} harmonized into {Path(args.output)}{where}, {len(failed)} failed or skipped")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    from gknet.errors import GknetError
    from gknet.inference.files import FileOptions, folder_jobs, harmonize_file, prepare_file
    from gknet.inference.harmonizer import Harmonizer
    from gknet.inference.release import release_files
    from gknet.io.guard import Inputs
    from gknet.runtime.device import resolve_device
    from gknet.runtime.shard import local_rank, resolve_shard

    folder_mode = args.composites is not None or args.masks is not None
    if folder_mode and (args.composite or args.mask):
        raise GknetError("give either COMPOSITE MASK or --composites DIR --masks DIR, not both")
    if folder_mode and not (args.composites and args.masks):
        raise GknetError("folder mode needs both --composites DIR and --masks DIR")
    if not folder_mode and not (args.composite and args.mask):
        raise GknetError("give COMPOSITE and MASK files (or --composites DIR --masks DIR)")
    options = FileOptions(args.threshold, args.resize_mask, args.compare, args.overwrite, args.strength)
    shard = resolve_shard(args.shard)
    if shard is not None and not folder_mode:
        raise GknetError("--shard (or torchrun with several processes) needs --composites DIR --masks DIR")
    # Every output location is checked before the model is loaded and any image decoded.
    inputs = Inputs(release_files(args.weights))
    if folder_mode:
        jobs, unmatched = folder_jobs(args.composites, args.masks, args.output, options, shard, inputs)
    else:
        job = (Path(args.composite), Path(args.mask), Path(args.output))
        prepare_file(job, options, inputs)
    device = resolve_device(args.device, local_rank())  # under torchrun: this process's GPU
    with _warnings_as_lines():
        harmonizer = Harmonizer.from_pretrained(args.weights, resolution=args.resolution, device=device)
        if folder_mode:
            return _harmonize_folder(harmonizer, jobs, unmatched, options, args, shard)
        written = harmonize_file(harmonizer, job, options)
    print("wrote " + " and ".join(map(str, written)))
    return 0
