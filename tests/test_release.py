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
