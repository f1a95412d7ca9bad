import json

import pytest
import torch

from gknet.errors import GknetError
from gknet.inference.release import load_release, save_release
from gknet.models import build_model
from tests.conftest import tiny_config


def test_round_trip(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    path = save_release(model, cfg, tmp_path / "m.safetensors", meta={"step": 7})
    loaded, cfg2, meta = load_release(path)
    assert cfg2 == cfg and meta == {"step": 7} and not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x, m = torch.rand(1, 3, 20, 24), torch.ones(1, 1, 20, 24)
    with torch.no_grad():
        assert torch.equal(model(x, m), loaded(x, m))


def test_strict_loading_errors(tmp_path):
    cfg = tiny_config()
    path = save_release(build_model(cfg), cfg, tmp_path / "m.safetensors")
    sidecar = path.with_suffix(".json")
    info = json.loads(sidecar.read_text())

    info["model"]["widths"] = [8, 32]
    sidecar.write_text(json.dumps(info))
    with pytest.raises(GknetError, match="do not match"):
        load_release(path)

    info["model"] = {**tiny_config().__dict__, "widths": [8, 16], "use_scf": False}
    sidecar.write_text(json.dumps(info))
    with pytest.raises(GknetError, match="missing|unexpected"):
        load_release(path)

    info["model"]["bogus"] = 1
    sidecar.write_text(json.dumps(info))
    with pytest.raises(GknetError, match="bogus"):
        load_release(path)

    sidecar.write_text("{not json")
    with pytest.raises(GknetError, match="JSON"):
        load_release(path)

    sidecar.unlink()
    with pytest.raises(GknetError, match="config file missing"):
        load_release(path)
    with pytest.raises(GknetError, match="not found"):
        load_release(tmp_path / "nope.safetensors")


def test_corrupt_weights(tmp_path):
    cfg = tiny_config()
    path = save_release(build_model(cfg), cfg, tmp_path / "m.safetensors")
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(GknetError, match="cannot read"):
        load_release(path)


def test_interpolate_weights_script_mixes_two_releases(tmp_path, tiny_release, capsys):
    """scripts/interpolate_weights.py: (1 - a) x A + a x B tensor by tensor, both ends exact, one
    error line (and nothing written) for an output over an input or another architecture."""
    from gknet.inference.release import read_release
    from tests.conftest import load_script, tiny_model

    script = load_script("interpolate_weights")
    other = save_release(tiny_model(seed=1), tiny_config(), tmp_path / "other.safetensors")
    first, second = (read_release(p).model.state_dict() for p in (tiny_release, other))
    for weight in (0.0, 0.3, 1.0):
        out = tmp_path / f"mix_{weight}.safetensors"
        assert script.main([str(tiny_release), str(other), str(weight), "-o", str(out)]) == 0
        mixed = read_release(out).model.state_dict()
        for name, tensor in mixed.items():
            a, b = first[name], second[name]
            expected = a + weight * (b - a) if a.is_floating_point() else b
            torch.testing.assert_close(tensor, expected, atol=1e-6, rtol=0, msg=name)
    capsys.readouterr()
    before = other.read_bytes()
    assert script.main([str(tiny_release), str(other), "0.5", "-o", str(other)]) == 1
    wide_cfg = tiny_config(widths=(8, 24))
    wide = save_release(tiny_model(wide_cfg), wide_cfg, tmp_path / "wide")
    assert script.main([str(tiny_release), str(wide), "0.5", "-o", str(tmp_path / "bad.safetensors")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert other.read_bytes() == before and not (tmp_path / "bad.safetensors").exists()
