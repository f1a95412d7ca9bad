"""Change of real composites per human realism label (Lalonde & Efros), by hand on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gknet.errors import GknetError
from gknet.evaluation.realism import (
    before_after_figure,
    foreground_change,
    read_labels,
    realism_changes,
    summarize_changes,
)


def test_foreground_change_by_hand():
    composite = np.zeros((2, 3, 3), np.uint8)
    output = composite.copy()
    output[0, 0] = (30, 0, 0)  # inside: |diff| mean over 2 pixels x 3 channels = 30 / 6
    output[1, 2] = (255, 255, 255)  # outside the mask: ignored
    mask = np.array([[255, 200, 0], [0, 0, 100]], np.uint8)
    assert foreground_change(composite, output, mask) == pytest.approx(5.0)
    assert np.isnan(foreground_change(composite, output, np.zeros((2, 3), np.uint8)))


def _folder(tmp_path):
    root = tmp_path / "lalonde"
    for sub in ("composites", "masks"):
        (root / sub).mkdir(parents=True)
    labels = {"a": "realistic", "b": "unrealistic", "c": "unrealistic"}
    for i, name in enumerate(labels):
        Image.new("RGB", (20, 16), (40 * i + 20, 100, 150)).save(
            root / "composites" / f"{name}.jpg", quality=100
        )
        mask = Image.new("L", (20, 16))
        mask.paste(255, (4, 4, 14, 12))
        mask.save(root / "masks" / f"{name}.png")
    (root / "labels.csv").write_text("name,human_label\n" + "".join(f"{n},{v}\n" for n, v in labels.items()))
    return root


def test_realism_changes_and_summary(tmp_path):
    root = _folder(tmp_path)

    def brighten(composite, mask, **_):  # +10 on every channel inside the mask
        pixels = np.asarray(composite).astype(int)
        inside = np.asarray(mask) > 127
        pixels[inside] += 10
        return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))

    rows = realism_changes(brighten, root)
    assert [r["name"] for r in rows] == ["a", "b", "c"] and all(
        r["change"] == pytest.approx(10) for r in rows
    )
    assert [r["change"] for r in realism_changes(lambda c, m, **_: c, root)] == [0, 0, 0]
    summary = summarize_changes(
        [
            {"label": "realistic", "change": 2.0},
            {"label": "unrealistic", "change": 3.0},
            {"label": "unrealistic", "change": 7.0},
        ]
    )
    assert summary["realistic"] == {"n": 1, "mean": 2.0, "median": 2.0}
    assert summary["unrealistic"] == {"n": 2, "mean": 5.0, "median": 5.0} and summary["ratio"] == 2.5
    figure = before_after_figure(
        root, [(r["name"], Image.new("RGB", (20, 16)), r["change"]) for r in rows], columns=2, side=32
    )
    assert figure.size == (2 * (2 * 40 + 2) + 6, 2 * 32 + 6)
    (root / "labels.csv").write_text("name,human_label\na,maybe\n")
    with pytest.raises(GknetError, match="labels must be"):
        read_labels(root)
