"""Comparison pictures: row picking, mask outline, the --compare picture, `gknet evaluate --figure`."""

from __future__ import annotations

import numpy as np
from PIL import Image

from gknet.cli import main as cli_main
from gknet.evaluation.comparison import OUTLINE_COLOUR, comparison_image, outline, pick_rows
from tests.train_helpers import write_iharmony4_tree


def test_pick_rows_worst_median_best_by_ratio():
    rows = [
        {"name": n, "fmse": f, "composite_fmse": c}
        for n, f, c in [("a", 50, 100), ("b", 10, 100), ("c", 300, 200), ("d", 5, 0), ("e", 80, 100)]
    ]
    picks = [(label, row["name"]) for label, row in pick_rows(rows)]
    # ratios: a 0.5, b 0.1, c 1.5, e 0.8; d (nothing to harmonize) is not ranked
    assert picks == [("worst", "c"), ("median", "e"), ("best", "b")]
    assert [label for label, _ in pick_rows(rows[:1])] == ["worst"]


def test_outline_paints_only_the_inner_boundary():
    image = np.zeros((7, 7, 3), np.uint8)
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    painted = outline(image, mask, width=1).any(-1)
    expected = mask.copy()
    expected[2:5, 2:5] = False
    assert (painted == expected).all()


def test_comparison_image_panels_and_outline():
    rng = np.random.default_rng(0)
    h, w, gap = 45, 70, 2
    comp = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    harmonized = 255 - comp
    mask = np.zeros((h, w), np.uint8)
    mask[10:35, 20:55] = 255
    mask[10:35, 20] = 100  # a soft edge below 50 %: outside
    sheet = comparison_image(Image.fromarray(comp), Image.fromarray(harmonized), Image.fromarray(mask))
    assert sheet.size == (3 * w + 2 * gap, h)
    arr = np.asarray(sheet)
    assert np.array_equal(arr[:, :w], comp)
    assert np.array_equal(arr[:, w + gap : 2 * w + gap], harmonized)
    third = arr[:, 2 * (w + gap) :]
    # the one outline of the figures: the inner boundary of the mask at 50 %, in its colour
    assert np.array_equal(third, outline(harmonized, mask >= 128))
    painted = (third == OUTLINE_COLOUR).all(axis=2)
    assert painted[10, 30] and painted[34, 30] and painted[20, 21] and not painted[20, 20]
    assert not painted[20, 35] and not painted[0, 0]


def test_comparison_image_shrinks_panels_to_max_side():
    comp = Image.new("RGB", (300, 120), (10, 200, 30))
    mask = Image.new("L", (300, 120), 0)
    mask.paste(255, (100, 30, 200, 90))
    sheet = comparison_image(comp, comp, mask, max_side=100)
    assert sheet.size == (3 * 100 + 2 * 2, 40)
    painted = (np.asarray(sheet)[:, 2 * 102 :] == OUTLINE_COLOUR).all(axis=2)
    assert painted[10:30, 33].all() and not painted[20, 50] and not painted[5, 5]


def test_evaluate_writes_one_figure_for_several_methods(tmp_path, capsys):
    root = write_iharmony4_tree(tmp_path / "real", {"HFlickr": 4})
    figure = tmp_path / "fig.png"
    code = cli_main(
        [
            "evaluate",
            "--data-root",
            str(root),
            "--baseline",
            "composite",
            "--baseline",
            "reinhard",
            "--out",
            str(tmp_path / "ev"),
            "--figure",
            str(figure),
            "--no-progress",
        ]
    )
    assert code == 0
    assert (tmp_path / "ev" / "composite" / "results.json").is_file()
    assert (tmp_path / "ev" / "reinhard" / "results.json").is_file()
    with Image.open(figure) as im:
        # 4 columns (composite, two methods, real) of 256 px panels, 3 rows (worst, median, best)
        assert im.size[0] == 4 * (256 + 4) and im.size[1] > 3 * 256
    bad = ["evaluate", "--data-root", str(root), "--baseline", "composite", "--figure", "f.psd"]
    assert cli_main(bad) == 2
    assert "unsupported figure format" in capsys.readouterr().err
