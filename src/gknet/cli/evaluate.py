"""``gknet evaluate``: score a model or a baseline on iHarmony4 or a folder of triplets."""

from __future__ import annotations

import argparse

from gknet.cli._args import integer


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="benchmark a model or baseline (MSE, PSNR, fMSE; paper Tables 1 and 2)",
        description=(
            "Evaluate under the DoveNet/iDIH protocol (256x256 Pillow bilinear, mask > 0.5) and write "
            "results.json, per_image.csv and report.md. See docs/evaluation.md."
        ),
    )
    data = p.add_argument_group("data (iHarmony4 layout, or your own folders)")
    data.add_argument("--data-root", metavar="ROOT", help="iHarmony4 root with <Subset>_<split>.txt lists")
    data.add_argument(
        "--subsets",
        nargs="+",
        metavar="NAME",
        help="e.g. HCOCO HAdobe5k HFlickr Hday2night RainNet_examples (default: every listed subset)",
    )
    data.add_argument("--split", default="test", choices=("train", "test"), help="default: test")
    data.add_argument("--composites", metavar="DIR", help="folder of composites (paired by file stem)")
    data.add_argument("--masks", metavar="DIR", help="folder of foreground masks")
    data.add_argument("--targets", metavar="DIR", help="folder of ground-truth images")
    method = p.add_argument_group("methods (repeatable: each is evaluated, in the order given)")
    p.set_defaults(methods=[])
    method.add_argument(
        "--weights",
        metavar="NAME|PATH",
        action=_AddMethod,
        help="shipped weights (gknet_small, default) or a release .safetensors file",
    )
    method.add_argument(
        "--baseline", metavar="NAME", action=_AddMethod, help="composite, reinhard or histogram"
    )
    p.add_argument(
        "--figure",
        metavar="FILE.png",
        help="also write a Figure-6 style comparison of all methods (worst, median, best image by the "
        "last method's fMSE ratio to the composite)",
    )
    p.add_argument(
        "--limit", type=integer(1), metavar="K", help="evaluate only the first K images of each subset"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: outputs/evaluate/<method>; with several methods DIR/<method>)",
    )
    p.add_argument("--batch-size", type=integer(1), default=8, help="default: 8")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=integer(0), default=0, help="image loading processes (default: 0)")
    p.add_argument(
        "--psnr-peak",
        choices=("255", "target_max"),
        default="255",
        help="PSNR peak: 255 (default) or the target's maximum, as iDIH's code computes it",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    split = p.add_argument_group("several processes (see docs/evaluation.md)")
    split.add_argument(
        "--shard",
        metavar="K/N",
        help="evaluate only the K-th of N slices of the samples, into OUT/shard-K-of-N (with several "
        "methods OUT/<method>/shard-K-of-N; default under torchrun: RANK+1/WORLD_SIZE)",
    )
    split.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="merge the outputs of one method's shards 1..N (their folders, or a folder holding "
        "shard-K-of-N folders) into --out; nothing is evaluated",
    )
    p.set_defaults(func=run)


def _dataset(args: argparse.Namespace):
    from gknet.data import FolderDataset, IHarmony4
    from gknet.errors import GknetError
    from gknet.evaluation.protocol import limit_per_subset

    folders = (args.composites, args.masks, args.targets)
    if args.data_root and any(folders):
        raise GknetError("use either --data-root or --composites/--masks/--targets, not both")
    if args.data_root:
        dataset, source = (
            IHarmony4(args.data_root, args.subsets, args.split),
            f"iHarmony4 {args.split} at {args.data_root}",
        )
    elif all(folders):
        dataset, source = FolderDataset(*folders), f"folders {args.composites}, {args.masks}, {args.targets}"
    elif any(folders):
        raise GknetError("folder evaluation needs all of --composites, --masks and --targets")
    else:
        raise GknetError("no data: pass --data-root ROOT or --composites/--masks/--targets")
    if args.subsets and not args.data_root:
        raise GknetError("--subsets applies to --data-root only")
    if args.limit is not None:
        dataset = limit_per_subset(dataset, args.limit)
    if not len(dataset) and not dataset.problems:
        raise GknetError(f"no images to evaluate in {source}")
    return dataset, source


class _AddMethod(argparse.Action):
    """--weights / --baseline append (kind, value) to ``methods``, keeping the order typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.methods = [*namespace.methods, (self.dest, values)]


def _methods(args: argparse.Namespace, device) -> list:
    """(name, method) in command-line order; repeated names get a suffix."""
    from gknet.errors import GknetError
    from gknet.evaluation.protocol import load_method

    if not args.methods:
        raise GknetError("pass at least one --weights NAME|PATH or --baseline NAME (or --merge DIR...)")
    methods, seen = [], {}
    for kind, value in args.methods:
        method, name = load_method(**{kind: value, "device": device})
        seen[name] = seen.get(name, 0) + 1
        methods.append((name if seen[name] == 1 else f"{name}_{seen[name]}", method))
    return methods


def _merge(args: argparse.Namespace) -> int:
    from gknet.errors import GknetError
    from gknet.evaluation.report import OUTPUT_FILES, prepare_out_dir, write_outputs
    from gknet.evaluation.shards import merge_shards, shard_dirs
    from gknet.io.guard import Inputs

    options = {
        "--data-root": args.data_root,
        "--composites": args.composites,
        "--masks": args.masks,
        "--targets": args.targets,
        "--limit": args.limit,
        "--shard": args.shard,
        "--figure": args.figure,
    }
    given = [flag for flag, value in options.items() if value]
    given += sorted({f"--{kind}" for kind, _ in args.methods})
    if given:
        raise GknetError(f"--merge only reads finished shards; it does not take {', '.join(given)}")
    if not args.out:
        raise GknetError("--merge needs --out DIR for the merged results")
    out = prepare_out_dir(args.out)
    Inputs(folders=shard_dirs(args.merge)).check(out, *(out / name for name in OUTPUT_FILES))
    run = merge_shards(args.merge)
    return _report(run, write_outputs(run, out))


def _report(run, files: dict) -> int:
    """Print a run's table and files; 1 if some images failed."""
    results = run.results()
    for label, group in [*results["subsets"].items(), ("ALL", results["all"])]:
        if group["n"]:
            print(
                f"{label:>10}: n={group['n']:<6} MSE {group['mse']:8.2f}  PSNR {group['psnr']:6.2f}  "
                f"fMSE {group['fmse']:8.2f}"
            )
    if run.rows:
        from gknet.evaluation.restraint import format_restraint

        print(f"{'restraint':>10}: {format_restraint(results['restraint'])}")
    print(f"wrote {', '.join(str(f) for f in files.values())}")
    if run.failures:
        print(f"{len(run.failures)} file(s) failed (listed in {files['report.md']}):")
        for failure in run.failures:
            print(f"  {failure['path']}: {failure['error']}")
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gknet.errors import GknetError
    from gknet.evaluation.protocol import evaluate
    from gknet.evaluation.report import OUTPUT_FILES, prepare_out_dir, write_outputs
    from gknet.evaluation.shards import shard_samples
    from gknet.inference.release import release_files
    from gknet.io.guard import Inputs
    from gknet.runtime.device import resolve_device
    from gknet.runtime.shard import local_rank, resolve_shard

    if args.merge:
        return _merge(args)
    shard = resolve_shard(args.shard)
    if shard is not None and args.figure:  # its worst/median/best would be those of one slice
        raise GknetError(
            "--figure needs the whole evaluation, not one shard: merge the shards (--merge) and "
            "run --figure in one process"
        )
    # Before any work, the results must have somewhere to go: the folder and figure named on the
    # command line first, then each method's folder once the methods' names are known.
    if args.figure:
        from gknet.evaluation.comparison import figure_format

        figure = Path(args.figure)
        figure_format(figure)
        _prepare_file(figure)
    if args.out:  # a shard writes into OUT/shard-K-of-N: OUT is the other shards' too
        prepare_out_dir(args.out, clean=shard is None)
    paired = _root(args.out) / "paired.md" if len(args.methods) > 1 and shard is None else None
    if paired:
        _prepare_file(paired)
    device = resolve_device(args.device, local_rank())  # under torchrun: this process's GPU
    dataset, source = _dataset(args)
    # No result may land on the data or the weights read (--overwrite plays no part here).
    weights = [path for kind, value in args.methods if kind == "weights" for path in release_files(value)]
    inputs = Inputs(weights).add_samples(dataset)
    inputs.check(*(path for path in (args.figure, paired, args.out) if path))
    record = None
    if shard is not None:
        dataset, record = shard_samples(dataset, shard, args.batch_size)
    methods = _methods(args, device)
    outs = [_out_dir(args.out, name, len(methods) > 1, shard) for name, _ in methods]
    for out in outs:
        inputs.check(out, *(out / name for name in OUTPUT_FILES))
        prepare_out_dir(out)
    runs, status = [], 0
    for (name, method), out in zip(methods, outs, strict=True):
        run = evaluate(
            method,
            dataset,
            name,
            batch_size=args.batch_size,
            device=device,
            psnr_peak=args.psnr_peak,
            workers=args.workers,
            source=source,
            progress=not args.no_progress,
        )
        run.shard = record
        status = max(status, _report(run, write_outputs(run, out)))
        runs.append(run)
    if paired:
        _write_paired(runs, paired)
    if args.figure:
        from gknet.evaluation.comparison import comparison_figure

        path = comparison_figure(dataset, methods, runs, args.figure, device=device)
        print(f"wrote {path}")
    return status


def _prepare_file(path) -> None:
    """GknetError if ``path`` cannot be written; remove temporaries a killed run left beside it."""
    from gknet.io.atomic import check_writable, remove_stale_temporaries

    check_writable(path)
    remove_stale_temporaries(path.parent, [path.name])


def _root(out: str | None):
    """--out, or outputs/evaluate."""
    from pathlib import Path

    return Path(out or Path("outputs") / "evaluate")


def _write_paired(runs: list, path) -> None:
    """Each later method against the first on the images both scored: print it, write ``path``."""
    from gknet.evaluation.paired import DRAWS, paired_comparison, render_paired
    from gknet.io.atomic import write_atomic

    reference = runs[0]
    sections = [f"# Paired comparison against {reference.method}\n"]
    print(f"paired comparison against {reference.method} (P(better): share of {DRAWS:,} bootstrap draws)")
    for run in runs[1:]:
        if not (run.rows and reference.rows):
            continue
        comparison = paired_comparison(reference.rows, run.rows)
        sections.append(render_paired(reference.method, run.method, comparison))
        for subset, row in comparison.items():
            p = "-" if row["p_better"] is None else f"{row['p_better']:.2f}"
            print(
                f"  {run.method} {subset}: better on {row['better']}, worse on {row['worse']} of "
                f"{row['n']} images, P(better) {p}"
            )
    from gknet.evaluation.restraint import render_restraint, restraint_summary

    sections += ["## Restraint (composite fMSE below / above the threshold)\n"]
    sections += [render_restraint({run.method: restraint_summary(run.rows) for run in runs}) + "\n"]
    text = "\n".join(sections)
    print(f"wrote {write_atomic(path, text)}")


def _out_dir(out: str | None, name: str, several: bool, shard):
    """A method's output folder: OUT, OUT/<method> with several methods (default OUT:
    outputs/evaluate, always per method), and a shard's folder inside it."""
    folder = _root(out)
    folder = folder / name if several or not out else folder
    return folder / shard.name if shard is not None else folder
