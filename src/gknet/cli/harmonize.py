"""``gknet harmonize``: harmonize one composite, or a folder of composites, at full resolution."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from pathlib import Path

from gknet.cli._args import integer
from gknet.config import MIN_RESOLUTION

PROG = "gknet harmonize"
COMPARE_SUFFIX = "_compare.jpg"
# Folder-mode batch: a GPU is fed several images per pass; on the CPU a batch of 256 px images
# runs slower per image than one at a time (the feature maps leave the cache). I/O threads
# likewise help a GPU run but slow a CPU one, where they take cores from torch (measured on
# 2 cores: benchmarks/README.md, "Reading the results").
GPU_BATCH, CPU_BATCH = 8, 1
GPU_WORKERS, CPU_WORKERS = 2, 0
BATCH_PIXELS = 2**22  # a folder-mode batch closes at this many full-size pixels (memory bound)


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


def _check_output(out: Path, inputs, overwrite: bool) -> None:
    """Fail before any work if ``out`` is an input (:class:`gknet.io.guard.Inputs`) or cannot be written."""
    from gknet.io.images import check_output_path

    inputs.check(out)
    check_output_path(out, overwrite)


def _outputs(out: Path, args: argparse.Namespace) -> tuple[Path, ...]:
    """The result file, and its comparison sheet with --compare."""
    return (out, out.with_name(out.stem + COMPARE_SUFFIX)) if args.compare else (out,)


def _load(job: tuple, harmonizer, args: argparse.Namespace, inputs) -> dict:
    """Check the outputs, read and convert one (composite, mask, out) job (a worker thread's part)."""
    from gknet.io.images import load_mask, load_rgb

    composite, mask, out = job
    outputs = _outputs(out, args)
    for path in outputs:
        _check_output(path, inputs, args.overwrite)
    compare = outputs[1] if args.compare else None
    image, alpha = load_rgb(composite), load_mask(mask)
    tensors = harmonizer.to_tensors(image, alpha, threshold=args.threshold, resize_mask=args.resize_mask)
    return {"name": composite.name, "image": image, "alpha": alpha, "tensors": tensors, "compare": compare}


def _compute(
    harmonizer, loaded: list[dict], folder_mode: bool, strength: float = 1.0
) -> list[tuple[dict, object]]:
    """One network pass for a batch of loaded jobs (the calling thread's part)."""
    results = harmonizer.harmonize_tensors(
        [item["tensors"][0] for item in loaded],
        [item["tensors"][1] for item in loaded],
        labels=[item["name"] for item in loaded] if folder_mode else None,  # warnings name the file
        strength=strength,
    )
    return list(zip(loaded, results, strict=True))


def _save(job: tuple, computed: tuple[dict, object], args: argparse.Namespace) -> None:
    from gknet.evaluation.comparison import comparison_image
    from gknet.io.images import save_image_atomic

    item, tensor = computed
    result = item["tensors"][2](tensor)
    save_image_atomic(result, job[2], overwrite=args.overwrite)
    if item["compare"]:
        image, alpha = item["image"], item["alpha"]
        if alpha.size != image.size:
            alpha = alpha.resize(image.size)
        save_image_atomic(comparison_image(image, result, alpha), item["compare"], overwrite=args.overwrite)


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


def _folder_jobs(
    args: argparse.Namespace, shard, inputs
) -> tuple[list[tuple[Path, Path, Path]], list[tuple]]:
    """((composite, mask, output) jobs, unmatched files) of folder mode, this shard's, checked
    before any work: no output is an input or lies in an input folder, the output folder can be
    written and no two outputs share a name (``a_compare.jpg`` is also ``a.jpg``'s sheet). The
    first shard reports the unmatched files."""
    from gknet.data.folders import match_by_stem
    from gknet.errors import GknetError
    from gknet.io.atomic import check_writable, remove_stale_temporaries

    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise GknetError(f"output folder is a file: {outdir}")
    pairs = match_by_stem(args.composites, args.masks)
    inputs.add_folders(args.composites, args.masks)
    inputs.add_files(*(path for pair in pairs.matched.values() for path in pair))
    jobs = [(c, m, outdir / f"{stem}{c.suffix.lower()}") for stem, (c, m) in pairs.matched.items()]
    inputs.check(outdir, *(path for _, _, out in jobs for path in _outputs(out, args)))
    names = Counter(path.name for _, _, out in jobs for path in _outputs(out, args))
    clash = [name for name, count in names.items() if count > 1]
    if clash:  # checked over all shards' outputs: every shard refuses alike
        raise GknetError(
            f"two outputs would be named {outdir / clash[0]} (a composite named like another's "
            f"{COMPARE_SUFFIX} sheet): rename it or drop --compare"
        )
    unmatched = pairs.unmatched
    if shard is not None:  # a deterministic slice
        jobs, unmatched = shard.select(jobs), unmatched if shard.index == 1 else []
    if jobs:
        check_writable(jobs[0][2])
    # left by a killed run; only this shard's, the other shards may be writing theirs now
    remove_stale_temporaries(outdir, [path.name for _, _, out in jobs for path in _outputs(out, args)])
    return jobs, unmatched


def _harmonize_folder(
    harmonizer, jobs: list, unmatched: list, args: argparse.Namespace, shard, inputs
) -> int:
    from tqdm import tqdm

    from gknet.inference.pipeline import run_batched

    outdir = Path(args.output)
    failed = [f"{path}: {message}" for path, message in unmatched]
    for line in failed:
        print(f"{PROG}: skipped {line}", file=sys.stderr)
    done, on_gpu = 0, harmonizer.device.type == "cuda"
    results = run_batched(
        jobs,
        lambda job: _load(job, harmonizer, args, inputs),
        lambda loaded: _compute(harmonizer, loaded, folder_mode=True, strength=args.strength),
        lambda job, computed: _save(job, computed, args),
        batch_size=args.batch_size or (GPU_BATCH if on_gpu else CPU_BATCH),
        workers=args.workers if args.workers is not None else (GPU_WORKERS if on_gpu else CPU_WORKERS),
        batch_cost=lambda item: item["tensors"][0].shape[-1] * item["tensors"][0].shape[-2],
        max_cost=BATCH_PIXELS,
    )
    bar = tqdm(results, total=len(jobs), desc="harmonize", unit="image", disable=args.no_progress)
    for job, error in bar:
        if error is None:
            done += 1
        else:
            failed.append(f"{job[0]}: {error}")
            tqdm.write(f"{PROG}: error: {job[0].name}: {error}", file=sys.stderr)
    where = f" (shard {shard.index} of {shard.count})" if shard is not None else ""
    print(f"{done} harmonized into {outdir}{where}, {len(failed)} failed or skipped")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    from gknet.errors import GknetError
    from gknet.inference.harmonizer import Harmonizer
    from gknet.inference.release import release_files
    from gknet.inference.strength import check_strength
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
    if args.threshold is not None and not 0 < args.threshold <= 1:
        raise GknetError(f"--threshold must be in (0, 1], got {args.threshold}")
    check_strength(args.strength)
    shard = resolve_shard(args.shard)
    if shard is not None and not folder_mode:
        raise GknetError("--shard (or torchrun with several processes) needs --composites DIR --masks DIR")
    # Every output location is checked before the model is loaded and any image decoded.
    inputs = Inputs(release_files(args.weights))
    if folder_mode:
        jobs, unmatched = _folder_jobs(args, shard, inputs)
    else:
        from gknet.io.atomic import remove_stale_temporaries

        job = (Path(args.composite), Path(args.mask), Path(args.output))
        inputs.add_files(*job[:2])
        for path in _outputs(job[2], args):
            _check_output(path, inputs, args.overwrite)
            remove_stale_temporaries(path.parent, [path.name])
    device = resolve_device(args.device, local_rank())  # under torchrun: this process's GPU
    with _warnings_as_lines():
        harmonizer = Harmonizer.from_pretrained(args.weights, resolution=args.resolution, device=device)
        if folder_mode:
            return _harmonize_folder(harmonizer, jobs, unmatched, args, shard, inputs)
        loaded = [_load(job, harmonizer, args, inputs)]
        _save(job, _compute(harmonizer, loaded, folder_mode=False, strength=args.strength)[0], args)
    print("wrote " + " and ".join(str(path) for path in _outputs(job[2], args)))
    return 0
