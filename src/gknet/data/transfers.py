"""Edits that move an object towards something real: another object's colours (colour
transfer), a measured illumination change (ccHarmony's maps) or a film grade (RawTherapee's
film simulations); plus the clipping guard every such edit passes (:func:`blend_plausible`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gknet.color.histogram import match_quantiles
from gknet.color.spaces import lab_to_rgb, rgb_to_lab
from gknet.data.beside import load_arrays
from gknet.data.luts import FilmLuts
from gknet.errors import GknetError

# A transfer / illumination change may push at most this share of the object's pixels to 0 or 255
# (beyond those already there); otherwise it is redrawn (illuminant) and weakened.
MAX_NEW_CLIPPED = 0.2
_WEAKEN_STEPS = 3  # halve the blend this many times before giving up on a draw
_ILLUMINANT_DRAWS = 4

# ----------------------------------------------------------------------------------------------------
# Colour transfer towards a reference distribution (pixels [3, N] in [0, 1]).


@dataclass(frozen=True)
class Sources:
    """What the transfer families move towards: ``reference`` pixels [3, M] (another photo's
    object), the real illumination maps and the film grades; any may be None."""

    reference: torch.Tensor | None = None
    illuminants: IlluminationMaps | None = None
    luts: FilmLuts | None = None


def _lab_stats(lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return lab.mean(1, keepdim=True), lab.std(1, keepdim=True).clamp_min(1e-3)


def _reference(x: torch.Tensor, sources: Sources, rng: np.random.Generator) -> torch.Tensor:
    """The reference pixels [3, M], or without one the object's own pixels with random Lab statistics."""
    if sources.reference is not None:
        return sources.reference.reshape(3, -1).to(x.dtype)
    lab = rgb_to_lab(x.view(3, 1, -1)).view(3, -1)
    mean, std = _lab_stats(lab)
    shift = torch.tensor(rng.normal(0, 1, (3, 1)) * [[12.0], [9.0], [9.0]], dtype=x.dtype)
    scale = torch.tensor(np.exp(rng.normal(0, 0.3, (3, 1))), dtype=x.dtype)
    return lab_to_rgb(((lab - mean) * scale + mean + shift).view(3, 1, -1)).view_as(x)


def clipped_fraction(x: torch.Tensor) -> float:
    """Share of pixels [3, N] with a channel at (or beyond) 0 or 255 after 8-bit rounding."""
    return float(((x <= 0.5 / 255) | (x >= 254.5 / 255)).any(0).float().mean())


def blend_plausible(x: torch.Tensor, moved: torch.Tensor, alpha: float) -> tuple[torch.Tensor, float]:
    """``x + alpha (moved - x)``, with ``alpha`` halved while the result clips more than
    MAX_NEW_CLIPPED of the pixels that were not clipped before; (x, 0) when no blend passes."""
    before = clipped_fraction(x)
    for _ in range(_WEAKEN_STEPS + 1):
        out = x + alpha * (moved - x)
        if bool(torch.isfinite(out).all()) and clipped_fraction(out) - before <= MAX_NEW_CLIPPED:
            return out.clamp(0, 1), alpha
        alpha /= 2
    return x, 0.0


def lab_mean_std_transfer(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Reinhard transfer: the Lab mean and std of ``reference`` [3, M] on ``x`` [3, N]."""
    lab = rgb_to_lab(x.view(3, 1, -1)).view(3, -1)
    mean, std = _lab_stats(lab)
    ref_mean, ref_std = _lab_stats(rgb_to_lab(reference.reshape(3, 1, -1)).view(3, -1))
    # Extreme std ratios (a flat sky onto a textured object) give noise-like artefacts, not a colour grade.
    ratio = (ref_std / std).clamp(0.5, 2.0)
    return lab_to_rgb(((lab - mean) * ratio + ref_mean).view(3, 1, -1)).view_as(x)


_COV_EPS = 1e-4  # variance added to both covariances (a std of 2.5/255): flat objects stay invertible
_COV_GAIN = (0.5, 2.0)  # the same limit on how much the transfer may stretch any direction


def covariance_transfer(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """RGB mean + covariance matching: ``mu_r + C_r^1/2 C_s^-1/2 (x - mu_s)`` (unclamped)."""
    src, ref = x.double().numpy(), reference.reshape(3, -1).double().numpy()
    mu_s, mu_r = src.mean(1, keepdims=True), ref.mean(1, keepdims=True)
    eye = _COV_EPS * np.eye(3)

    def roots(cov):  # symmetric square root and inverse square root
        w, v = np.linalg.eigh(cov + eye)
        w = np.sqrt(w.clip(_COV_EPS))
        return (v * w) @ v.T, (v / w) @ v.T

    transform = roots(np.cov(ref))[0] @ roots(np.cov(src))[1]
    u, sv, vt = np.linalg.svd(transform)
    transform = (u * sv.clip(*_COV_GAIN)) @ vt
    return torch.from_numpy(mu_r + transform @ (src - mu_s)).to(x.dtype)


def histogram_transfer(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-channel histogram matching of ``x`` [3, N] to ``reference`` [3, M]."""
    src, ref = x.numpy(), reference.reshape(3, -1).numpy()
    matched = [match_quantiles(s, r) for s, r in zip(src, ref, strict=True)]
    return torch.from_numpy(np.stack(matched)).to(x.dtype)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


IDT_ITERATIONS = 10


def iterative_distribution_transfer(
    x: torch.Tensor, reference: torch.Tensor, rng: np.random.Generator, iterations: int = IDT_ITERATIONS
) -> torch.Tensor:
    """Pitie et al.'s IDT: match the 1-D distributions along random rotated axes, repeatedly."""
    src, ref = x.double().numpy().T, reference.reshape(3, -1).double().numpy().T  # [N, 3], [M, 3]
    for _ in range(iterations):
        rotation = random_rotation(rng)
        projected, ref_projected = src @ rotation, ref @ rotation
        matched = np.stack([match_quantiles(projected[:, k], ref_projected[:, k]) for k in range(3)], 1)
        src = matched @ rotation.T
    return torch.from_numpy(src.T.copy()).to(x.dtype)


def transfer_family(method: Callable[..., torch.Tensor]) -> Callable:
    """A family that moves the object part of the way towards the reference with ``method``."""

    def family(x, pos, rng, s, sources):
        reference = _reference(x, sources, rng)
        args = (rng,) if method is iterative_distribution_transfer else ()
        wanted = float(rng.uniform(0.6, 1.0) * s)
        out, alpha = blend_plausible(x, method(x, reference, *args), wanted)
        return out, {"alpha": alpha, "wanted_alpha": wanted, "reference": sources.reference is not None}

    return family


# ----------------------------------------------------------------------------------------------------
# Real illumination changes (ccHarmony's colour-checker maps).

_MAP_TEST_COLOURS = torch.cartesian_prod(*[torch.linspace(16, 240, 6, dtype=torch.float64)] * 3).T
_MAP_RANGE = (-64.0, 320.0)  # a usable map keeps its test colours roughly inside 0-255


def polynomial_terms(rgb: torch.Tensor) -> torch.Tensor:
    """The 11 terms [r, g, b, rg, rb, gb, rr, gg, bb, rgb, 1] of pixels [3, ...] (0-255 values)."""
    r, g, b = rgb
    return torch.stack([r, g, b, r * g, r * b, g * b, r * r, g * g, b * b, r * g * b, torch.ones_like(r)])


class IlluminationMaps:
    """The ccHarmony maps ``forward`` (photo illuminant -> standard) and ``reverse`` (standard ->
    photo illuminant), [K, 3, 11] each, keeping the K maps that do not blow up in-gamut colours."""

    def __init__(self, path: str | Path) -> None:
        forward, reverse = load_arrays(path, ("forward", "reverse"), "illumination maps")
        if forward.ndim != 3 or forward.shape[1:] != (3, 11) or forward.shape != reverse.shape:
            raise GknetError(f"{path}: forward/reverse must both be [K, 3, 11], got {forward.shape}")
        # Test colours: a cube of standard-illuminant colours moved to each map's illuminant
        # (reverse), and back (forward): the maps were fitted on 24 checker colours only.
        forward, reverse = torch.from_numpy(forward).double(), torch.from_numpy(reverse).double()
        lit = torch.einsum("kij,jn->kin", reverse, polynomial_terms(_MAP_TEST_COLOURS))
        lit_terms = polynomial_terms(lit.clamp(0, 255).transpose(0, 1)).transpose(0, 1)
        back = torch.einsum("kij,kjn->kin", forward, lit_terms)

        def usable(out):
            inside = torch.isfinite(out) & (out >= _MAP_RANGE[0]) & (out <= _MAP_RANGE[1])
            return inside.flatten(1).all(1)

        keep = usable(lit) & usable(back)
        if not keep.any():
            raise GknetError(f"{path}: none of the {len(forward)} illumination maps is usable")
        self.forward, self.reverse = forward[keep].float(), reverse[keep].float()
        self.path = Path(path)

    def __len__(self) -> int:
        return len(self.forward)

    def apply(self, x: torch.Tensor, source: int, target: int) -> torch.Tensor:
        """``reverse[target](forward[source](x))`` on pixels [3, N] in [0, 1], clamped to [0, 1]."""
        y = (self.forward[source] @ polynomial_terms(x.float() * 255)).clamp(0, 255)
        return ((self.reverse[target] @ polynomial_terms(y)).clamp(0, 255) / 255).to(x.dtype)


def illuminant(x, pos, rng, s, sources):
    maps = sources.illuminants
    if maps is None:
        raise ValueError("the illuminant family needs illumination maps (Sources.illuminants)")
    before = clipped_fraction(x)
    for _ in range(_ILLUMINANT_DRAWS):  # the maps extrapolate: redraw pairs that clip the object
        source, target = (int(i) for i in rng.integers(len(maps), size=2))
        moved = maps.apply(x, source, target)
        if clipped_fraction(moved) - before <= MAX_NEW_CLIPPED:
            break
    wanted = float(min(1.0, 1.25 * s))  # mostly the full measured change; mild samples stay mild
    out, alpha = blend_plausible(x, moved, wanted)
    return out, {"source": source, "target": target, "alpha": alpha, "wanted_alpha": wanted}


# ----------------------------------------------------------------------------------------------------
# Real film grades (RawTherapee's film simulations as 3D lookup tables).


def film_grade(x, pos, rng, s, sources):
    luts = sources.luts
    if luts is None:
        raise ValueError("the film_grade family needs film grades (Sources.luts)")
    index = int(rng.integers(len(luts)))
    wanted = float(min(1.0, 1.25 * s))  # mostly the whole grade, as a photographer applies it
    out, alpha = blend_plausible(x, luts.apply(x, index), wanted)
    return out, {"lut": luts.names[index], "alpha": alpha, "wanted_alpha": wanted}
