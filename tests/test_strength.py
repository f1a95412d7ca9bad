"""The strength dial: API, ``gknet harmonize --strength`` and the studio's strength field."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gknet.cli import main
from gknet.errors import GknetError
from gknet.inference.harmonizer import Harmonizer
from gknet.inference.release import save_release
from gknet.inference.strength import apply_strength
from gknet.models import build_model
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
BAD = (-0.1, 1.51, float("nan"), float("inf"), "1", True, None)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_config()
    return save_release(build_model(cfg), cfg, tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="module")
def inputs():
    """A 40x52 composite (larger than the 32 px pass: the full-resolution transfer runs) and a soft mask."""
    g = torch.Generator().manual_seed(1)
    composite = torch.rand(1, 3, 40, 52, generator=g)
    mask = torch.zeros(1, 1, 40, 52)
    mask[..., 8:30, 10:40] = 1.0
    mask[..., 8:30, 10:14] = 0.5
    return composite, mask


def test_apply_strength_matches_a_naive_reference():
    g = torch.Generator().manual_seed(0)
    composite, harmonized = torch.rand(2, 1, 3, 9, 11, generator=g)
    mask = (torch.rand(1, 1, 9, 11, generator=g) > 0.4).float()
    harmonized = torch.where(mask > 0, harmonized, composite)
    for strength in (0.0, 0.3, 1.0, 1.5):
        out = apply_strength(composite, harmonized, mask, strength)
        for c, h, m, o in zip(
            composite.flatten(),
            harmonized.flatten(),
            mask.expand_as(composite).flatten(),
            out.flatten(),
            strict=True,
        ):
            expected = min(max(c.item() + strength * (h.item() - c.item()), 0.0), 1.0) if m > 0 else c.item()
            assert o.item() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(apply_strength(composite, harmonized, mask, 1.0), harmonized)
    assert torch.equal(apply_strength(composite, harmonized, mask, 0), composite)


def test_harmonizer_strength(weights, inputs):
    h = Harmonizer.from_pretrained(weights, resolution=32)
    composite, mask = inputs
    full = h.harmonize_tensor(composite, mask)
    assert torch.equal(h.harmonize_tensor(composite, mask, 1.0), full)  # 1 is today's output
    assert torch.equal(h.harmonize_tensor(composite, mask, 0.0), composite)  # 0 is the composite
    half = h.harmonize_tensor(composite, mask, 0.5)
    torch.testing.assert_close(half, (composite + full) / 2, atol=1e-6, rtol=0)
    strong = h.harmonize_tensor(composite, mask, 1.5)
    torch.testing.assert_close(strong, (composite + 1.5 * (full - composite)).clamp(0, 1), atol=1e-6, rtol=0)
    assert strong.min() >= 0 and strong.max() <= 1
    outside = (mask == 0).expand_as(composite)
    for out in (half, strong):
        assert torch.equal(out[outside], composite[outside])  # bit for bit
    # the PIL path: uint8 in, uint8 out; strength 0 gives the composite's pixels back
    image = Image.fromarray((composite[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    alpha = Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8))
    assert np.array_equal(np.asarray(h(image, alpha, strength=0)), np.asarray(image))
    for bad in BAD:
        with pytest.raises(GknetError, match="strength must be"):
            h(image, alpha, strength=bad)


def test_cli_strength_end_to_end(weights, inputs, tmp_path, capsys):
    composite, mask = inputs
    Image.fromarray((composite[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
        tmp_path / "c.png"
    )
    Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "m.png")
    options = ["--weights", str(weights), "--device", "cpu", "--resolution", "32"]
    outputs = {}
    for strength in ("0", "0.5", "1"):
        out = tmp_path / f"out_{strength}.png"
        code = main(
            [
                "harmonize",
                *options,
                "--strength",
                strength,
                str(tmp_path / "c.png"),
                str(tmp_path / "m.png"),
                "-o",
                str(out),
            ]
        )
        assert code == 0
        outputs[strength] = np.asarray(Image.open(out)).astype(int)
    original = np.asarray(Image.open(tmp_path / "c.png")).astype(int)
    assert np.array_equal(outputs["0"], original)
    # the midpoint up to 8-bit rounding of each file
    assert np.abs(outputs["0.5"] - (original + outputs["1"]) / 2).max() <= 1
    capsys.readouterr()
    code = main(
        [
            "harmonize",
            *options,
            "--strength",
            "2",
            str(tmp_path / "c.png"),
            str(tmp_path / "m.png"),
            "-o",
            str(tmp_path / "x.png"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "strength must be in [0, 1.5]" in err[0]
    assert not (tmp_path / "x.png").exists()


def test_studio_strength_field(weights, tmp_path):
    pytest.importorskip("fastapi", reason="the studio extra (fastapi) is not installed")
    pytest.importorskip("httpx", reason="httpx (FastAPI's test client) is not installed")
    from fastapi.testclient import TestClient

    from gknet.studio.server import create_app

    h = Harmonizer.from_pretrained(weights, resolution=32)
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    alpha = np.zeros((30, 40), np.uint8)
    alpha[5:25, 8:30] = 255
    alpha = Image.fromarray(alpha)

    def png(img):
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        return buffer.getvalue()

    files = {"composite": ("c.png", png(image), "image/png"), "mask": ("m.png", png(alpha), "image/png")}
    with TestClient(
        create_app(tmp_path / "studio.sqlite", harmonizer=h), base_url="http://localhost"
    ) as client:
        assert client.get("/api/info").json()["max_strength"] == 1.5
        for strength in ("0", "0.5", "1.5"):
            response = client.post("/api/harmonize", files=files, data={"strength": strength})
            assert response.status_code == 200, response.text
            result = np.asarray(Image.open(io.BytesIO(response.content)))
            assert np.array_equal(result, np.asarray(h(image, alpha, strength=float(strength))))
        default = client.post("/api/harmonize", files=files)
        assert np.array_equal(
            np.asarray(Image.open(io.BytesIO(default.content))), np.asarray(h(image, alpha))
        )
        for bad, message in (
            ("1.6", "strength must be in [0, 1.5]"),
            ("nan", "strength must be"),
            ("x", "strength"),
        ):
            response = client.post("/api/harmonize", files=files, data={"strength": bad})
            assert response.status_code == 422 and message in response.json()["detail"], response.text
