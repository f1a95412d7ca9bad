import json
from pathlib import Path

from gknet.cli import main
from gknet.config import load_config
from gknet.models import build_model
from gknet.models.info import count_macs, count_params, modulation_macs
from tests.conftest import tiny_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_info_json(capsys):
    assert main(["info", "--config", str(CONFIGS / "gknet_small.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = build_model(load_config(CONFIGS / "gknet_small.yaml").model)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert sum(info["components"].values()) == info["params"]
    assert set(info["components"]) == {"encoder", "semantic", "lre", "kpb_scf", "decoder"}
    assert info["components"]["semantic"] == 0 and info["trainable"] == info["params"]
    assert info["macs_256"] > 1e9


def test_info_table(capsys):
    assert main(["info", "--config", str(CONFIGS / "ablation_baseline.yaml")]) == 0
    out = capsys.readouterr().out
    assert "MACs at 256x256" in out and "kpb_scf" in out


def test_info_missing_config(capsys):
    assert main(["info", "--config", "nope.yaml"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_macs_of_plain_unet_by_hand():
    # Plain U-Net, widths (8, 16), 32x32 input: count every conv by hand.
    cfg = tiny_config(use_kpb=False, use_lre=False, use_scf=False)
    s = 32
    enc = 9 * (4 * 8 + 8 * 8) * s * s + 9 * (8 * 16 + 16 * 16) * (s // 2) ** 2
    dec = 16 * 8 * (s // 2) ** 2 + 9 * (16 * 8 + 8 * 8) * s * s + 8 * 3 * s * s
    assert count_macs(build_model(cfg), s) == enc + dec
    assert modulation_macs(tiny_config(), s) == 16 * 9 * (s // 2) ** 2 + 8 * 9 * s * s
    counts = count_params(build_model(cfg))
    assert counts["lre"] == counts["kpb_scf"] == 0
