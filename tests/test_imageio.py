"""Every kind of image and mask file a user may hand us, and every way reading or writing fails."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gknet.errors import GknetError
from gknet.io.images import PNG_COMPRESS_LEVEL, load_mask, load_rgb, save_image_atomic, to_tensor_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 17, 3), dtype=np.uint8)
BINARY = np.zeros((12, 17), np.uint8)
BINARY[3:9, 4:12] = 255


def write_png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit PNG (grey, RGB or RGBA) written by hand: Pillow cannot write 16-bit colour."""
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)))
    path.write_bytes(path.read_bytes() + chunk(b"IEND", b""))
    return path


def save(img: Image.Image, path: Path, **params) -> Path:
    img.save(path, **params)
    return path


# ---- masks -------------------------------------------------------------------------------


def test_mask_l_is_kept(tmp_path):
    soft = np.tile(np.arange(17, dtype=np.uint8) * 15, (12, 1))
    got = load_mask(save(Image.fromarray(soft), tmp_path / "m.png"))
    assert got.mode == "L" and np.array_equal(np.asarray(got), soft)  # soft values survive


def test_mask_1bit(tmp_path):
    got = load_mask(save(Image.fromarray(BINARY).convert("1"), tmp_path / "m.png"))
    assert got.mode == "L" and np.array_equal(np.asarray(got), BINARY)


def test_mask_rgb_grey_and_coloured(tmp_path):
    grey = np.repeat(BINARY[..., None], 3, axis=2)
    red = np.zeros_like(grey)
    red[..., 0] = BINARY  # a red-on-black mask must not become 30 % alpha
    for name, arr in (("grey", grey), ("red", red)):
        got = load_mask(save(Image.fromarray(arr), tmp_path / f"{name}.png"))
        assert np.array_equal(np.asarray(got), BINARY), name


def test_mask_rgba_uses_alpha_or_colour(tmp_path):
    rgba = np.zeros((12, 17, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = BINARY
    got = load_mask(save(Image.fromarray(rgba), tmp_path / "alpha.png"))
    assert np.array_equal(np.asarray(got), BINARY)
    opaque = np.dstack([np.repeat(BINARY[..., None], 3, axis=2), np.full((12, 17), 255, np.uint8)])
    got = load_mask(save(Image.fromarray(opaque), tmp_path / "opaque.png"))
    assert np.array_equal(np.asarray(got), BINARY)


def test_mask_16bit(tmp_path):
    arr = BINARY.astype(np.uint16) * 257  # 0 / 65535
    assert Image.open(write_png16(tmp_path / "m16.png", arr[..., None])).mode.startswith("I")
    got = load_mask(tmp_path / "m16.png")
    assert np.array_equal(np.asarray(got), BINARY)


def test_mask_label_map_0_1(tmp_path):
    got = load_mask(save(Image.fromarray(BINARY // 255), tmp_path / "labels.png"))
    assert np.array_equal(np.asarray(got), BINARY)


def test_mask_soft_values_become_alpha(tmp_path):
    soft = np.full((12, 17), 128, np.uint8)
    tensor = to_tensor_image(load_mask(save(Image.fromarray(soft), tmp_path / "s.png")))
    assert tensor.shape == (1, 12, 17) and float(tensor.max()) == pytest.approx(128 / 255)


# ---- composites --------------------------------------------------------------------------


def test_composite_grayscale(tmp_path):
    grey = RGB[..., 0]
    got = load_rgb(save(Image.fromarray(grey), tmp_path / "g.png"))
    assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.repeat(grey[..., None], 3, axis=2))


def test_composite_rgba_drops_alpha(tmp_path):
    rgba = np.dstack([RGB, np.full((12, 17), 7, np.uint8)])
    got = load_rgb(save(Image.fromarray(rgba), tmp_path / "a.png"))
    assert got.mode == "RGB" and np.array_equal(np.asarray(got), RGB)


def test_composite_16bit_rgb_and_grey(tmp_path):
    wide = RGB.astype(np.uint16) * 256 + RNG.integers(0, 256, RGB.shape, dtype=np.uint16)  # high byte = RGB
    got = load_rgb(write_png16(tmp_path / "c16.png", wide))
    assert np.array_equal(np.asarray(got), RGB)
    got = load_rgb(write_png16(tmp_path / "g16.png", wide[..., :1]))
    assert np.abs(np.asarray(got)[..., 1].astype(int) - RGB[..., 0]).max() <= 1


def test_composite_cmyk(tmp_path):
    cmyk = Image.fromarray(RGB).convert("CMYK")
    got = load_rgb(save(cmyk, tmp_path / "c.tif"))
    assert got.mode == "RGB" and np.array_equal(np.asarray(got), RGB)
    got = load_rgb(save(cmyk, tmp_path / "c.jpg", quality=100))
    assert got.mode == "RGB" and np.abs(np.asarray(got).astype(int) - RGB).mean() < 20


def test_exif_orientation_keeps_composite_and_mask_aligned(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    comp = np.zeros((12, 17, 3), np.uint8)
    comp[BINARY > 0] = (255, 255, 255)
    save(Image.fromarray(comp), tmp_path / "c.png", exif=exif)
    save(Image.fromarray(BINARY), tmp_path / "m.png", exif=exif)
    image, mask = load_rgb(tmp_path / "c.png"), load_mask(tmp_path / "m.png")
    assert image.size == mask.size == (12, 17)  # rotated: width and height swapped
    assert np.array_equal(np.asarray(image)[..., 0], np.asarray(mask))
    assert np.array_equal(np.asarray(mask), np.rot90(BINARY, k=-1))


# ---- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("loader", [load_rgb, load_mask])
def test_unreadable_inputs_raise_one_clear_error(tmp_path, loader):
    good = save(Image.fromarray(RGB), tmp_path / "good.jpg")
    (tmp_path / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (tmp_path / "folder.png").mkdir()
    cases = {
        "truncated.jpg": "cannot read image",
        "corrupt.png": "cannot read image",
        "missing.png": "file not found",
        "folder.png": "directory",
    }
    for name, message in cases.items():
        with pytest.raises(GknetError, match=message) as info:
            loader(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)


def test_save_atomic_refuses_existing_then_overwrites(tmp_path):
    out = tmp_path / "out.png"
    save_image_atomic(Image.fromarray(RGB), out)
    with pytest.raises(GknetError, match="output exists"):
        save_image_atomic(Image.fromarray(RGB[::-1].copy()), out)
    assert np.array_equal(np.asarray(Image.open(out)), RGB)
    save_image_atomic(Image.fromarray(RGB[::-1].copy()), out, overwrite=True)
    assert np.array_equal(np.asarray(Image.open(out)), RGB[::-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary file left


def test_save_atomic_unwritable_or_bad_output(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(GknetError, match="cannot write"):
        save_image_atomic(Image.fromarray(RGB), blocker / "out.png")  # parent is a file
    with pytest.raises(GknetError, match="unknown image format"):
        save_image_atomic(Image.fromarray(RGB), tmp_path / "out.xyz")
    with pytest.raises(GknetError, match="directory"):
        save_image_atomic(Image.fromarray(RGB), tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_png_is_written_lossless_at_the_fast_compression_level(tmp_path):
    smooth = np.repeat(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], 64, axis=0).repeat(3, axis=2)
    img = Image.fromarray(smooth)
    out = save_image_atomic(img, tmp_path / "out.png")
    assert np.array_equal(np.asarray(Image.open(out)), smooth)
    for level, name in ((PNG_COMPRESS_LEVEL, "fast.png"), (6, "default.png")):
        img.save(tmp_path / name, compress_level=level)
    assert out.read_bytes() == (tmp_path / "fast.png").read_bytes() != (tmp_path / "default.png").read_bytes()
