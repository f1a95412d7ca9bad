"""Appearance edits that turn a real photo into a realistic composite and its (re-graded) target.

iHarmony4 builds its composites by changing a real object's appearance: colour transfer from
other photos' objects and LUTs (HCOCO, HFlickr), the same photo retouched by another expert
(HAdobe5k), the same scene at another time of day (Hday2night); in the last two the *target*
is an edited or re-lit photo too. :func:`make_composite` imitates that with two independent
edits of one photo: ``composite = M * A(photo) + (1 - M) * B(photo)``, ``target = B(photo)``,
where A edits the object's pixels (:func:`perturb_foreground`) and B the whole scene
(:func:`perturb_scene`); the mode decides which of them is the identity (:data:`MODE_PROBS`).

Object families (A), 1-3 per sample, at most one of the transfer families:

- white_balance: colour temperature / tint gains in (approximately) linear light.
- exposure_gamma: exposure in stops, then a gamma.
- saturation_contrast: saturation around luma, contrast around the pixels' mean luma.
- tone_curve: smooth monotone master + per-channel curves (Bernstein polynomials).
- day_night: darker, bluer, desaturated, more contrast (optionally lit bright spots) or dusk.
- light_gradient: a smooth low-frequency gain (light falloff / soft shadow) across the object.
- lab_transfer: Lab mean/std transfer towards a reference object (Reinhard et al.).
- cov_transfer: RGB mean + covariance matching to the reference (closed form).
- hist_transfer: per-channel histogram matching to the reference.
- idt_transfer: iterative distribution transfer to the reference (Pitie et al.).
- illuminant: a real illumination change, ccHarmony's measured colour maps (:class:`IlluminationMaps`).
- film_grade: a real photographic colour grade, one of RawTherapee's film simulations as a 3D LUT
  (:class:`FilmLuts`).

Scene families (B) are the whole-image ones of the first five and film_grade. Transfers and illumination
changes that clip too many object pixels are redrawn or weakened (:data:`MAX_NEW_CLIPPED`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gknet.color.histogram import match_quantiles
from gknet.color.spaces import lab_to_rgb, rgb_to_lab
from gknet.data.beside import load_arrays
from gknet.data.luts import FilmLuts
from gknet.errors import GknetError

GRADE_FAMILIES = (
    "film_grade",
    "white_balance",
    "exposure_gamma",
    "saturation_contrast",
    "tone_curve",
    "day_night",
    "light_gradient",
)
TRANSFER_FAMILIES = ("lab_transfer", "cov_transfer", "hist_transfer", "idt_transfer", "illuminant")
FAMILIES = TRANSFER_FAMILIES + GRADE_FAMILIES  # application order: a transfer first, then grades
SCENE_FAMILIES = tuple(f for f in GRADE_FAMILIES if f != "light_gradient")  # whole-image grades

# Relative frequencies of the object families. Colour transfer between objects made HCOCO and
# HFlickr (most of iHarmony4), grades and re-lighting the rest: about half of the draws each.
FAMILY_WEIGHTS = {
    "white_balance": 1.0,
    "exposure_gamma": 1.0,
    "saturation_contrast": 0.7,
    "tone_curve": 1.0,
    "day_night": 0.4,
    "light_gradient": 0.5,
    "lab_transfer": 0.8,
    "cov_transfer": 0.8,
    "hist_transfer": 0.7,
    "idt_transfer": 0.5,
    "illuminant": 1.0,
    "film_grade": 0.8,
}
# Scene (B) edits: global grades as an expert retouch (HAdobe5k) or a time-of-day change (Hday2night).
SCENE_WEIGHTS = {
    "film_grade": 1.0,
    "white_balance": 1.0,
    "exposure_gamma": 1.0,
    "saturation_contrast": 0.6,
    "tone_curve": 1.0,
    "day_night": 0.8,
}
FAMILY_COUNT_PROBS = (0.4, 0.4, 0.2)  # 1, 2 or 3 object families per sample
SCENE_COUNT_PROBS = (0.6, 0.4)  # 1 or 2 scene families
# Edit modes. "object" (B = identity) is iHarmony4's HCOCO/HFlickr case, most of the benchmark;
# "scene" (A = identity: a re-graded or night scene around the untouched object) and "both"
# (independent A and B) are the HAdobe5k/Hday2night case, where the target is itself edited.
MODE_PROBS = {"object": 0.5, "scene": 0.25, "both": 0.25}
# A harmonious sample's composite equals its target (the photo, or the photo with the object under
# the scene's edit): the model must learn to leave such composites alone. Drawn before the mode.
HARMONIOUS = "harmonious"
HARMONIOUS_SHARE = 0.1
MILD_FRACTION = 0.0  # share of mild edits (strengths x MILD_SCALE): measured, see docs/synthetic.md
MILD_SCALE = 0.3
STRENGTH_RANGE = (0.5, 1.0)
# A transfer / illumination change may push at most this share of the object's pixels to 0 or 255
# (beyond those already there); otherwise it is redrawn (illuminant) and weakened.
MAX_NEW_CLIPPED = 0.2
_WEAKEN_STEPS = 3  # halve the blend this many times before giving up on a draw
_ILLUMINANT_DRAWS = 4

_GAMMA = 2.2  # sRGB <-> linear approximation; exact transfer curves are not needed for plausible edits
_LUMA = (0.2126, 0.7152, 0.0722)
_CURVE_DEGREE = 5
_LUT_SIZE = 1024
_LUT_GRID = np.linspace(0.0, 1.0, _LUT_SIZE)


# ----------------------------------------------------------------------------------------------------
# Elementary edits on foreground pixels [3, N] in [0, 1] (only the object is computed: fast).


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor(_LUMA, dtype=x.dtype).view(3, 1)).sum(0, keepdim=True)


def _gain_linear(x: torch.Tensor, log2_gain: torch.Tensor | float) -> torch.Tensor:
    """Multiply linear light by 2**log2_gain (a scalar, [3, 1] or [3, N])."""
    return (x.pow(_GAMMA) * torch.exp2(torch.as_tensor(log2_gain, dtype=x.dtype))).clamp(0, 1).pow(1 / _GAMMA)


def _wb_log2_gains(temperature: float, tint: float) -> torch.Tensor:
    """Per-channel log2 gains [3, 1] for a warm(+)/cool(-) temperature and magenta(+)/green(-) tint.

    Normalised so that a neutral grey keeps its luminance: white balance changes colour, not exposure.
    """
    log2 = np.array([temperature / 2 + tint / 4, -tint / 2, -temperature / 2 + tint / 4])
    log2 -= np.log2(np.dot(_LUMA, np.exp2(log2)))
    return torch.tensor(log2, dtype=torch.float32).view(3, 1)


def _saturate(x: torch.Tensor, factor: float) -> torch.Tensor:
    y = _luma(x)
    return (y + factor * (x - y)).clamp(0, 1)


def _contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = _luma(x).mean()
    return (mean + factor * (x - mean)).clamp(0, 1)


def _bernstein_curve(coeffs: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Bernstein polynomial with the given coefficients: monotone when the coefficients are."""
    n = len(coeffs) - 1
    k = np.arange(n + 1)
    binom = np.array([math.comb(n, i) for i in k])
    basis = binom * grid[:, None] ** k * (1 - grid[:, None]) ** (n - k)
    return basis @ coeffs


def _random_curve(rng: np.random.Generator, spread: float, black: float, white: float) -> np.ndarray:
    """Monotone smooth curve from ``black`` to ``white`` on the LUT grid: random Bernstein steps."""
    steps = np.exp(rng.normal(0.0, spread, _CURVE_DEGREE))
    coeffs = np.concatenate([[0.0], np.cumsum(steps) / steps.sum()])
    return black + (white - black) * _bernstein_curve(coeffs, _LUT_GRID)


# ----------------------------------------------------------------------------------------------------
# Families: each draws its parameters from ``rng`` (scaled by strength ``s``) and returns
# (pixels, params). ``pos`` [2, N] holds the pixels' (row, column) for spatially varying edits
# (None for a whole-image scene edit); ``sources`` the reference pixels and illumination maps.


def _signed(rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float]) -> float:
    """-U(*low) or +U(*high) with equal odds: a clear change in either direction, never ~0."""
    return float(-rng.uniform(*low) if rng.random() < 0.5 else rng.uniform(*high))


def _white_balance(x, pos, rng, s, sources):
    temperature = _signed(rng, (0.5, 2.0), (0.5, 2.0)) * s
    tint = float(rng.uniform(-0.8, 0.8) * s)
    return _gain_linear(x, _wb_log2_gains(temperature, tint)), {"temperature": temperature, "tint": tint}


def _exposure_gamma(x, pos, rng, s, sources):
    stops = _signed(rng, (0.4, 1.8), (0.4, 1.2)) * s
    gamma = float(np.exp(_signed(rng, (0.1, 0.4), (0.1, 0.4)) * s))
    return _gain_linear(x, stops).pow(gamma), {"stops": stops, "gamma": gamma}


def _saturation_contrast(x, pos, rng, s, sources):
    saturation = float(np.exp(_signed(rng, (0.4, 1.2), (0.3, 0.7)) * s))
    contrast = float(np.exp(_signed(rng, (0.25, 0.7), (0.25, 0.6)) * s))
    return _contrast(_saturate(x, saturation), contrast), {"saturation": saturation, "contrast": contrast}


def _tone_curve(x, pos, rng, s, sources):
    master = _random_curve(rng, 1.3 * s, rng.uniform(0, 0.08) * s, 1 - rng.uniform(0, 0.12) * s)
    luts = []
    for _ in range(3):
        channel = _random_curve(rng, 0.7 * s, rng.uniform(0, 0.05) * s, 1 - rng.uniform(0, 0.08) * s)
        luts.append(np.interp(master, _LUT_GRID, channel))
    lut = torch.from_numpy(np.stack(luts).astype(np.float32))
    idx = (x.clamp(0, 1) * (_LUT_SIZE - 1)).round().long()
    return torch.gather(lut, 1, idx), {"mid_gray": lut[:, _LUT_SIZE // 2].tolist()}


def _day_night(x, pos, rng, s, sources):
    original = x
    s = 0.5 + 0.5 * s  # a time-of-day change is never subtle
    if rng.random() < 0.6:
        mode, stops = "night", -rng.uniform(1.5, 3.0) * s
        temperature, tint = -rng.uniform(0.4, 0.9) * s, rng.uniform(-0.1, 0.15) * s
        saturation, contrast = 1 - rng.uniform(0.3, 0.7) * s, 1 + rng.uniform(0.1, 0.4) * s
    else:
        mode, stops = "dusk", -rng.uniform(0.4, 1.4) * s
        temperature, tint = rng.uniform(0.4, 0.9) * s, rng.uniform(0.0, 0.3) * s
        saturation, contrast = 1 + rng.uniform(-0.2, 0.25) * s, 1 + rng.uniform(0.0, 0.3) * s
    x = _gain_linear(x, _wb_log2_gains(temperature, tint) + stops)
    x = _contrast(_saturate(x, saturation), contrast)
    params = {"mode": mode, "stops": float(stops), "temperature": float(temperature), "lights": False}
    if mode == "night" and rng.random() < 0.5:
        # Lit windows / lamps: the brightest parts of the object stay bright and turn warm.
        y = _luma(original)
        threshold = torch.quantile(y, 1 - rng.uniform(0.03, 0.12)).item()
        weight = ((y - threshold) / max(1 - threshold, 1e-3)).clamp(0, 1)
        weight = weight * weight * (3 - 2 * weight)  # smoothstep: no hard edge around the lights
        warm = _gain_linear(original, _wb_log2_gains(1.2, 0.1) + 0.3)
        x = x + weight * (warm - x)
        params["lights"] = True
    return x, params


def _light_gradient(x, pos, rng, s, sources):
    lo = pos.min(1, keepdim=True).values
    extent = pos.max(1, keepdim=True).values - lo
    v, u = ((pos - lo) / extent.clamp_min(1) * 2 - 1).float()  # [-1, 1] over the object's bounding box
    angle = rng.uniform(0, 2 * np.pi)
    ramp_stops = rng.uniform(1.5, 3.0) * s
    field = ramp_stops / 2 * (np.cos(angle) * u + np.sin(angle) * v)
    # Soft blobs: a 3x3 grid of random gains, bicubically interpolated over the bounding box.
    blob_stops = rng.uniform(0.4, 1.0) * s
    blobs = torch.tensor(rng.normal(0, blob_stops, (1, 1, 3, 3)), dtype=torch.float32)
    size = (int(extent[0]) + 1, int(extent[1]) + 1)
    box = F.interpolate(blobs, size=size, mode="bicubic", align_corners=True)[0, 0]
    field = field + box[pos[0] - lo[0], pos[1] - lo[1]]
    field = field - field.mean()  # redistributes light; exposure_gamma handles global brightness
    # Sunlit parts are warmer and shadowed parts bluer (lit by the sky).
    warmth = rng.uniform(0.0, 0.3)
    log2 = field * torch.tensor([[1 + warmth], [1.0], [1 - warmth]])
    params = {"ramp_stops": float(ramp_stops), "blob_stops": float(blob_stops), "warmth": float(warmth)}
    return _gain_linear(x, log2), params


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


def _transfer_family(method: Callable[..., torch.Tensor]) -> Callable:
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


def _illuminant(x, pos, rng, s, sources):
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


def _film_grade(x, pos, rng, s, sources):
    luts = sources.luts
    if luts is None:
        raise ValueError("the film_grade family needs film grades (Sources.luts)")
    index = int(rng.integers(len(luts)))
    wanted = float(min(1.0, 1.25 * s))  # mostly the whole grade, as a photographer applies it
    out, alpha = blend_plausible(x, luts.apply(x, index), wanted)
    return out, {"lut": luts.names[index], "alpha": alpha, "wanted_alpha": wanted}


_FAMILY_FUNCS: dict[str, Callable] = {
    "white_balance": _white_balance,
    "exposure_gamma": _exposure_gamma,
    "saturation_contrast": _saturation_contrast,
    "tone_curve": _tone_curve,
    "day_night": _day_night,
    "light_gradient": _light_gradient,
    "lab_transfer": _transfer_family(lab_mean_std_transfer),
    "cov_transfer": _transfer_family(covariance_transfer),
    "hist_transfer": _transfer_family(histogram_transfer),
    "idt_transfer": _transfer_family(iterative_distribution_transfer),
    "illuminant": _illuminant,
    "film_grade": _film_grade,
}


def sample_families(
    rng: np.random.Generator,
    weights: dict[str, float] = FAMILY_WEIGHTS,
    count_probs: Sequence[float] = FAMILY_COUNT_PROBS,
) -> list[str]:
    """1 to ``len(count_probs)`` distinct families drawn by ``weights``, in FAMILIES order,
    at most one of them a transfer."""
    names = [f for f in FAMILIES if weights.get(f, 0) > 0]
    count = min(int(rng.choice(len(count_probs), p=count_probs)) + 1, len(names))
    p = np.array([weights[f] for f in names])
    chosen = [names[i] for i in sorted(rng.choice(len(names), size=count, replace=False, p=p / p.sum()))]
    transfers = [f for f in chosen if f in TRANSFER_FAMILIES]
    return [f for f in chosen if f not in transfers[1:]]


def _apply_families(
    x: torch.Tensor,
    pos: torch.Tensor | None,
    rng: np.random.Generator,
    families: Sequence[str] | None,
    weights: dict[str, float],
    count_probs: Sequence[float],
    sources: Sources,
    mild_share: float = MILD_FRACTION,
) -> tuple[torch.Tensor, dict]:
    """Draw (unless given) and apply families to pixels [3, N]; the info dict says what was done.
    Drawn families are mild (strengths x MILD_SCALE) with probability ``mild_share``."""
    mild = False
    if families is None:
        families = sample_families(rng, weights, count_probs)
        mild = bool(rng.random() < mild_share)
    unknown = sorted(set(families) - set(weights))
    if unknown:
        raise ValueError(f"unknown perturbation families {unknown}; choose from {list(weights)}")
    info: dict = {"families": [], "strengths": {}, "params": {}, "mild": mild}
    for name in FAMILIES:
        if name not in families:
            continue
        strength = float(rng.uniform(*STRENGTH_RANGE)) * (MILD_SCALE if mild else 1.0)
        x, params = _FAMILY_FUNCS[name](x, pos, rng, strength, sources)
        info["families"].append(name)
        info["strengths"][name] = strength
        info["params"][name] = params
    return x.clamp(0, 1), info


def _check_image(image: torch.Tensor) -> None:
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")


def perturb_foreground(
    image: torch.Tensor,
    mask: torch.Tensor,
    rng: np.random.Generator,
    reference: torch.Tensor | None = None,
    families: Sequence[str] | None = None,
    illuminants: IlluminationMaps | None = None,
    weights: dict[str, float] = FAMILY_WEIGHTS,
    luts: FilmLuts | None = None,
    mild_share: float = MILD_FRACTION,
) -> tuple[torch.Tensor, dict]:
    """Change the appearance of the object in ``image`` [3, H, W] (in [0, 1]) where ``mask`` > 0.5.

    ``reference`` [3, h, w]: pixels the transfer families move towards (another photo's object,
    e.g. a [3, 1, N] strip); without one they move towards random statistics. ``illuminants``:
    the maps of the ``illuminant`` family and ``luts`` the grades of ``film_grade`` (neither is
    drawn without them). ``families``: force these (applied in FAMILIES order, full strength
    range); by default 1-3 are drawn by ``weights`` and a share ``mild_share`` is mild. Returns
    the composite (the input, bit for bit, outside the mask) and an info dict with the families,
    strengths and parameters.
    """
    _check_image(image)
    if mask.shape != (1, *image.shape[1:]):
        raise ValueError(f"mask must be [1, {image.shape[1]}, {image.shape[2]}], got {tuple(mask.shape)}")
    weights = _available(weights, illuminants, luts)
    composite = image.clone(memory_format=torch.contiguous_format)
    fg = mask[0] > 0.5
    if not fg.any():
        return composite, {"families": [], "strengths": {}, "params": {}, "mild": False}
    # Work on the object's pixels only (flat indices: much faster than boolean indexing).
    flat = torch.nonzero(fg.flatten()).squeeze(1)
    width = image.shape[2]
    pos = torch.stack([flat // width, flat % width])
    x = image.flatten(1).index_select(1, flat).float()
    sources = Sources(reference, illuminants, luts)
    x, info = _apply_families(x, pos, rng, families, weights, FAMILY_COUNT_PROBS, sources, mild_share)
    composite.view(3, -1).index_copy_(1, flat, x.to(image.dtype))
    return composite, info


def _available(weights: dict[str, float], illuminants, luts) -> dict[str, float]:
    """``weights`` without the families whose data is missing."""
    missing = {"illuminant": illuminants is None, "film_grade": luts is None}
    return {f: 0.0 if missing.get(f) else w for f, w in weights.items()}


def perturb_scene(
    image: torch.Tensor,
    rng: np.random.Generator,
    families: Sequence[str] | None = None,
    luts: FilmLuts | None = None,
    mild_share: float = MILD_FRACTION,
) -> tuple[torch.Tensor, dict]:
    """A whole-image edit of ``image`` [3, H, W]: 1-2 SCENE_FAMILIES (a re-grade, film grade,
    re-exposure or time-of-day change; ``film_grade`` only with ``luts``), or the forced
    ``families``. Returns the edited image and the info dict."""
    _check_image(image)
    weights = _available(SCENE_WEIGHTS, None, luts)
    x, info = _apply_families(
        image.reshape(3, -1).float(),
        None,
        rng,
        families,
        weights,
        SCENE_COUNT_PROBS,
        Sources(luts=luts),
        mild_share,
    )
    return x.view_as(image).to(image.dtype), info


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels: real composites and targets are 8-bit images."""
    return (x * 255).round() / 255


def make_composite(
    photo: torch.Tensor,
    mask: torch.Tensor,
    rng: np.random.Generator,
    reference: torch.Tensor | None = None,
    illuminants: IlluminationMaps | None = None,
    mode: str | None = None,
    mode_probs: dict[str, float] = MODE_PROBS,
    weights: dict[str, float] = FAMILY_WEIGHTS,
    families: Sequence[str] | None = None,
    scene_families: Sequence[str] | None = None,
    luts: FilmLuts | None = None,
    harmonious_share: float = HARMONIOUS_SHARE,
    mild_share: float = MILD_FRACTION,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(composite, target, info) from one photo [3, H, W] and its object mask [1, H, W].

    ``composite = M * A(photo) + (1 - M) * B(photo)`` and ``target = B(photo)``, both 8-bit:
    mode "object" edits only the object (B = identity), "scene" only the scene (A = identity),
    "both" edits each independently, "harmonious" gives composite = target (B = identity or a
    scene edit, each half of the time: nothing to correct). ``mode`` None draws "harmonious"
    with probability ``harmonious_share``, else a mode by ``mode_probs``; ``weights``: the object
    families' weights; ``families`` / ``scene_families`` force A's / B's families; ``luts``: the
    film grades; ``mild_share``: the share of mild edits. Outside the mask the composite equals
    the target exactly.
    info: {"mode", "object", "scene"} with the per-edit info dicts (None for an identity).
    """
    if mode is None and harmonious_share > 0 and rng.random() < harmonious_share:
        mode = HARMONIOUS
    if mode is None:
        p = np.array([mode_probs.get(m, 0.0) for m in MODE_PROBS])
        mode = str(rng.choice(list(MODE_PROBS), p=p / p.sum()))
    if mode not in (*MODE_PROBS, HARMONIOUS):
        raise ValueError(f"unknown edit mode {mode!r}; choose from {[*MODE_PROBS, HARMONIOUS]}")
    info: dict = {"mode": mode, "object": None, "scene": None}
    target = photo
    edit_scene = mode in ("scene", "both") or (mode == HARMONIOUS and (scene_families or rng.random() < 0.5))
    if edit_scene:
        target, info["scene"] = perturb_scene(photo, rng, scene_families, luts, mild_share)
        target = quantize(target)
    if mode == HARMONIOUS:
        return target.clone(), target, info
    composite = photo
    if mode != "scene":
        edited, info["object"] = perturb_foreground(
            photo, mask, rng, reference, families, illuminants, weights, luts, mild_share
        )
        composite = quantize(edited)
    return torch.where(mask > 0.5, composite, target), target, info
