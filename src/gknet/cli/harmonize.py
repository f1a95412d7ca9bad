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
        help="shipped weights (default: gknet_small) or a release .safetensors file",
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
        "--compare",
        action="store_true",
        help=f"also write composite | harmonized | mask outline as <OUT stem>{COMPARE_SUFFIX}",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (folder mode)")
    p.set_defaults(func=run)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and a.samefile(b)
    return False


def _check_output(out: Path, inputs: tuple[Path, ...], overwrite: bool) -> None:
    """Fail before any work if ``out`` is an input or cannot be written."""
    from gknet.data.imageio import check_output_path
    from gknet.errors import GknetError

    for path in inputs:
        if _same_file(out, path):
            raise GknetError(f"output {out} is the input {path}; refusing to overwrite an input")
    check_output_path(out, overwrite)


def _outputs(out: Path, args: argparse.Namespace) -> tuple[Path, ...]:
    """The result file, and its comparison sheet with --compare."""
    return (out, out.with_name(out.stem + COMPARE_SUFFIX)) if args.compare else (out,)


def _harmonize_file(harmonizer, composite: Path, mask: Path, out: Path, args: argparse.Namespace) -> None:
    from gknet.data.imageio import load_mask, load_rgb, save_image_atomic
    from gknet.harmonizer import comparison_image

    outputs = _outputs(out, args)
    for path in outputs:
        _check_output(path, (composite, mask), args.overwrite)
    compare = outputs[1] if args.compare else None
    image, alpha = load_rgb(composite), load_mask(mask)
    result = harmonizer(image, alpha, threshold=args.threshold, resize_mask=args.resize_mask)
    save_image_atomic(result, out, overwrite=args.overwrite)
    if compare:
        if alpha.size != image.size:
            alpha = alpha.resize(image.size)
        save_image_atomic(comparison_image(image, result, alpha), compare, overwrite=args.overwrite)


@contextlib.contextmanager
def _warnings_as_lines(prefix: str = ""):
    """Show every warning (e.g. an empty mask) as one plain line, repeats included."""
    import warnings

    from tqdm import tqdm

    def show(message, *_args, **_kwargs):
        tqdm.write(f"{PROG}: warning: {prefix}{' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _folder_jobs(args: argparse.Namespace):
    """(pairs, {stem: output path}) of folder mode, checked before any work: the output folder can
    be written and no two outputs share a name (``a_compare.jpg`` is also ``a.jpg``'s sheet)."""
    from gknet.atomic import check_writable, remove_stale_temporaries
    from gknet.data.folders import match_by_stem
    from gknet.errors import GknetError

    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise GknetError(f"output folder is a file: {outdir}")
    pairs = match_by_stem(args.composites, args.masks)
    outs = {stem: outdir / f"{stem}{comp.suffix.lower()}" for stem, (comp, _) in pairs.matched.items()}
    names = Counter(path.name for out in outs.values() for path in _outputs(out, args))
    clash = [name for name, count in names.items() if count > 1]
    if clash:
        raise GknetError(
            f"two outputs would be named {outdir / clash[0]} (a composite named like another's "
            f"{COMPARE_SUFFIX} sheet): rename it or drop --compare"
        )
    if outs:
        check_writable(next(iter(outs.values())))
    remove_stale_temporaries(outdir, names)  # left by a killed run
    return pairs, outs


def _harmonize_folder(harmonizer, pairs, outs: dict[str, Path], args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gknet.errors import GknetError

    outdir = Path(args.output)
    failed = [f"{path}: {message}" for path, message in pairs.unmatched]
    for line in failed:
        print(f"{PROG}: skipped {line}", file=sys.stderr)
    done = 0
    bar = tqdm(pairs.matched.items(), desc="harmonize", unit="image", disable=args.no_progress)
    for stem, (composite, mask) in bar:
        try:
            with _warnings_as_lines(prefix=f"{composite.name}: "):
                _harmonize_file(harmonizer, composite, mask, outs[stem], args)
            done += 1
        except GknetError as exc:
            failed.append(f"{composite}: {exc}")
            tqdm.write(f"{PROG}: error: {composite.name}: {exc}", file=sys.stderr)
    print(f"{done} harmonized into {outdir}, {len(failed)} failed or skipped")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    from gknet.errors import GknetError
    from gknet.harmonizer import Harmonizer

    folder_mode = args.composites is not None or args.masks is not None
    if folder_mode and (args.composite or args.mask):
        raise GknetError("give either COMPOSITE MASK or --composites DIR --masks DIR, not both")
    if folder_mode and not (args.composites and args.masks):
        raise GknetError("folder mode needs both --composites DIR and --masks DIR")
    if not folder_mode and not (args.composite and args.mask):
        raise GknetError("give COMPOSITE and MASK files (or --composites DIR --masks DIR)")
    if args.threshold is not None and not 0 < args.threshold <= 1:
        raise GknetError(f"--threshold must be in (0, 1], got {args.threshold}")
    # Every output location is checked before the model is loaded and any image decoded.
    if folder_mode:
        pairs, outs = _folder_jobs(args)
    else:
        from gknet.atomic import remove_stale_temporaries

        composite, mask, out = Path(args.composite), Path(args.mask), Path(args.output)
        for path in _outputs(out, args):
            _check_output(path, (composite, mask), args.overwrite)
            remove_stale_temporaries(path.parent, [path.name])
    with _warnings_as_lines():
        harmonizer = Harmonizer.from_pretrained(args.weights, resolution=args.resolution, device=args.device)
        if folder_mode:
            return _harmonize_folder(harmonizer, pairs, outs, args)
        _harmonize_file(harmonizer, composite, mask, out, args)
    print(f"wrote {out}" + (f" and {out.with_name(out.stem + COMPARE_SUFFIX)}" if args.compare else ""))
    return 0
