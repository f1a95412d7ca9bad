"""ONNX export and the ONNX Runtime backend: same outputs as torch, any size, end to end.

Skipped when the optional extra (onnx, onnxscript, onnxruntime) is not installed; the dev
extra installs it, so CI runs these.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gknet import Harmonizer
from gknet.cli import main
from gknet.config import FullResConfig, InferenceConfig
from gknet.errors import GknetError
from gknet.inference.release import save_release
from gknet.io.images import load_mask, load_rgb, to_tensor_image
from gknet.models import build_model
from tests.conftest import require_shared, tiny_config

for _module in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_module)

from gknet.inference.onnx_backend import OnnxRuntimeModel, export_onnx  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 1e-4
LALONDE = ("image_001084", "image_001900")  # 256x256 and 341x256


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped model in torch and its ONNX export in ONNX Runtime (exported once: seconds)."""
    torch_h = Harmonizer.from_pretrained()
    path = tmp_path_factory.mktemp("onnx") / "gknet_small.onnx"
    export_onnx(torch_h.model, path, settings=torch_h.settings, name=torch_h.name)
    return torch_h, Harmonizer.from_pretrained(path), path


def test_the_export_carries_the_releases_settings(shipped):
    torch_h, ort_h, _ = shipped
    assert isinstance(ort_h.model, OnnxRuntimeModel)
    assert ort_h.settings == torch_h.settings and ort_h.name == torch_h.name == "gknet_small"
    assert ort_h.model.cfg == torch_h.model.cfg


@pytest.mark.parametrize("shape", [(1, 256, 256), (2, 64, 96), (1, 200, 136), (1, 17, 33)])
def test_onnxruntime_equals_torch_on_random_inputs(shipped, shape):
    torch_h, ort_h, _ = shipped
    b, h, w = shape
    g = torch.Generator().manual_seed(h * w)
    comp, mask = torch.rand(b, 3, h, w, generator=g), (torch.rand(b, 1, h, w, generator=g) > 0.5).float()
    with torch.no_grad():
        expected = torch_h.model(comp, mask)
    out = ort_h.model(comp, mask)
    assert out.shape == expected.shape and (out - expected).abs().max() <= TOLERANCE


def test_onnxruntime_equals_torch_on_real_composites(shipped):
    """Real composites through the network at their own sizes and through the whole Harmonizer."""
    torch_h, ort_h, _ = shipped
    root = require_shared("data", "lalonde_composites")
    for name in LALONDE:
        image = load_rgb(root / "composites" / f"{name}.jpg")
        alpha = load_mask(root / "masks" / f"{name}.png")
        comp, mask = to_tensor_image(image)[None], to_tensor_image(alpha)[None]
        with torch.no_grad():
            expected = torch_h.model(comp, mask)
        assert (ort_h.model(comp, mask) - expected).abs().max() <= TOLERANCE
        by_torch, by_ort = (np.asarray(h(image, alpha), np.int16) for h in (torch_h, ort_h))
        assert np.abs(by_torch - by_ort).max() <= 1  # 8-bit outputs: at most a rounding step apart


def test_harmonize_cli_runs_the_onnx_file(shipped, tmp_path, capsys):
    _, _, path = shipped
    root = require_shared("data", "lalonde_composites")
    comp, mask = root / "composites" / f"{LALONDE[1]}.jpg", root / "masks" / f"{LALONDE[1]}.png"
    out = tmp_path / "out.png"
    assert main(["harmonize", str(comp), str(mask), "-o", str(out), "--weights", str(path)]) == 0
    expected = Harmonizer.from_pretrained(path)(load_rgb(comp), load_mask(mask))
    assert np.array_equal(np.asarray(load_rgb(out)), np.asarray(expected))
    capsys.readouterr()


def test_export_cli_and_backends_on_release_weights(tmp_path, capsys):
    cfg = tiny_config()
    model = build_model(cfg).eval()
    weights = save_release(model, cfg, tmp_path / "tiny.safetensors")
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--onnx", str(out), "--weights", str(weights)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["export", "--onnx", str(out), "--weights", str(weights)]) == 2
    assert "output exists" in capsys.readouterr().err
    for args, message in (
        (["--onnx", str(tmp_path / "x.pt"), "--weights", str(weights)], "must end in .onnx"),
        ([], "nothing to write"),
        (["-o", str(tmp_path / "x.safetensors")], "needs a training checkpoint"),
        (["--onnx", str(tmp_path / "y.onnx"), "--weights", str(tmp_path / "none.safetensors")], "not found"),
    ):
        assert main(["export", *args]) == 2 and message in capsys.readouterr().err
    g = torch.Generator().manual_seed(0)
    comp, mask = torch.rand(1, 3, 45, 70, generator=g), (torch.rand(1, 1, 45, 70, generator=g) > 0.5).float()
    reference = Harmonizer(model, resolution=32).harmonize_tensor(comp, mask)
    for harmonizer in (
        Harmonizer.from_pretrained(out, resolution=32),  # .onnx: ONNX Runtime
        Harmonizer.from_pretrained(weights, resolution=32, backend="onnxruntime"),  # exported in memory
    ):
        assert isinstance(harmonizer.model, OnnxRuntimeModel)
        assert (harmonizer.harmonize_tensor(comp, mask) - reference).abs().max() <= TOLERANCE
    with pytest.raises(GknetError, match="runs with backend 'onnxruntime'"):
        Harmonizer.from_pretrained(out, backend="torch")
    with pytest.raises(GknetError, match="backend must be one of"):
        Harmonizer.from_pretrained(weights, backend="tensorrt")


def test_an_export_runs_with_its_releases_inference_settings(tmp_path, capsys):
    """Not the defaults: a release's resolution and full-resolution transfer travel into the .onnx."""
    cfg = tiny_config()
    settings = InferenceConfig(resolution=48, fullres=FullResConfig(radius=3, eps=1e-3, weight_power=4))
    weights = save_release(build_model(cfg).eval(), cfg, tmp_path / "tuned.safetensors", inference=settings)
    out = tmp_path / "tuned.onnx"
    assert main(["export", "--onnx", str(out), "--weights", str(weights)]) == 0
    capsys.readouterr()
    torch_h, ort_h = Harmonizer.from_pretrained(weights), Harmonizer.from_pretrained(out)
    assert ort_h.settings == torch_h.settings == settings and ort_h.name == "tuned"
    g = torch.Generator().manual_seed(1)
    comp, mask = torch.rand(1, 3, 90, 70, generator=g), (torch.rand(1, 1, 90, 70, generator=g) > 0.5).float()
    expected = torch_h.harmonize_tensor(comp, mask)
    assert (ort_h.harmonize_tensor(comp, mask) - expected).abs().max() <= TOLERANCE


def test_a_model_with_s2am_blocks_and_the_semantic_encoder_exports():
    """One export for both optional parts (exports take seconds). The pretrained backbone and its
    join travel in the graph; random backbone weights: the parity does not depend on them, and
    the test needs no weights package."""
    cfg = tiny_config(
        widths=(8, 8, 16), use_s2am=True, s2am_levels=2, semantic="efficientnet_lite0", semantic_levels=2
    )
    model = build_model(cfg, pretrained=False).eval()
    for conv in model.semantic.project.values():  # zero at init: give the join an effect
        torch.nn.init.normal_(conv.weight, std=0.1)
    ort = OnnxRuntimeModel(export_onnx(model))
    assert ort.cfg == cfg
    g = torch.Generator().manual_seed(2)
    for h, w in ((32, 32), (40, 56), (37, 53)):
        comp, mask = torch.rand(2, 3, h, w, generator=g), (torch.rand(2, 1, h, w, generator=g) > 0.5).float()
        with torch.no_grad():
            expected = model(comp, mask)
        assert (ort(comp, mask) - expected).abs().max() <= TOLERANCE


def test_bad_onnx_files_fail_with_one_clear_error(tmp_path):
    import onnx

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(GknetError, match="cannot load ONNX model"):
        Harmonizer.from_pretrained(tmp_path / "junk.onnx")
    with pytest.raises(GknetError, match="ONNX model not found"):
        Harmonizer.from_pretrained(tmp_path / "missing.onnx")
    bare = onnx.load_from_string(export_onnx(build_model(tiny_config()).eval()))
    del bare.metadata_props[:]  # an export without gknet's settings
    onnx.save(bare, tmp_path / "bare.onnx")
    with pytest.raises(GknetError, match="no gknet settings"):
        Harmonizer.from_pretrained(tmp_path / "bare.onnx")
