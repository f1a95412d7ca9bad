"""``gknet evaluate``: score a model or a baseline on iHarmony4 or a folder of triplets."""

from __future__ import annotations

import argparse


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
    method = p.add_mutually_exclusive_group(required=True)
    method.add_argument(
        "--weights", metavar="NAME|PATH", help="shipped weights (gknet_small, default) or a release file"
    )
    method.add_argument("--baseline", metavar="NAME", help="composite, reinhard or histogram")
    p.add_argument("--limit", type=int, metavar="K", help="evaluate only the first K images of each subset")
    p.add_argument("--out", metavar="DIR", help="output folder (default: outputs/evaluate/<method>)")
    p.add_argument("--batch-size", type=int, default=8, help="default: 8")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0, help="image loading processes (default: 0)")
    p.add_argument(
        "--psnr-peak",
        choices=("255", "target_max"),
        default="255",
        help="PSNR peak: 255 (default) or the target's maximum, as iDIH's code computes it",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _dataset(args: argparse.Namespace):
    from gknet.data import FolderDataset, IHarmony4
    from gknet.errors import GknetError
    from gknet.evaluate import limit_per_subset

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


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gknet.device import resolve_device
    from gknet.evaluate import evaluate, load_method, write_outputs

    device = resolve_device(args.device)
    dataset, source = _dataset(args)
    method, name = load_method(args.baseline, args.weights, device)
    out = Path(args.out) if args.out else Path("outputs") / "evaluate" / name
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
    results = run.results()
    files = write_outputs(run, out)
    for label, group in [*results["subsets"].items(), ("ALL", results["all"])]:
        if group["n"]:
            print(
                f"{label:>10}: n={group['n']:<6} MSE {group['mse']:8.2f}  PSNR {group['psnr']:6.2f}  "
                f"fMSE {group['fmse']:8.2f}"
            )
    print(f"wrote {', '.join(str(f) for f in files.values())}")
    if run.failures:
        print(f"{len(run.failures)} file(s) failed (listed in {files['report.md']}):")
        for failure in run.failures:
            print(f"  {failure['path']}: {failure['error']}")
        return 1
    return 0
