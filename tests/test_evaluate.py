import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gknet.cli import main
from gknet.data import IHarmony4
from gknet.evaluation.baselines import reinhard
from tests.conftest import ship_weights, write_image
from tests.train_helpers import write_iharmony4_tree

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MINI = SHARED / "examples" / "iharmony4_mini"
needs_mini = pytest.mark.skipif(not MINI.is_dir(), reason="../shared/examples/iharmony4_mini is absent")


def resized_triplet(composite: Path, mask: Path, target: Path):
    """The protocol, written out with plain Pillow + numpy: float images, bool foreground."""

    def load(path, mode):
        return np.asarray(Image.open(path).convert(mode).resize((256, 256), Image.BILINEAR), dtype=np.float64)

    return load(composite, "RGB"), load(mask, "L") / 255 > 0.5, load(target, "RGB")


def numpy_metrics(pred, target, fg, peak=255.0):
    sq = (np.clip(pred, 0, 255) - target) ** 2
    mse = sq.mean()
    return {"mse": mse, "fmse": sq[fg].sum() / (3 * fg.sum()), "psnr": 10 * np.log10(peak**2 / mse)}


def run_cli(*args) -> int:
    return main(["evaluate", *map(str, args), "--no-progress"])


def check_group(group: dict, expected: dict, n: int = 1):
    assert group["n"] == n
    for key, value in expected.items():
        assert group[key] == pytest.approx(value, rel=1e-6), key


@pytest.fixture(scope="module")
def mini_images():
    base = MINI / "HAdobe5k"
    return resized_triplet(
        base / "composite_images" / "a0002_1_4.jpg",
        base / "masks" / "a0002_1.png",
        base / "real_images" / "a0002.jpg",
    )


@needs_mini
def test_composite_on_real_example(tmp_path, mini_images):
    comp, fg, target = mini_images
    expected = numpy_metrics(comp, target, fg)
    assert run_cli("--data-root", MINI, "--baseline", "composite", "--out", tmp_path) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == "composite" and results["n_failed"] == 0
    assert list(results["subsets"]) == ["HAdobe5k"]
    check_group(results["subsets"]["HAdobe5k"], expected)
    check_group(results["all"], expected)
    ratio = fg.mean()
    assert ratio > 0.15  # a large foreground: Table 2's 15-100% bucket
    check_group(results["fg_ratio"]["15-100"], {"mse": expected["mse"], "fmse": expected["fmse"]})
    assert results["fg_ratio"]["0-5"] == {"n": 0, "mse": None, "fmse": None}

    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert len(rows) == 1 and rows[0]["name"] == "a0002_1_4.jpg"
    assert float(rows[0]["fg_ratio"]) == pytest.approx(ratio) and rows[0]["fg_bucket"] == "15-100"

    report = (tmp_path / "report.md").read_text()
    assert "| Composite (paper) | 33.94 | 69.37 | 996.59 | 28.16 | 345.54 | 2051.61 |" in report
    assert "| 31.63 | 172.47 | 1376.42 |" in report
    assert "| GKNet (Ours) (paper) | 5.36 | 244.06 | 17.46 | 200.34 | 57.31 | 188.75 |" in report
    measured = f"| {expected['psnr']:.2f} | {expected['mse']:.2f} | {expected['fmse']:.2f} |"
    assert f"| composite (measured) | – | – | – {measured}" in report


@needs_mini
def test_reinhard_on_real_example(tmp_path, mini_images):
    comp, fg, target = mini_images
    to_tensor = torch.from_numpy(comp.transpose(2, 0, 1)).float()[None] / 255
    mask = torch.from_numpy(fg)[None, None].float()
    harmonized = reinhard(to_tensor, mask)[0].double().numpy().transpose(1, 2, 0) * 255
    expected = numpy_metrics(harmonized, target, fg)
    anchor = numpy_metrics(comp, target, fg)

    assert run_cli("--data-root", MINI, "--baseline", "reinhard", "--out", tmp_path, "--device", "cpu") == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == "reinhard"
    check_group(results["all"], expected)
    check_group(results["composite"]["all"], anchor)
    r = results["ratio_to_composite"]["all"]
    assert r["mse_ratio"] == pytest.approx(expected["mse"] / anchor["mse"], rel=1e-6)
    assert r["fmse_ratio"] == pytest.approx(expected["fmse"] / anchor["fmse"], rel=1e-6)
    assert r["psnr_gain"] == pytest.approx(expected["psnr"] - anchor["psnr"], rel=1e-6)
    assert expected["fmse"] < anchor["fmse"]  # Reinhard transfer does help on this example
    report = (tmp_path / "report.md").read_text()
    assert f"| reinhard / composite (measured) | – | – | – | {r['psnr_gain']:+.2f} dB |" in report


@pytest.fixture
def tree(tmp_path):
    """HFlickr test set: an L mask, an RGB-stored mask, a JPEG mask and a missing real image."""
    rng = np.random.default_rng(1)
    root, names = tmp_path / "iharmony4", []
    for i, (mask_kind, has_real) in enumerate([("L", True), ("RGB", True), ("jpg", True), ("L", False)]):
        h, w = 14 + 2 * i, 20
        fg = np.zeros((h, w), np.uint8)
        fg[3 : 8 + i, 4:12] = 255
        name = f"f{i}_1_2.jpg"
        names.append(name)
        target = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        shifted = np.clip(target.astype(int) + 60 * (fg[..., None] > 0), 0, 255).astype(np.uint8)
        write_image(root / "HFlickr" / "composite_images" / name, shifted)
        mask = np.stack([fg] * 3, -1) if mask_kind == "RGB" else fg
        write_image(root / "HFlickr" / "masks" / f"f{i}_1.{'jpg' if mask_kind == 'jpg' else 'png'}", mask)
        if has_real:
            write_image(root / "HFlickr" / "real_images" / f"f{i}.jpg", target)
    (root / "HFlickr_test.txt").write_text("\n".join(names) + "\n")
    return root


def expected_rows(root: Path, method=None, peak=None):
    """Per-image metrics of the readable samples, computed with Pillow + numpy."""
    out = {}
    for sample in IHarmony4(root):
        if not sample.target.exists():
            continue
        comp, fg, target = resized_triplet(sample.composite, sample.mask, sample.target)
        pred = comp if method is None else method(comp, fg)
        out[sample.name] = numpy_metrics(pred, target, fg, peak or 255.0) | {"fg_ratio": fg.mean()}
    return out


def test_missing_file_is_reported_and_others_are_evaluated(tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli("--data-root", tree, "--baseline", "composite", "--out", out, "--batch-size", 3) == 1
    printed = capsys.readouterr().out
    assert "1 file(s) failed" in printed and "f3.jpg" in printed

    results = json.loads((out / "results.json").read_text())
    assert results["n_images"] == 3 and results["n_failed"] == 1
    failure = results["failures"][0]
    assert (
        failure["path"].endswith("f3_1_2.jpg")
        and "file not found" in failure["error"]
        and "f3.jpg" in failure["error"]
    )
    expected = expected_rows(tree)
    rows = {r["name"]: r for r in csv.DictReader((out / "per_image.csv").open())}
    assert set(rows) == set(expected) == {"f0_1_2.jpg", "f1_1_2.jpg", "f2_1_2.jpg"}
    for name, values in expected.items():
        for key, value in values.items():
            assert float(rows[name][key]) == pytest.approx(value, rel=1e-6), (name, key)
    check_group(
        results["all"], {k: np.mean([v[k] for v in expected.values()]) for k in ("mse", "psnr", "fmse")}, 3
    )
    assert "## Failed files" in (out / "report.md").read_text()


def test_psnr_peak_option_and_batch_size_do_not_change_other_numbers(tree, tmp_path):
    peak_out, batch_out = tmp_path / "peak", tmp_path / "batch"
    assert (
        run_cli(
            "--data-root", tree, "--baseline", "composite", "--out", peak_out, "--psnr-peak", "target_max"
        )
        == 1
    )
    assert run_cli("--data-root", tree, "--baseline", "composite", "--out", batch_out, "--batch-size", 1) == 1
    peak = {r["name"]: r for r in csv.DictReader((peak_out / "per_image.csv").open())}
    batch = {r["name"]: r for r in csv.DictReader((batch_out / "per_image.csv").open())}
    for sample in IHarmony4(tree)[:3]:
        _, fg, target = resized_triplet(sample.composite, sample.mask, sample.target)
        mse = float(batch[sample.name]["mse"])
        assert float(peak[sample.name]["mse"]) == pytest.approx(mse)
        assert float(peak[sample.name]["psnr"]) == pytest.approx(10 * np.log10(target.max() ** 2 / mse))
    assert json.loads((peak_out / "results.json").read_text())["protocol"]["psnr_peak"] == "target_max"


def test_limit_and_folder_dataset(tree, tmp_path):
    limited = tmp_path / "limited"
    assert (
        run_cli(
            "--data-root",
            tree,
            "--subsets",
            "hflickr",
            "--baseline",
            "histogram",
            "--limit",
            2,
            "--out",
            limited,
        )
        == 0
    )
    assert json.loads((limited / "results.json").read_text())["all"]["n"] == 2

    base = tree / "HFlickr"
    comps, masks, targets = (tmp_path / d for d in ("c", "m", "t"))
    for i in range(3):
        write_image(
            comps / f"img{i}.jpg", np.asarray(Image.open(base / "composite_images" / f"f{i}_1_2.jpg"))
        )
        write_image(targets / f"img{i}.png", np.asarray(Image.open(base / "real_images" / f"f{i}.jpg")))
        if i < 2:
            write_image(masks / f"img{i}.png", np.asarray(Image.open(base / "masks" / f"f{i}_1.png")))
    out = tmp_path / "folder"
    assert (
        run_cli(
            "--composites",
            comps,
            "--masks",
            masks,
            "--targets",
            targets,
            "--baseline",
            "composite",
            "--out",
            out,
        )
        == 1
    )
    results = json.loads((out / "results.json").read_text())
    assert list(results["subsets"]) == ["folder"] and results["all"]["n"] == 2
    assert results["failures"][0]["path"] == str(comps / "img2.jpg")


def test_trained_model_weights(tree, tmp_path):
    from gknet.config import ModelConfig
    from gknet.inference.release import save_release
    from gknet.models import build_model

    torch.manual_seed(0)
    # five levels: the LRE attends over 16x16 tokens at 256x256 (two levels would give 128x128)
    cfg = ModelConfig(widths=(4, 8, 8, 8, 16), lre_heads=2, scf_groups=4, kpb_levels=2)
    model = build_model(cfg).eval()
    weights = save_release(model, cfg, tmp_path / "tiny.safetensors")

    def run_model(comp, fg):
        x = torch.from_numpy(comp.transpose(2, 0, 1)).float()[None] / 255
        with torch.no_grad():
            y = model(x, torch.from_numpy(fg)[None, None].float())
        return y[0].double().numpy().transpose(1, 2, 0) * 255

    out = tmp_path / "out"
    assert run_cli("--data-root", tree, "--weights", weights, "--out", out, "--batch-size", 2) == 1
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "tiny"
    rows = {r["name"]: r for r in csv.DictReader((out / "per_image.csv").open())}
    for name, values in expected_rows(tree, run_model).items():
        assert float(rows[name]["mse"]) == pytest.approx(values["mse"], rel=1e-4)
        assert float(rows[name]["fmse"]) == pytest.approx(values["fmse"], rel=1e-4)


def test_bad_input_is_one_error_line(tree, tmp_path, capsys, monkeypatch):
    ship_weights(monkeypatch, tmp_path / "shipped")  # an installation that lost its weights file
    cases = [
        (["--data-root", tree, "--baseline", "poisson"], "unknown baseline 'poisson'; valid: composite"),
        (["--data-root", tree, "--weights", "default"], "shipped weights 'gknet_small' are missing"),
        (["--data-root", tree, "--weights", tmp_path / "x.safetensors"], "weights file not found"),
        (["--data-root", tree, "--weights", "gknet_huge"], "(shipped names: gknet_small)"),
        (["--baseline", "composite"], "no data"),
        (["--data-root", tree, "--masks", tmp_path, "--baseline", "composite"], "either --data-root"),
        (["--composites", tmp_path, "--baseline", "composite"], "needs all of"),
        (["--data-root", tree, "--subsets", "HCOCO", "--baseline", "composite"], "HCOCO_test.txt"),
        (["--data-root", tree, "--baseline", "composite", "--limit", 0], "--limit: must be an integer >= 1"),
        (["--data-root", tree, "--baseline", "composite", "--device", "tpu"], "device"),
    ]
    for args, message in cases:
        assert run_cli(*args, "--out", tmp_path / "never") == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("gknet evaluate: error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "never").exists()


def test_real_val_subsets_beyond_the_four_are_evaluated(tmp_path):
    real_val = SHARED / "data" / "real_val"
    if not real_val.is_dir():
        pytest.skip(f"shared data not available: {real_val}")
    found = IHarmony4(real_val)
    assert found.subsets == ["HAdobe5k", "HFlickr", "Hday2night", "RainNet_examples"] and not found.problems
    assert (
        run_cli(
            "--data-root",
            real_val,
            "--subsets",
            "rainnet_examples",
            "--baseline",
            "reinhard",
            "--out",
            tmp_path,
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["subsets"]) == ["RainNet_examples"]
    assert results["subsets"]["RainNet_examples"]["n"] == 3
    report = (tmp_path / "report.md").read_text()
    assert "## Other subsets (not in the paper)" in report and "| RainNet_examples PSNR↑ |" in report
    fmse = results["ratio_to_composite"]["subsets"]["RainNet_examples"]["fmse_ratio"]
    assert f"×{fmse:.3f}" in report.split("## Other subsets")[1].split("## Table 2")[0]


def test_several_methods_get_a_paired_comparison_against_the_first(tmp_path, capsys):
    root = write_iharmony4_tree(tmp_path / "real", {"HFlickr": 3, "Hday2night": 2})
    out = tmp_path / "ev"
    args = ["evaluate", "--data-root", str(root), "--baseline", "composite", "--baseline", "reinhard"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "paired comparison against composite" in printed and f"wrote {out / 'paired.md'}" in printed
    text = (out / "paired.md").read_text()
    results = json.loads((out / "reinhard" / "results.json").read_text())
    for subset in ("HFlickr", "Hday2night"):
        ratio = results["ratio_to_composite"]["subsets"][subset]["fmse_ratio"]
        assert f"| {subset} | {results['subsets'][subset]['n']} | 1.000 | {ratio:.3f} |" in text
    assert "| ALL | 5 | 1.000 |" in text
    # one method: nothing to compare
    single = tmp_path / "one"
    assert main(["evaluate", "--data-root", str(root), "--baseline", "reinhard", "--out", str(single)]) == 0
    assert not (single / "paired.md").exists()
