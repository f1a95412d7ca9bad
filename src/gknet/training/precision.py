"""Training precision (``train.precision``): float32, or mixed precision through ``torch.autocast``.

- ``fp32``: everything in float32.
- ``bf16``: the forward pass under autocast to bfloat16, on a CPU or a GPU. Convolutions and
  matrix products run in bfloat16 (with float32 accumulation inside the kernels); the weights,
  their gradients, the optimiser state and the loss stay float32, and so do the sums of the
  kernel modulation (:mod:`gknet.models.ops`). bfloat16 has float32's range, so no loss
  scaling is needed. Fast on CPUs with AVX512-BF16 or AMX and on GPUs from Ampere on.
- ``fp16``: autocast to float16 on a CUDA GPU, with a gradient scaler (float16's range is
  narrow: small gradients would flush to zero unscaled). Not offered on the CPU.

Checkpoints and exported weights are float32 in every precision (autocast casts copies, the
parameters themselves stay float32).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from gknet.errors import GknetError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What ``train.precision`` means on one device: its autocast context and gradient scaler."""

    name: str
    device: torch.device

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast type (None: float32 throughout)."""
        return DTYPES[self.name]

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for float16 only (a pass-through otherwise)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``train.precision`` on ``device``; one clear error where the device cannot serve it."""
    if name not in DTYPES:
        raise GknetError(f"precision must be one of {', '.join(DTYPES)}, got {name!r}")
    if name == "fp16" and device.type != "cuda":
        raise GknetError("precision fp16 needs a CUDA device (its gradient scaler); on a CPU use bf16")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise GknetError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16")
    return Precision(name, device)
