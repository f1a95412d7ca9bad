"""Appearance edits that turn a real photo into a realistic composite and its (re-graded) target:
which edit families are drawn, how often and how strongly (the families themselves are in
:mod:`gknet.data.grades` and :mod:`gknet.data.transfers`).

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
- illuminant: a real illumination change, ccHarmony's measured colour maps
  (:class:`~gknet.data.transfers.IlluminationMaps`).
- film_grade: a real photographic colour grade, one of RawTherapee's film simulations as a 3D LUT
  (:class:`~gknet.data.luts.FilmLuts`).

Scene families (B) are the whole-image ones of the first five and film_grade. Transfers and illumination
changes that clip too many object pixels are redrawn or weakened
(:data:`~gknet.data.transfers.MAX_NEW_CLIPPED`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from gknet.data.grades import (
    day_night,
    exposure_gamma,
    light_gradient,
    saturation_contrast,
    tone_curve,
    white_balance,
)
from gknet.data.luts import FilmLuts
from gknet.data.transfers import (
    IlluminationMaps,
    Sources,
    covariance_transfer,
    film_grade,
    histogram_transfer,
    illuminant,
    iterative_distribution_transfer,
    lab_mean_std_transfer,
    transfer_family,
)

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
HARMONIOUS_SHARE = 0.3  # measured against 0.1: docs/experiments.md
MILD_FRACTION = 0.0  # share of mild edits (strengths x MILD_SCALE): measured, see docs/synthetic.md
MILD_SCALE = 0.3
STRENGTH_RANGE = (0.5, 1.0)
_FAMILY_FUNCS: dict[str, Callable] = {
    "white_balance": white_balance,
    "exposure_gamma": exposure_gamma,
    "saturation_contrast": saturation_contrast,
    "tone_curve": tone_curve,
    "day_night": day_night,
    "light_gradient": light_gradient,
    "lab_transfer": transfer_family(lab_mean_std_transfer),
    "cov_transfer": transfer_family(covariance_transfer),
    "hist_transfer": transfer_family(histogram_transfer),
    "idt_transfer": transfer_family(iterative_distribution_transfer),
    "illuminant": illuminant,
    "film_grade": film_grade,
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
