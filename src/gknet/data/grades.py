"""Grades of an object's or a scene's pixels: elementary edits (gains in linear light, saturation,
contrast, smooth curves) and the grade families built from them (:mod:`gknet.data.perturbations`
draws and applies them). Pixels are [3, N] in [0, 1]; each family takes ``(x, pos, rng, s,
sources)`` and returns ``(pixels, params)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

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


def white_balance(x, pos, rng, s, sources):
    temperature = _signed(rng, (0.5, 2.0), (0.5, 2.0)) * s
    tint = float(rng.uniform(-0.8, 0.8) * s)
    return _gain_linear(x, _wb_log2_gains(temperature, tint)), {"temperature": temperature, "tint": tint}


def exposure_gamma(x, pos, rng, s, sources):
    stops = _signed(rng, (0.4, 1.8), (0.4, 1.2)) * s
    gamma = float(np.exp(_signed(rng, (0.1, 0.4), (0.1, 0.4)) * s))
    return _gain_linear(x, stops).pow(gamma), {"stops": stops, "gamma": gamma}


def saturation_contrast(x, pos, rng, s, sources):
    saturation = float(np.exp(_signed(rng, (0.4, 1.2), (0.3, 0.7)) * s))
    contrast = float(np.exp(_signed(rng, (0.25, 0.7), (0.25, 0.6)) * s))
    return _contrast(_saturate(x, saturation), contrast), {"saturation": saturation, "contrast": contrast}


def tone_curve(x, pos, rng, s, sources):
    master = _random_curve(rng, 1.3 * s, rng.uniform(0, 0.08) * s, 1 - rng.uniform(0, 0.12) * s)
    luts = []
    for _ in range(3):
        channel = _random_curve(rng, 0.7 * s, rng.uniform(0, 0.05) * s, 1 - rng.uniform(0, 0.08) * s)
        luts.append(np.interp(master, _LUT_GRID, channel))
    lut = torch.from_numpy(np.stack(luts).astype(np.float32))
    idx = (x.clamp(0, 1) * (_LUT_SIZE - 1)).round().long()
    return torch.gather(lut, 1, idx), {"mid_gray": lut[:, _LUT_SIZE // 2].tolist()}


def day_night(x, pos, rng, s, sources):
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


def light_gradient(x, pos, rng, s, sources):
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
