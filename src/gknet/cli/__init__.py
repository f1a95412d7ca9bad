"""The ``gknet`` command. Each module in this package adds one subcommand.

A subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func`` to a function taking the parsed arguments and returning an exit code. The
modules only parse arguments and call the Python API.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from gknet import __version__
from gknet.errors import GknetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gknet", description="Image harmonization with GKNet (ICCV 2023)."
    )
    parser.add_argument("--version", action="version", version=f"gknet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GknetError as exc:
        print(f"gknet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gknet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
