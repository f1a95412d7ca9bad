"""DDP plumbing: this process's place in a torchrun launch, and the batches each rank takes.

Under DDP each rank takes a fixed slice of every global batch (``train.batch_size`` is the
global batch and must be divisible by the world size); rank 0 alone validates, logs and
writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the ranks (itself in a single process)."""
        if self.world > 1:
            dist.all_reduce(value)
            value /= self.world
        return value

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any rank, so that every rank takes the same branch."""
        value = torch.tensor([float(flag)], device=device)
        if self.world > 1:
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when torchrun's RANK/WORLD_SIZE/LOCAL_RANK are set."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return Dist()
    info = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return info


def epoch_batches(
    n: int, global_batch: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> list[list[int]]:
    """This rank's index lists for every full global batch of epoch ``epoch`` (remainder dropped).

    Global batch s is ``perm[s*B:(s+1)*B]`` of a permutation fixed by (seed, epoch); rank r
    takes its r-th contiguous slice of B / world items.
    """
    entropy = np.random.SeedSequence([seed, epoch]).generate_state(2)
    gen = torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
    perm = torch.randperm(n, generator=gen).tolist()
    per_rank = global_batch // world
    starts = range(0, n - global_batch + 1, global_batch)
    return [perm[s + rank * per_rank : s + (rank + 1) * per_rank] for s in starts]
