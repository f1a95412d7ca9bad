"""Real film grades: RawTherapee's film simulations as 3D lookup tables, applied trilinearly.

The tables (``../shared/data/film_luts/film_luts_33.npz``, CC BY-SA 4.0, see docs/synthetic.md)
are read at run time; the ``film_grade`` family of :mod:`gknet.data.transfers` uses them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gknet.data.beside import load_arrays
from gknet.errors import GknetError


def apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Pixels [3, N] in [0, 1] through a 3D LUT [S, S, S, 3] indexed ``lut[b, g, r]`` -> (R, G, B)
    (values in [0, 1]), by trilinear interpolation between the 8 surrounding grid points.

    ``grid_sample`` on the table as a volume (depth b, height g, width r) does exactly that, about
    4x faster than gathering the 8 corners by hand (2.7 against 10 ms for a 256 x 256 image).
    """
    volume = lut.permute(3, 0, 1, 2)[None]  # [1, 3, b, g, r]
    grid = (x.clamp(0, 1).T.to(lut.dtype) * 2 - 1).reshape(1, 1, 1, -1, 3)  # (x, y, z) = (r, g, b)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(3, -1).to(x.dtype)


class FilmLuts:
    """The film grades of a ``film_luts_33.npz``: ``luts`` uint8 [K, S, S, S, 3] (``[k, b, g, r]`` ->
    RGB) and their ``names``, kept as uint8 (a float copy of all would take about 100 MB)."""

    def __init__(self, path: str | Path) -> None:
        luts, names = load_arrays(path, ("luts", "names"), "film grades")
        size = luts.shape[1] if luts.ndim == 5 else 0
        if (
            luts.dtype != np.uint8
            or size < 2
            or luts.shape[1:] != (size, size, size, 3)
            or len(names) != len(luts)
        ):
            raise GknetError(
                f"{path}: luts must be uint8 [K, S, S, S, 3] with K names, got {luts.shape} {luts.dtype}"
            )
        self.luts, self.names = torch.from_numpy(luts), [str(n) for n in names]
        self.path = Path(path)

    def __len__(self) -> int:
        return len(self.luts)

    def apply(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Pixels [3, N] in [0, 1] through grade ``index``."""
        return apply_lut(x.float(), self.luts[index].float() / 255).to(x.dtype)
