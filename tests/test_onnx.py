"""ONNX export and the ONNX Runtime backend: same outputs as torch, any size, end to end.

One export serves the module (the exporter traces for seconds, whatever the model's size): a
tiny release with every block the shipped model has plus S2AM attention and the semantic encoder,
and inference settings that are not the defaults, written by ``gknet export --onnx``.

Skipped when the optional extra (onnx, onnxscript, onnxruntime) is not installed; the dev
extra installs it, so CI runs these.
"""

from __future__ import annotations

import contextlib
import io

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

from gknet.inference.onnx_backend import OnnxRuntimeModel  # noqa: E402

TOLERANCE = 1e-4
LALONDE = ("image_001084", "image_001900")  # 256x256 and 341x256
# three levels, KPB on two of them (the shipped model: four, on three), S2AM in the two finest and
# the semantic encoder joined to the two deepest
CFG = tiny_config(
    widths=(8, 8, 16), use_s2am=True, s2am_levels=2, semantic="efficientnet_lite0", semantic_levels=2
)
SETTINGS = InferenceConfig(resolution=48, fullres=FullResConfig(radius=3, eps=1e-3, weight_power=4))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(release weights, their .onnx export by ``gknet export --onnx``)."""
    folder = tmp_path_factory.mktemp("onnx")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        # Random backbone weights: the parity does not depend on them, and no weights package is needed.
        model = build_model(CFG, pretrained=False)
        for conv in model.semantic.project.values():  # zero at init: give the join an effect
            torch.nn.init.normal_(conv.weight, std=0.1)
    weights = save_release(model, CFG, folder / "tuned.safetensors", inference=SETTINGS)
    out = folder / "tuned.onnx"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main(["export", "--onnx", str(out), "--weights", str(weights)]) == 0
    assert f"wrote {out}" in stdout.getvalue()
    return weights, out


@pytest.fixture(scope="module")
def harmonizers(exported):
    """The release on torch and its export on ONNX Runtime."""
    weights, out = exported
    return Harmonizer.from_pretrained(weights), Harmonizer.from_pretrained(out)


def test_the_export_carries_the_releases_settings(harmonizers):
    torch_h, ort_h = harmonizers
    assert isinstance(ort_h.model, OnnxRuntimeModel)
    assert ort_h.settings == torch_h.settings == SETTINGS and ort_h.name == torch_h.name == "tuned"
    assert ort_h.model.cfg == torch_h.model.cfg == CFG


@pytest.mark.parametrize("shape", [(1, 256, 256), (2, 64, 96), (1, 200, 136), (1, 17, 33)])
def test_onnxruntime_equals_torch_on_random_inputs(harmonizers, shape):
    torch_h, ort_h = harmonizers
    b, h, w = shape
    g = torch.Generator().manual_seed(h * w)
    comp, mask = torch.rand(b, 3, h, w, generator=g), (torch.rand(b, 1, h, w, generator=g) > 0.5).float()
    with torch.no_grad():
        expected = torch_h.model(comp, mask)
    out = ort_h.model(comp, mask)
    assert out.shape == expected.shape and (out - expected).abs().max() <= TOLERANCE
    # the whole Harmonizer: network at the release's resolution, then its full-resolution transfer
    expected = torch_h.harmonize_tensor(comp, mask)
    assert (ort_h.harmonize_tensor(comp, mask) - expected).abs().max() <= TOLERANCE


def test_onnxruntime_equals_torch_on_real_composites(harmonizers):
    """Real composites through the network at their own sizes and through the whole Harmonizer."""
    torch_h, ort_h = harmonizers
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


def test_harmonize_cli_runs_the_onnx_file(exported, tmp_path, capsys):
    _, path = exported
    root = require_shared("data", "lalonde_composites")
    comp, mask = root / "composites" / f"{LALONDE[1]}.jpg", root / "masks" / f"{LALONDE[1]}.png"
    out = tmp_path / "out.png"
    assert main(["harmonize", str(comp), str(mask), "-o", str(out), "--weights", str(path)]) == 0
    expected = Harmonizer.from_pretrained(path)(load_rgb(comp), load_mask(mask))
    assert np.array_equal(np.asarray(load_rgb(out)), np.asarray(expected))
    capsys.readouterr()


def test_export_cli_refuses_bad_requests(exported, tmp_path, capsys):
    weights, out = exported
    before = out.read_bytes()
    assert main(["export", "--onnx", str(out), "--weights", str(weights)]) == 2
    assert "output exists" in capsys.readouterr().err and out.read_bytes() == before
    for args, message in (
        (["--onnx", str(tmp_path / "x.pt"), "--weights", str(weights)], "must end in .onnx"),
        ([], "nothing to write"),
        (["-o", str(tmp_path / "x.safetensors")], "needs a training checkpoint"),
        (["--onnx", str(tmp_path / "y.onnx"), "--weights", str(tmp_path / "none.safetensors")], "not found"),
    ):
        assert main(["export", *args]) == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_onnxruntime_backend_exports_the_release_in_memory(exported, harmonizers, monkeypatch):
    """``backend="onnxruntime"`` hands the exporter the release's model, settings and name and runs
    what it returns. The export itself is the module's (a second one would cost seconds): the
    exporter here returns the bytes of that file, after checking what it was given."""
    import gknet.inference.onnx_backend as backend

    weights, out = exported
    torch_h, _ = harmonizers
    given = {}

    def export_onnx(model, path=None, settings=None, name="model"):
        given.update(model=model, path=path, settings=settings, name=name)
        return out.read_bytes()

    monkeypatch.setattr(backend, "export_onnx", export_onnx)
    harmonizer = Harmonizer.from_pretrained(weights, resolution=32, backend="onnxruntime")
    assert given["path"] is None and given["settings"] == SETTINGS and given["name"] == "tuned"
    release = torch_h.model.state_dict()
    assert all(torch.equal(v, release[k].to(v.dtype)) for k, v in given["model"].state_dict().items())
    assert isinstance(harmonizer.model, OnnxRuntimeModel) and harmonizer.resolution == 32
    g = torch.Generator().manual_seed(0)
    comp, mask = torch.rand(1, 3, 45, 70, generator=g), (torch.rand(1, 1, 45, 70, generator=g) > 0.5).float()
    reference = Harmonizer(torch_h.model, resolution=32, settings=SETTINGS).harmonize_tensor(comp, mask)
    assert (harmonizer.harmonize_tensor(comp, mask) - reference).abs().max() <= TOLERANCE


def test_backend_mismatches_fail_with_one_clear_error(exported):
    weights, out = exported
    with pytest.raises(GknetError, match="runs with backend 'onnxruntime'"):
        Harmonizer.from_pretrained(out, backend="torch")
    with pytest.raises(GknetError, match="backend must be one of"):
        Harmonizer.from_pretrained(weights, backend="tensorrt")


def test_bad_onnx_files_fail_with_one_clear_error(exported, tmp_path):
    import onnx

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(GknetError, match="cannot load ONNX model"):
        Harmonizer.from_pretrained(tmp_path / "junk.onnx")
    with pytest.raises(GknetError, match="ONNX model not found"):
        Harmonizer.from_pretrained(tmp_path / "missing.onnx")
    bare = onnx.load(exported[1])
    del bare.metadata_props[:]  # an export without gknet's settings
    onnx.save(bare, tmp_path / "bare.onnx")
    with pytest.raises(GknetError, match="no gknet settings"):
        Harmonizer.from_pretrained(tmp_path / "bare.onnx")
