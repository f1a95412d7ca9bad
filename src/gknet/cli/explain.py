"""``gknet explain``: pictures of what the model computed for one composite (paper Figures 9-11)."""

from __future__ import annotations

from gknet.cli._args import integer
from gknet.config import MIN_RESOLUTION


def register(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="kernel clusters, LRE attention and SCF maps for one composite (paper Figs. 9-11)",
        description="Write PNGs and an index.html showing the model's intermediates. See docs/explain.md.",
    )
    p.add_argument("composite", help="composite image")
    p.add_argument("mask", help="foreground mask (same size as the composite)")
    p.add_argument(
        "-o", "--out", required=True, metavar="DIR", help="output folder for the PNGs and index.html"
    )
    p.add_argument(
        "--weights",
        default="default",
        metavar="NAME|PATH",
        help="shipped weights (default: gknet_small) or a release .safetensors file",
    )
    p.add_argument(
        "--point",
        nargs=2,
        type=integer(0),
        metavar=("X", "Y"),
        help="LRE query point in composite pixels (default: centre of the mask's bounding box)",
    )
    p.add_argument(
        "--clusters", type=integer(2), default=6, metavar="K", help="K-means clusters (default: 6)"
    )
    p.add_argument(
        "--level",
        type=integer(1),
        metavar="L",
        help="SCF level, 1 = deepest (default: the finest modulated level)",
    )
    p.add_argument(
        "--resolution",
        type=integer(MIN_RESOLUTION),
        metavar="PX",
        help="network pass at PX x PX, as gknet harmonize; pictures with longer side PX "
        "(default: the weights' setting)",
    )
    p.add_argument("--seed", type=integer(0), default=0, help="K-means seed (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    p.add_argument(
        "--threads",
        type=integer(1),
        metavar="N",
        help="torch CPU threads (default: torch's); on a busy machine 1 makes K-means much faster",
    )
    p.add_argument("--overwrite", action="store_true", help="replace pictures already in DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from gknet.explain import FILES, check_out_dir, explain
    from gknet.inference.harmonizer import Harmonizer
    from gknet.inference.release import release_files, weights_path
    from gknet.io.guard import Inputs
    from gknet.io.images import load_mask, load_rgb

    inputs = Inputs([args.composite, args.mask, *release_files(args.weights)])
    inputs.check(*(Path(args.out) / name for name in FILES.values()))
    check_out_dir(args.out, args.overwrite)  # fail before the slow part
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    composite, mask = load_rgb(args.composite), load_mask(args.mask)
    weights = weights_path(args.weights)
    harmonizer = Harmonizer.from_pretrained(weights, resolution=args.resolution, device=args.device)
    written = explain(
        harmonizer,
        composite,
        mask,
        args.out,
        point=tuple(args.point) if args.point else None,
        clusters=args.clusters,
        level=args.level,
        seed=args.seed,
        overwrite=args.overwrite,
        notes=[f"weights: {weights.name}", f"composite: {args.composite}", f"mask: {args.mask}"],
    )
    for path in written.values():
        print(path)
    print(f"open {written['index']} in a browser")
    return 0
