"""Look inside GKNet: the pictures of the paper's Figures 9-11 for one composite.

Everything is drawn from one network pass, :meth:`gknet.inference.harmonizer.Harmonizer.trace_tensor`
(the pass ``gknet harmonize`` makes), so the pictures show what the network really computed:

- kernel clusters (Figure 9, :mod:`.clustering`): K-means over the per-pixel predicted
  kernels K^l (C * N^2 numbers per pixel) of every modulated decoder level;
- SCF feature maps (Figure 10): channels of Conv(F_E^l) at one level, each labelled with
  its selective channel weight S_E (Eq. 3-4), the highest and the lowest weights;
- LRE attention (Figure 11): for a query point, the softmax attention row of its token in
  every layer and head, upsampled over the image;
- the change map |harmonized - composite| and composite | harmonized side by side.

The network runs on a copy of the composite resized so that its longer side is the
harmonizer's resolution (aspect ratio kept); every picture is drawn at that size.
Modules: :mod:`.capture` (the pass), :mod:`.clustering`, :mod:`.figures`, :mod:`.page`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gknet.errors import GknetError
from gknet.explain.capture import Capture, capture, lre_attention, scf_features
from gknet.explain.clustering import MAX_CLUSTERS, kernel_clusters, kmeans
from gknet.explain.figures import (
    draw_change_map,
    draw_kernel_clusters,
    draw_lre_attention,
    draw_scf,
    draw_side_by_side,
)
from gknet.explain.page import describe_model, render_index
from gknet.io.atomic import check_writable, remove_stale_temporaries, write_atomic
from gknet.io.images import mask_image, save_image_atomic
from gknet.io.plotting import require_matplotlib

__all__ = ["FILES", "Capture", "capture", "check_out_dir", "explain", "kernel_clusters", "kmeans"]

FILES = {
    "composite_harmonized": "composite_harmonized.png",
    "change_map": "change_map.png",
    "kernel_clusters": "kernel_clusters.png",
    "scf_features": "scf_features.png",
    "lre_attention": "lre_attention.png",
    "index": "index.html",
}


def check_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """``out_dir`` as a Path; GknetError if it is a file or already holds our files (unless ``overwrite``)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GknetError(f"output path is not a directory: {out_dir}")
    existing = [name for name in FILES.values() if (out_dir / name).exists()]
    if existing and not overwrite:
        raise GknetError(f"{out_dir} already holds {', '.join(existing)} (pass --overwrite to replace them)")
    check_writable(out_dir / FILES["index"])
    remove_stale_temporaries(out_dir, FILES.values())  # left by a killed run
    return out_dir


def _default_point(mask: Image.Image) -> tuple[int, int]:
    """Centre of the mask's bounding box (of its support, for a faint soft mask)."""
    ys, xs = np.nonzero(np.asarray(mask_image(mask)) > 127)
    if len(xs) == 0:
        ys, xs = np.nonzero(np.asarray(mask_image(mask)))
    return (int(xs.min()) + int(xs.max())) // 2, (int(ys.min()) + int(ys.max())) // 2


def explain(
    harmonizer,
    composite_pil: Image.Image,
    mask_pil: Image.Image,
    out_dir: str | Path,
    point: tuple[int, int] | None = None,
    clusters: int = 6,
    level: int | None = None,
    *,
    seed: int = 0,
    overwrite: bool = False,
    notes: list[str] | tuple[str, ...] = (),
) -> dict[str, Path]:
    """Write the explanation pictures and ``index.html`` into ``out_dir``; returns {name: path}.

    ``harmonizer`` is a :class:`gknet.inference.harmonizer.Harmonizer` (its resolution sets the network
    pass and the picture size). ``point`` (x, y) is in the original composite's pixels
    (default: centre of the mask's bounding box); ``level`` is the SCF level in the paper's
    numbering (1 = deepest; default: the finest modulated level). Figures a model does not
    have (ablations without KPB, LRE or SCF) are skipped and listed in index.html. ``notes``
    are extra lines for the page (for example which weights were used).
    """
    require_matplotlib("gknet explain")
    cfg = harmonizer.model.cfg
    if not 2 <= clusters <= MAX_CLUSTERS:
        raise GknetError(f"clusters must be between 2 and {MAX_CLUSTERS}, got {clusters}")
    has_scf = cfg.use_kpb and cfg.use_scf
    level = cfg.kpb_levels if level is None else level
    if has_scf and not 1 <= level <= cfg.kpb_levels:
        raise GknetError(f"level must be between 1 (deepest) and {cfg.kpb_levels}, got {level}")
    width, height = composite_pil.size
    if point is not None and not (0 <= point[0] < width and 0 <= point[1] < height):
        raise GknetError(f"point ({point[0]}, {point[1]}) is outside the {width}x{height} composite")

    out_dir = check_out_dir(out_dir, overwrite)

    cap = capture(harmonizer, composite_pil, mask_pil)
    point = _default_point(mask_pil) if point is None else point
    h, w = cap.size
    res = cap.net_size
    notes = [
        *notes,
        describe_model(cfg),
        f"input {width}x{height}; network pass at {res}x{res} (the whole image resized, as "
        f"in gknet harmonize); pictures at {w}x{h}",
    ]
    images = {"composite_harmonized": draw_side_by_side(cap), "change_map": draw_change_map(cap)}
    if cfg.use_kpb:
        images["kernel_clusters"] = draw_kernel_clusters(cap, kernel_clusters(cap, clusters, seed), clusters)
    else:
        notes.append(
            "no kernel clusters, SCF or LRE pictures: this model has no kernel prediction (U-Net baseline)"
        )
    if has_scf:
        images["scf_features"] = draw_scf(cap, *scf_features(cap, level), level)
    elif cfg.use_kpb:
        notes.append("no SCF picture: this model fuses features by concatenation (SCF off)")
    if cfg.use_lre:
        images["lre_attention"] = draw_lre_attention(cap, lre_attention(cap, point), point)
        notes.append(
            f"LRE query point (x={point[0]}, y={point[1]}) in input pixels; token grid "
            f"{cap.inter.lre_grid[0]}x{cap.inter.lre_grid[1]}"
        )
    elif cfg.use_kpb:
        notes.append("no LRE attention picture: this model has no Long-distance Reference Extractor")

    written = {
        key: save_image_atomic(img, out_dir / FILES[key], overwrite=True) for key, img in images.items()
    }
    index = out_dir / FILES["index"]
    write_atomic(index, render_index(written, notes))
    return {**written, "index": index}
