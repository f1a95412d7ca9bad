import json
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from gknet.cli import main
from gknet.config import to_dict
from gknet.models import build_model
from gknet.models.info import count_macs, count_params, modulation_macs
from tests.conftest import ship_weights, tiny_config

DEEP = tiny_config(widths=(4, 8, 8, 8, 16))  # MACs at 256 px: five levels keep the LRE to 16x16 tokens


@pytest.fixture
def tiny_yaml(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": to_dict(DEEP)}))
    return path


def test_info_json(capsys, tiny_yaml):
    assert main(["info", "--config", str(tiny_yaml), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = build_model(DEEP)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    counts = count_params(model)
    assert info["components"] == {k: v for k, v in counts.items() if k not in ("total", "trainable")}
    assert sum(info["components"].values()) == info["params"] == counts["total"]
    assert set(info["components"]) == {"encoder", "semantic", "lre", "kpb_scf", "decoder"}
    assert info["components"]["semantic"] == 0 and info["trainable"] == info["params"]
    assert info["macs_256"] == count_macs(model, 256)


def test_info_table_shows_the_counted_numbers(capsys, tiny_yaml):
    assert main(["info", "--config", str(tiny_yaml)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = dict(line.split() for line in lines if len(line.split()) == 2)
    model = build_model(DEEP)
    counts = count_params(model)
    shown = {k: v for k, v in counts.items() if k != "trainable"}  # a row only when some are frozen
    assert counts["total"] == sum(v for k, v in shown.items() if k != "total") == counts["trainable"]
    for component, count in shown.items():
        assert rows[component] == f"{count:,}", component
    assert f"MACs at 256x256: {count_macs(model, 256) / 1e9:.2f} G" in lines


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


def test_macs_count_the_lre_attention():
    """Attention runs as a CPU op that torch's FLOP counter does not list: counted as
    2 x tokens^2 x dim MACs per layer (scores and weighted sum) on top of everything else."""
    cfg = tiny_config()
    model, s = build_model(cfg).eval(), 64
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        model(torch.rand(1, 3, s, s), torch.zeros(1, 1, s, s))
    tokens, dim = (s // cfg.stride) ** 2, cfg.lre_dim or cfg.widths[-1]
    attention = cfg.lre_layers * 2 * tokens**2 * dim
    assert count_macs(model, s) == plain.get_total_flops() // 2 + modulation_macs(cfg, s) + attention


def test_a_reader_that_leaves_the_pipe_ends_the_command_quietly(tiny_yaml):
    """``gknet info --json | head -c 0``: no error line, the exit status a shell gives SIGPIPE."""
    import subprocess

    from tests.train_helpers import GKNET

    proc = subprocess.Popen(
        [GKNET, "info", "--config", str(tiny_yaml), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # before the command writes (it imports torch first)
    assert proc.stderr.read() == b"" and proc.wait() == 141


def test_info_without_a_config_lists_the_shipped_weights(monkeypatch, tmp_path, capsys, tiny_release):
    """Each shipped name with its training samples and real_val ratios (from its JSON); a name whose
    file is not installed is listed as missing, not a crash."""
    from gknet.inference import release

    target = ship_weights(monkeypatch, tmp_path / "shipped", tiny_release)
    info = json.loads(target.with_suffix(".json").read_text())
    info["meta"] = {"lineage": {"total_samples": 1234}, "real_val": {"HFlickr": {"fmse_ratio": 0.625}}}
    target.with_suffix(".json").write_text(json.dumps(info))
    monkeypatch.setattr(release, "SHIPPED", (release.DEFAULT_NAME, "absent"))
    assert main(["info", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {
        "name": release.DEFAULT_NAME,
        "default": True,
        "file": str(target),
        "samples": 1234,
        "real_val_fmse_ratio": {"HFlickr": 0.625},
    }
    assert rows[1]["name"] == "absent" and not rows[1]["default"] and "missing" in rows[1]["missing"]
    assert main(["info"]) == 0
    table = capsys.readouterr().out
    assert f"{release.DEFAULT_NAME} (default): 1,234 training samples; HFlickr 0.62" in table
    assert "absent: the shipped weights 'absent' are missing" in table
