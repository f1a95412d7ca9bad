"""How much a model changes real composites labelled realistic / unrealistic by people.

Harmonizes the Lalonde & Efros composites (../shared/data/lalonde_composites) at full resolution
and prints, per human label, the mean and median |output - composite| inside the mask (0-255),
and the ratio unrealistic / realistic (a model that knows what it is doing changes the realistic
ones less: a ratio above 1). Writes the numbers as JSON and, with --figure, 12 unrealistic
composites before / after (spread evenly over the sorted names).

Usage: python benchmarks/lalonde.py [--weights default] [--json OUT.json] [--figure OUT.jpg] [--strength S]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gknet import Harmonizer
from gknet.evaluation.realism import before_after_figure, read_labels, realism_changes, summarize_changes
from gknet.io.images import load_mask, load_rgb, save_image_atomic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "lalonde_composites"
FIGURE_COUNT = 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--weights", default="default")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the per-image changes and the summary here")
    parser.add_argument("--figure", help="write 12 unrealistic composites before / after here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    harmonizer = Harmonizer.from_pretrained(args.weights, device="cpu")

    class Scaled:  # the harmonizer at the requested strength
        def __call__(self, composite, mask, **kwargs):
            return harmonizer(composite, mask, strength=args.strength, **kwargs)

    rows = realism_changes(Scaled(), args.root)
    summary = summarize_changes(rows)
    for label in ("realistic", "unrealistic"):
        s = summary[label]
        print(
            f"{label:>12}: {s['n']} composites, mean change {s['mean']:.2f}, median {s['median']:.2f} (0-255)"
        )
    print(f"{'ratio':>12}: unrealistic / realistic = {summary['ratio']:.3f}")
    if args.json:
        document = {"weights": args.weights, "strength": args.strength, "summary": summary, "rows": rows}
        Path(args.json).write_text(json.dumps(document, indent=1))
        print(f"wrote {args.json}")
    if args.figure:
        labels = read_labels(args.root)
        unrealistic = sorted(n for n, label in labels.items() if label == "unrealistic")
        chosen = [unrealistic[int(i)] for i in np.linspace(0, len(unrealistic) - 1, FIGURE_COUNT)]
        changes = {r["name"]: r["change"] for r in rows}
        pairs = []
        for name in chosen:
            composite = load_rgb(Path(args.root) / "composites" / f"{name}.jpg")
            mask = load_mask(Path(args.root) / "masks" / f"{name}.png")
            pairs.append((name, Scaled()(composite, mask, resize_mask=True), changes[name]))
        path = save_image_atomic(before_after_figure(args.root, pairs), args.figure, overwrite=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
