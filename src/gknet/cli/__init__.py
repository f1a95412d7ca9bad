"""The ``gknet`` command. Each module in this package adds one subcommand.

A subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func`` to a function taking the parsed arguments and returning an exit code. The
modules only parse arguments and call the Python API. Modules whose name starts with
``_`` are helpers, not subcommands.

Every failure the user can cause ends in one line ``gknet CMD: error: ...`` and exit code
2: GknetError, argparse's usage errors and unforeseen OSErrors alike. Warnings are one line each, and SIGTERM
stops a run like Ctrl+C (temporaries removed, "interrupted" printed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import signal
import sys
import threading
import warnings

from gknet import __version__
from gknet.errors import GknetError

EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool its pipe's reader left


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (the usage itself is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl+C."""


def _raise_terminated(signum, frame):
    raise _Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _warnings_as_lines(command: str):
    """Any warning not handled by the command itself becomes one plain line (no source line)."""

    def show(message, category, *_args, **_kwargs):
        print(f"gknet {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gknet", description="Image harmonization with GKNet (ICCV 2023).")
    parser.add_argument("--version", action="version", version=f"gknet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (already printed), --help or --version
        return exc.code if isinstance(exc.code, int) else 0
    try:
        with _sigterm_as_interrupt(), _warnings_as_lines(args.command):
            return int(args.func(args) or 0)
    except GknetError as exc:
        _say(f"gknet {args.command}: error: {exc}")
        return 2
    except BrokenPipeError:  # the reader left (``gknet info --json | head``): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # the file system said no where no check foresaw it: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"gknet {args.command}: error: {where}{exc.strerror or exc}")
        return 2
    except KeyboardInterrupt as exc:
        how = signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT
        _say(f"gknet {args.command}: interrupted ({how.name})")
        return EXIT_INTERRUPTED[how]


def _say(line: str) -> None:
    """A line on stderr of its own, also when a progress bar was left mid-line."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
