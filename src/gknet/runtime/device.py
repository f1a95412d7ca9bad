"""The one place that turns a ``--device`` value into a torch device."""

from __future__ import annotations

import torch

from gknet.errors import GknetError


def resolve_device(name: str | torch.device, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    A bare ``cuda`` means GPU ``local_rank`` (this process's GPU under torchrun). Requests
    that cannot be served fail with one clear GknetError.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise GknetError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise GknetError(f"unsupported device {str(name)!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GknetError(f"device {str(name)!r} requested but CUDA is not available (use cpu or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
