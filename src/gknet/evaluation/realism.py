"""How much a model changes real composites that people judged realistic or unrealistic.

Lalonde & Efros's composites (``composites/NAME.jpg``, ``masks/NAME.png`` and ``labels.csv``
with ``name,human_label`` = ``realistic`` | ``unrealistic``) have no ground truth, but a human
label: a model that knows what it is doing changes the realistic ones less than the unrealistic
ones. The change is the mean |output - composite| inside the mask (mask > 50 %), on the 0-255
scale, per image; averaged per group.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gknet.errors import GknetError
from gknet.io.images import load_mask, load_rgb

LABELS = ("realistic", "unrealistic")


def read_labels(root: str | Path) -> dict[str, str]:
    """``{name: human_label}`` from ``root/labels.csv``."""
    path = Path(root) / "labels.csv"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            labels = {row["name"]: row["human_label"] for row in csv.DictReader(handle)}
    except (OSError, KeyError, UnicodeDecodeError, csv.Error) as exc:
        raise GknetError(f"cannot read the realism labels {path}: {exc}") from None
    unknown = sorted(set(labels.values()) - set(LABELS))
    if unknown:
        raise GknetError(f"{path}: labels must be {' or '.join(LABELS)}, got {', '.join(unknown)}")
    return labels


def foreground_change(composite: np.ndarray, output: np.ndarray, mask: np.ndarray) -> float:
    """Mean |output - composite| over the pixels (and channels) where ``mask`` > 127, 0-255 uint8
    arrays H x W x 3 and H x W; NaN for an empty mask."""
    inside = mask > 127
    if not inside.any():
        return float("nan")
    return float(np.abs(output.astype(np.float64) - composite.astype(np.float64))[inside].mean())


def realism_changes(harmonizer, root: str | Path, names: list[str] | None = None) -> list[dict]:
    """``[{"name", "label", "change"}]`` for the labelled composites under ``root`` (or ``names``),
    harmonized at full resolution by ``harmonizer`` (a :class:`gknet.Harmonizer`)."""
    root = Path(root)
    labels = read_labels(root)
    rows = []
    for name in names or sorted(labels):
        composite = load_rgb(root / "composites" / f"{name}.jpg")
        mask = load_mask(root / "masks" / f"{name}.png")
        output = harmonizer(composite, mask, resize_mask=True)
        mask_array = np.asarray(mask.resize(composite.size) if mask.size != composite.size else mask)
        change = foreground_change(np.asarray(composite), np.asarray(output), mask_array)
        rows.append({"name": name, "label": labels[name], "change": change})
    return rows


def summarize_changes(rows: list[dict]) -> dict:
    """Per label: ``n``, the mean and median change; and ``ratio`` = unrealistic mean / realistic mean."""
    summary: dict = {}
    for label in LABELS:
        values = np.array([r["change"] for r in rows if r["label"] == label and np.isfinite(r["change"])])
        summary[label] = {
            "n": int(values.size),
            "mean": float(values.mean()) if values.size else None,
            "median": float(np.median(values)) if values.size else None,
        }
    real, unreal = summary["realistic"]["mean"], summary["unrealistic"]["mean"]
    summary["ratio"] = unreal / real if real and unreal is not None else None
    return summary


def before_after_figure(
    root: str | Path, pairs: list[tuple[str, Image.Image, float]], columns: int = 4, side: int = 160
) -> Image.Image:
    """Rows of ``columns`` (composite with the mask's outline | output) pairs, ``pairs`` =
    [(name, output image, change)], each panel ``side`` px high, labelled with the name and the
    change."""
    from gknet.evaluation.comparison import outline

    root, gap = Path(root), 6
    panels = []
    for name, output, change in pairs:
        composite = load_rgb(root / "composites" / f"{name}.jpg")
        mask = load_mask(root / "masks" / f"{name}.png").resize(composite.size)
        size = (round(composite.width * side / composite.height), side)
        before = outline(np.asarray(composite), np.asarray(mask) > 127)
        pair = Image.new("RGB", (2 * size[0] + 2, side), "white")
        pair.paste(Image.fromarray(before).resize(size, Image.BILINEAR), (0, 0))
        pair.paste(output.resize(size, Image.BILINEAR), (size[0] + 2, 0))
        draw = ImageDraw.Draw(pair)
        draw.text((3, 3), name, fill="white", stroke_width=1, stroke_fill="black")
        draw.text((size[0] + 5, 3), f"change {change:.1f}", fill="white", stroke_width=1, stroke_fill="black")
        panels.append(pair)
    rows = [panels[i : i + columns] for i in range(0, len(panels), columns)]
    width = max(sum(p.width + gap for p in row) for row in rows)
    sheet = Image.new("RGB", (width - gap, len(rows) * (side + gap) - gap), "white")
    for r, row in enumerate(rows):
        x = 0
        for panel in row:
            sheet.paste(panel, (x, r * (side + gap)))
            x += panel.width + gap
    return sheet
