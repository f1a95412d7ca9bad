"""``gknet harmonize`` end to end: single and folder mode, real data, every user mistake."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gknet.cli import main
from gknet.io.images import load_mask, load_rgb
from tests.conftest import require_shared, ship_weights, write_pair

LALONDE = ("image_001084", "image_001900", "image_002020")  # 256x256, 341x256, 256x256


@pytest.fixture
def weights(tiny_release) -> Path:
    return tiny_release


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    """A small composite (random texture) and a rectangular mask."""
    return write_pair(tmp_path)


def harmonize(capsys, weights: Path, *args) -> tuple[int, str, str]:
    # The tiny model's attention runs at half resolution: 64 px keeps it to milliseconds.
    options = ["--weights", str(weights), "--device", "cpu", "--resolution", "64", "--no-progress"]
    code = main(["harmonize", *options, *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def assert_one_error_line(code: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("gknet harmonize: error: ") and message in lines[0], err


def test_full_resolution_shared_example(capsys, weights, tmp_path):
    sub = require_shared("examples", "iharmony4_mini", "HAdobe5k")
    comp, mask = sub / "composite_images" / "a0002_1_4.jpg", sub / "masks" / "a0002_1.png"
    out = tmp_path / "a0002.jpg"
    code, stdout, _ = harmonize(capsys, weights, comp, mask, "-o", out, "--compare")
    assert code == 0 and "wrote" in stdout
    result, original = np.asarray(Image.open(out), dtype=np.float32), np.asarray(load_rgb(comp), np.float32)
    assert result.shape == original.shape == (4256, 2832, 3)
    fg = np.asarray(load_mask(mask)) > 127
    assert np.abs(result - original)[~fg].mean() < 1.5  # background: JPEG re-encoding only
    assert np.abs(result - original)[fg].mean() > 3  # the (random) model changed the foreground
    sheet = Image.open(tmp_path / "a0002_compare.jpg")
    assert sheet.height == 1024 and sheet.width > 3 * 681


def test_folder_mode_lalonde_with_bad_pair_and_orphan(capsys, weights, tmp_path):
    src = require_shared("data", "lalonde_composites")
    comps, masks, outdir = tmp_path / "c", tmp_path / "m", tmp_path / "out"
    comps.mkdir(), masks.mkdir()
    for name in LALONDE:
        shutil.copy(src / "composites" / f"{name}.jpg", comps)
        shutil.copy(src / "masks" / f"{name}.png", masks)
    (comps / "broken.jpg").write_bytes(b"not a jpeg")
    shutil.copy(src / "masks" / f"{LALONDE[0]}.png", masks / "broken.png")
    shutil.copy(src / "composites" / f"{LALONDE[0]}.jpg", comps / "orphan.jpg")
    code, stdout, err = harmonize(
        capsys, weights, "--composites", comps, "--masks", masks, "-o", outdir, "--compare"
    )
    assert code == 1
    assert "broken.jpg" in err and "cannot read image" in err and "orphan" in err
    assert "3 harmonized" in stdout and "2 failed or skipped" in stdout
    expected = sorted([f"{n}.jpg" for n in LALONDE] + [f"{n}_compare.jpg" for n in LALONDE])
    assert sorted(p.name for p in outdir.iterdir()) == expected
    for name in LALONDE:
        assert Image.open(outdir / f"{name}.jpg").size == Image.open(comps / f"{name}.jpg").size


def test_png_output_keeps_background_bit_identical(capsys, weights, tmp_path):
    src = require_shared("data", "lalonde_composites")
    for name in LALONDE[:2]:  # square and 4:3
        comp, mask = src / "composites" / f"{name}.jpg", src / "masks" / f"{name}.png"
        out = tmp_path / f"{name}.png"
        code, _, _ = harmonize(capsys, weights, comp, mask, "-o", out)
        assert code == 0
        result, original = np.asarray(Image.open(out)), np.asarray(load_rgb(comp))
        bg = np.asarray(load_mask(mask)) == 0
        assert np.array_equal(result[bg], original[bg]) and not np.array_equal(result[~bg], original[~bg])


def test_never_overwrites_an_input(capsys, weights, pair):
    comp, mask = pair
    before = comp.read_bytes(), mask.read_bytes()
    for target in (comp, mask, comp.parent / "." / comp.name):
        code, _, err = harmonize(capsys, weights, comp, mask, "-o", target, "--overwrite")
        assert_one_error_line(code, err, "refusing to overwrite an input")
    code, stdout, err = harmonize(
        capsys, weights, "--composites", comp.parent, "--masks", comp.parent, "-o", comp.parent, "--overwrite"
    )
    assert_one_error_line(code, err, "is the input folder")  # refused before any work
    assert (comp.read_bytes(), mask.read_bytes()) == before


def test_existing_output_needs_overwrite(capsys, weights, pair, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"old")
    code, _, err = harmonize(capsys, weights, *pair, "-o", out)
    assert_one_error_line(code, err, "output exists")
    assert out.read_bytes() == b"old"
    code, _, _ = harmonize(capsys, weights, *pair, "-o", out, "--overwrite")
    assert code == 0 and Image.open(out).size == (60, 40)


def test_mismatched_mask_size_fails_or_is_resized(capsys, weights, pair, tmp_path):
    comp, mask = pair
    Image.open(mask).resize((30, 20), Image.NEAREST).save(tmp_path / "small.png")
    code, _, err = harmonize(capsys, weights, comp, tmp_path / "small.png", "-o", tmp_path / "o.png")
    assert_one_error_line(code, err, "mask is 30x20 but the composite is 60x40")
    code, _, _ = harmonize(
        capsys, weights, comp, tmp_path / "small.png", "-o", tmp_path / "o.png", "--resize-mask"
    )
    assert code == 0 and Image.open(tmp_path / "o.png").size == (60, 40)


def test_empty_mask_copies_input_and_warns(capsys, weights, pair, tmp_path):
    comp, _ = pair
    Image.new("L", (60, 40), 0).save(tmp_path / "empty.png")
    code, _, err = harmonize(capsys, weights, comp, tmp_path / "empty.png", "-o", tmp_path / "o.png")
    assert code == 0 and "gknet harmonize: warning: the mask is empty" in err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), np.asarray(Image.open(comp)))
    (tmp_path / "c").mkdir(), (tmp_path / "m").mkdir()
    shutil.copy(comp, tmp_path / "c" / "blank.png")
    shutil.copy(tmp_path / "empty.png", tmp_path / "m" / "blank.png")
    code, _, err = harmonize(
        capsys, weights, "--composites", tmp_path / "c", "--masks", tmp_path / "m", "-o", tmp_path
    )
    assert code == 0 and "gknet harmonize: warning: blank.png: the mask is empty" in err


def test_threshold_and_exif_orientation(capsys, weights, tmp_path):
    rng = np.random.default_rng(1)
    exif = Image.Exif()
    exif[0x0112] = 8  # both files stored rotated: they must be turned the same way
    comp = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    soft = np.tile(np.linspace(0, 255, 50).astype(np.uint8), (30, 1))
    Image.fromarray(comp).save(tmp_path / "c.png", exif=exif)
    Image.fromarray(soft).save(tmp_path / "m.png", exif=exif)
    code, _, _ = harmonize(
        capsys,
        weights,
        tmp_path / "c.png",
        tmp_path / "m.png",
        "-o",
        tmp_path / "o.png",
        "--threshold",
        "0.5",
    )
    assert code == 0
    result, upright = np.asarray(Image.open(tmp_path / "o.png")), np.rot90(comp)
    assert result.shape == (50, 30, 3)
    below = np.rot90(soft) < 128
    assert np.array_equal(result[below], upright[below]) and not np.array_equal(
        result[~below], upright[~below]
    )


def test_unreadable_inputs_and_unwritable_output(capsys, weights, pair, tmp_path):
    comp, mask = pair
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "truncated.png").write_bytes(comp.read_bytes()[:200])
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file.txt").write_text("x")
    cases = [
        ((tmp_path / "corrupt.png", mask), "o1.png", "cannot read image"),
        ((tmp_path / "truncated.png", mask), "o2.png", "cannot read image"),
        ((comp, tmp_path / "missing.png"), "o3.png", "file not found"),
        ((tmp_path / "folder.png", mask), "o4.png", "directory"),
        ((comp, mask), "file.txt/o5.png", "cannot write"),
        ((comp, mask), "o6.xyz", "unknown image format"),
    ]
    for inputs, out, message in cases:
        code, _, err = harmonize(capsys, weights, *inputs, "-o", tmp_path / out)
        assert_one_error_line(code, err, message)
    for weights_path in (tmp_path / "missing.safetensors", comp):
        code, _, err = harmonize(capsys, weights_path, comp, mask, "-o", tmp_path / "o.png")
        assert_one_error_line(code, err, str(weights_path.with_suffix("")))
    code, _, err = harmonize(capsys, weights, comp, "-o", tmp_path / "o.png")
    assert_one_error_line(code, err, "COMPOSITE and MASK")
    code, _, err = harmonize(capsys, weights, comp, mask, "--composites", tmp_path, "-o", tmp_path / "o.png")
    assert_one_error_line(code, err, "not both")
    code, _, err = harmonize(capsys, weights, comp, mask, "-o", tmp_path / "o.png", "--threshold", "2")
    assert_one_error_line(code, err, "--threshold must be in (0, 1]")
    code, _, err = harmonize(capsys, weights, comp, mask, "-o", tmp_path / "o.png", "--resolution", "3")
    assert_one_error_line(code, err, "--resolution: must be an integer >= 16, got 3")
    code, _, err = harmonize(capsys, weights, comp, mask, "-o", tmp_path / "o.png", "--batch-size", "0")
    assert_one_error_line(code, err, "--batch-size: must be an integer >= 1, got 0")
    code, _, err = harmonize(capsys, weights, comp, mask, "-o", tmp_path / "o.png", "--workers", "-1")
    assert_one_error_line(code, err, "--workers: must be an integer >= 0, got -1")
    assert not list(tmp_path.glob("o*.png")) and not list(tmp_path.glob(".*"))  # nothing half-written


def test_console_error_has_no_traceback(weights, pair, tmp_path):
    comp, _ = pair
    entry = "import sys; from gknet.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", entry, "harmonize", str(comp), str(tmp_path / "nope.png")]
    proc = subprocess.run(
        [*cmd, "-o", str(tmp_path / "o.png"), "--weights", str(weights)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"gknet harmonize: error: file not found: {tmp_path / 'nope.png'}"


def test_folder_mode_batched_and_threaded_equals_one_at_a_time(capsys, weights, tmp_path):
    """Batches of 4 with 2 I/O threads against one image at a time in one thread (the old loop).

    Float results agree to 1e-6 (tests/test_harmonizer.py); after rounding to 8 bits a value
    can land on the other side of .5, so at most a level in very few pixels may differ."""
    src = require_shared("data", "lalonde_composites")
    names = sorted(p.stem for p in (src / "composites").glob("*.jpg"))[:10]
    comps, masks = tmp_path / "c", tmp_path / "m"
    comps.mkdir(), masks.mkdir()
    for name in names:  # PNG outputs: no JPEG re-encoding between the two runs' pixels
        load_rgb(src / "composites" / f"{name}.jpg").save(comps / f"{name}.png")
        shutil.copy(src / "masks" / f"{name}.png", masks)
    runs = {"one": ["--batch-size", "1", "--workers", "0"]}
    runs["batched"] = ["--batch-size", "4", "--workers", "2"]
    for label, options in runs.items():
        code, stdout, _ = harmonize(
            capsys, weights, "--composites", comps, "--masks", masks, "-o", tmp_path / label, *options
        )
        assert code == 0 and f"{len(names)} harmonized" in stdout
    differing = total = 0
    for name in names:
        one, batched = (np.asarray(Image.open(tmp_path / d / f"{name}.png"), np.int16) for d in runs)
        assert one.shape == batched.shape and np.abs(one - batched).max() <= 1
        differing, total = differing + int((one != batched).sum()), total + one.size
    assert differing <= 1e-4 * total, (differing, total)


def test_default_weights_missing_is_one_error(capsys, monkeypatch, pair, tmp_path):
    ship_weights(monkeypatch, tmp_path / "shipped")  # an installation that lost its weights file
    for name in ("default", "gknet_small"):
        code, _, err = harmonize(capsys, name, *pair, "-o", tmp_path / "o.png")
        assert_one_error_line(code, err, "the shipped weights 'gknet_small' are missing")
    assert not (tmp_path / "o.png").exists()
