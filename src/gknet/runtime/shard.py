"""Splitting one job over many processes: ``--shard K/N``, or the shard torchrun assigns.

Shard K of N (1 <= K <= N) takes the K-th of N contiguous, near-equal slices of the
inputs in their deterministic order (folders: sorted by file stem; iHarmony4: the list
files' order), so N processes started in any way (a scheduler's job array, torchrun, a
shell loop) cover every input exactly once, and concatenating the shards' results in
shard order gives the single-process order. Slices can be made to start at multiples of
a unit (evaluation: its batch size, so batches are the single-process run's).

Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set and more than one process), process RANK
takes shard RANK + 1 of WORLD_SIZE and CUDA device ``LOCAL_RANK``; no process group is
needed, the processes never communicate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gknet.errors import GknetError


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __post_init__(self):
        if not 1 <= self.index <= self.count:
            raise GknetError(f"shard must be K/N with 1 <= K <= N, got {self.index}/{self.count}")

    def bounds(self, n: int, unit: int = 1) -> tuple[int, int]:
        """[start, stop) of this shard's slice of ``n`` inputs; ``unit``: slices start at its multiples."""
        if unit < 1:
            raise GknetError(f"shard unit must be >= 1, got {unit}")
        units = -(-n // unit)
        start, stop = ((self.index - 1) * units // self.count, self.index * units // self.count)
        return min(start * unit, n), min(stop * unit, n)

    def select(self, items: Sequence, unit: int = 1) -> list:
        start, stop = self.bounds(len(items), unit)
        return list(items[start:stop])

    @property
    def name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> Shard(K, N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise GknetError(f"--shard must look like K/N (e.g. 1/4), got {text!r}")
    return Shard(int(match[1]), int(match[2]))


def torchrun_shard(env: Mapping[str, str] = os.environ) -> Shard | None:
    """The shard of a process started by torchrun with more than one process, else None."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except ValueError:
        found = f"{env['RANK']!r} and {env['WORLD_SIZE']!r}"
        raise GknetError(f"RANK and WORLD_SIZE must be integers, got {found}") from None
    return Shard(rank + 1, world) if world > 1 else None


def resolve_shard(option: str | None, env: Mapping[str, str] = os.environ) -> Shard | None:
    """An explicit ``--shard K/N`` wins; otherwise torchrun's, if any."""
    return parse_shard(option) if option else torchrun_shard(env)


def local_rank(env: Mapping[str, str] = os.environ) -> int:
    """torchrun's ``LOCAL_RANK`` (0 outside torchrun): the GPU index of a bare ``cuda`` device
    (see :func:`gknet.runtime.device.resolve_device`)."""
    try:
        return int(env.get("LOCAL_RANK", 0))
    except ValueError:
        raise GknetError(f"LOCAL_RANK must be an integer, got {env['LOCAL_RANK']!r}") from None
