"""Weight interpolation between two releases of one architecture (weight-space ensembling).

    .venv/bin/python scripts/interpolate_weights.py A.safetensors B.safetensors 0.3 -o MIX.safetensors

Writes ``(1 - a) x A + a x B`` for every floating-point tensor (BatchNorm's running statistics
included; its integer batch counter is taken from B) as a release with A's inference settings,
recording both sources and ``a`` in its metadata. ``A`` and ``B`` are release files or shipped
names (``default``). docs/experiments.md reports what it gave on the real composites.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from gknet.errors import GknetError
from gknet.inference.release import read_release, release_files, save_release, weights_path
from gknet.io.guard import Inputs


def interpolate(a: str, b: str, weight: float, output: str) -> None:
    if not 0.0 <= weight <= 1.0:
        raise GknetError(f"the weight of B must lie in [0, 1], got {weight}")
    first, second, out = weights_path(a), weights_path(b), Path(output).with_suffix(".safetensors")
    Inputs(files=[*release_files(first), *release_files(second)]).check(out, out.with_suffix(".json"))
    model, cfg, settings, _ = read_release(first)
    other, other_cfg, *_ = read_release(second)
    if cfg != other_cfg:
        raise GknetError(f"{first} and {second} hold different architectures: nothing to interpolate")
    theirs = other.state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.lerp_(theirs[name], weight)
            else:
                tensor.copy_(theirs[name])
    meta = {"interpolated": {"a": str(first), "b": str(second), "weight_of_b": weight}}
    print(f"wrote {save_release(model, cfg, out, meta=meta, inference=settings)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="release A (a .safetensors file or a shipped name)")
    parser.add_argument("b", help="release B, same architecture as A")
    parser.add_argument("weight", type=float, help="weight of B, in [0, 1]")
    parser.add_argument("-o", "--output", required=True, help="output .safetensors (its .json beside it)")
    args = parser.parse_args(argv)
    try:
        interpolate(args.a, args.b, args.weight, args.output)
    except GknetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
