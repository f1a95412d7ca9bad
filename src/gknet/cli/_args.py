"""argparse types for numbers: a value outside its range is a usage error naming the range."""

from __future__ import annotations

import argparse
import math


def integer(low: int, high: int | None = None):
    """An int in [low, high] (no upper bound when high is None)."""
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text[:40]!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False):
    """A finite float in the interval from low to high (open ends where told)."""
    left, right = "(" if low_open else "[", ")" if high_open or high is None else "]"
    allowed = f"a number in {left}{low:g}, {'inf' if high is None else f'{high:g}'}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text[:40]!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text[:40]}")
        return value

    return parse
