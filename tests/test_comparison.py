"""The Figure-6 style comparison: row picking, mask outline, and `gknet evaluate --figure` end to end."""

from __future__ import annotations

import numpy as np
from PIL import Image

from gknet.cli import main as cli_main
from gknet.comparison import outline, pick_rows
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


def test_evaluate_writes_one_figure_for_several_methods(tmp_path, capsys):
    root = write_iharmony4_tree(tmp_path / "real", {"HFlickr": 4})
    figure = tmp_path / "fig.png"
    code = cli_main([
        "evaluate", "--data-root", str(root), "--baseline", "composite", "--baseline", "reinhard",
        "--out", str(tmp_path / "ev"), "--figure", str(figure), "--no-progress",
    ])
    assert code == 0
    assert (tmp_path / "ev" / "composite" / "results.json").is_file()
    assert (tmp_path / "ev" / "reinhard" / "results.json").is_file()
    with Image.open(figure) as im:
        # 4 columns (composite, two methods, real) of 256 px panels, 3 rows (worst, median, best)
        assert im.size[0] == 4 * (256 + 4) and im.size[1] > 3 * 256
    bad = ["evaluate", "--data-root", str(root), "--baseline", "composite", "--figure", "f.psd"]
    assert cli_main(bad) == 2
    assert "unsupported figure format" in capsys.readouterr().err
