"""Comparison pictures: ``gknet harmonize --compare``'s composite | harmonized | outlined, and
the figure of evaluated methods in the layout of the paper's Figure 6; one mask outline for both.

Figure rows: the worst, median and best images by one method's fMSE ratio to the composite;
columns: the composite with the mask outlined, each method's output, the real image; the fMSE of
each panel under it. The numbers come from the evaluation rows, the pictures from re-running each
method on the chosen images at the protocol size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from gknet.data.samples import SampleDataset
from gknet.errors import GknetError
from gknet.evaluation.baselines import Method
from gknet.evaluation.protocol import Evaluation, prepare_images
from gknet.io.atomic import atomic_path
from gknet.io.images import mask_image, rgb_image, to_uint8_array
from gknet.runtime.device import resolve_device

_CAPTION, _HEADER, _PAD = 20, 22, 4
OUTLINE_COLOUR = (255, 220, 0)


def pick_rows(rows: list[dict]) -> list[tuple[str, dict]]:
    """(label, row) for the worst, median and best image by fMSE ratio to the composite.

    Images whose composite already has fMSE 0 (nothing to harmonize) cannot be ranked and are skipped.
    """
    ranked = sorted(
        (r for r in rows if r["composite_fmse"] > 0), key=lambda r: r["fmse"] / r["composite_fmse"]
    )
    if not ranked:
        raise GknetError("no evaluated image has a foreground to compare")
    picks = [("worst", ranked[-1]), ("median", ranked[len(ranked) // 2]), ("best", ranked[0])]
    seen, unique = set(), []
    for label, row in picks:  # fewer than three images: no row twice
        if id(row) not in seen:
            seen.add(id(row))
            unique.append((label, row))
    return unique


def outline(image: np.ndarray, mask: np.ndarray, width: int = 2) -> np.ndarray:
    """``image`` [H, W, 3] uint8 with the mask's boundary (inside pixels next to the outside) painted."""
    fg = torch.from_numpy(mask.astype(np.float32))[None, None]
    outside_near = F.max_pool2d(1 - fg, 2 * width + 1, stride=1, padding=width)[0, 0].numpy() > 0
    edge = mask & outside_near
    out = image.copy()
    out[edge] = OUTLINE_COLOUR
    return out


def comparison_image(
    composite: Image.Image, harmonized: Image.Image, mask: Image.Image, max_side: int = 1024
) -> Image.Image:
    """Side-by-side picture: composite | harmonized | harmonized with the mask's :func:`outline`.

    Each panel is shrunk so its longer side is at most ``max_side``; the outline follows the
    mask at 50 %.
    """
    scale = min(1.0, max_side / max(composite.size))
    size = (max(1, round(composite.width * scale)), max(1, round(composite.height * scale)))
    left, middle = (
        rgb_image(im).resize(size, Image.BILINEAR, reducing_gap=3) for im in (composite, harmonized)
    )
    fg = np.asarray(mask_image(mask).resize(size, Image.BILINEAR)) >= 128
    right = Image.fromarray(outline(np.asarray(middle), fg))
    gap = max(2, size[0] // 100)
    sheet = Image.new("RGB", (3 * size[0] + 2 * gap, size[1]), (255, 255, 255))
    for i, panel in enumerate((left, middle, right)):
        sheet.paste(panel, (i * (size[0] + gap), 0))
    return sheet


def figure_format(output: str | Path) -> str:
    """Pillow's format name for a figure file, or GknetError for an unsupported suffix."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(output).suffix.lower())
    if fmt is None:
        raise GknetError(f"unsupported figure format {Path(output).suffix!r} (use .png or .jpg)")
    return fmt


def _hwc(pixels: torch.Tensor) -> np.ndarray:
    """uint8 [3, H, W] (the protocol's images) -> H x W x 3."""
    return pixels.permute(1, 2, 0).numpy()


def comparison_figure(
    samples: SampleDataset,
    methods: Sequence[tuple[str, Method]],
    runs: Sequence[Evaluation],
    output: str | Path,
    rank_by: int = -1,
    size: int = 256,
    device: str | torch.device = "auto",
    overwrite: bool = True,
) -> Path:
    """Write the figure for ``methods`` (name, callable) evaluated in ``runs`` (same order) to ``output``.

    Rows are picked by the fMSE ratio of ``runs[rank_by]`` (default: the last method).
    """
    if len(methods) != len(runs) or not methods:
        raise GknetError("comparison figure: one evaluation run per method is needed")
    output, device = Path(output), resolve_device(device)
    fmt = figure_format(output)
    if output.exists() and not overwrite:
        raise GknetError(f"output exists: {output} (pass --overwrite to replace it)")
    fmse = [{(r["subset"], r["name"]): r["fmse"] for r in run.rows} for run in runs]
    by_name = {(s.subset, s.name): s for s in samples}
    picks = pick_rows(runs[rank_by].rows)
    titles = ["composite (mask outlined)", *(name for name, _ in methods), "real image"]
    cell_w, cell_h = size + _PAD, size + _CAPTION + _PAD
    sheet = Image.new("RGB", (len(titles) * cell_w, _HEADER + len(picks) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(titles):
        draw.text((col * cell_w + 4, 5), title, fill="black")
    with torch.inference_mode():
        for row_i, (label, row) in enumerate(picks):
            key = (row["subset"], row["name"])
            composite, mask, target = by_name[key].load()
            comp, fg, tgt = prepare_images(composite, mask, target, size)
            panels = [outline(_hwc(comp), fg[0].numpy())]
            captions = [f"{label}: {row['name'][:24]}  fMSE {row['composite_fmse']:.0f}"]
            for (_name, method), scores in zip(methods, fmse, strict=True):
                out = method((comp.float() / 255)[None].to(device), fg.float()[None].to(device))
                panels.append(to_uint8_array(out[0]))
                captions.append(f"fMSE {scores[key]:.0f}")
            panels.append(_hwc(tgt))
            captions.append("ground truth")
            y = _HEADER + row_i * cell_h
            for col, (pixels, caption) in enumerate(zip(panels, captions, strict=True)):
                sheet.paste(Image.fromarray(pixels), (col * cell_w, y))
                draw.text((col * cell_w + 4, y + size + 3), caption, fill="black")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        sheet.save(tmp, format=fmt)
    return output
