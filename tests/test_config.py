from pathlib import Path

import pytest

from gknet.config import Config, ConfigError, ModelConfig, load_config, override, to_dict

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_shipped_configs_exist():
    names = {p.stem for p in CONFIGS}
    rows = ("baseline", "kpb", "kpb_lre", "full")
    expected = {"gknet_paper", "gknet_small"} | {f"ablation_{r}" for r in rows}
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg.model.widths, tuple)


def test_ablation_rows_differ_only_in_switches():
    root = Path(__file__).resolve().parents[1] / "configs"
    rows = [load_config(root / f"ablation_{r}.yaml") for r in ("baseline", "kpb", "kpb_lre", "full")]
    switches = [(c.model.use_kpb, c.model.use_lre, c.model.use_scf) for c in rows]
    assert switches == [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    strip = [{**to_dict(c.model), "use_kpb": 0, "use_lre": 0, "use_scf": 0} for c in rows]
    assert all(s == strip[0] for s in strip)
    assert all(c.train == rows[0].train and c.data == rows[0].data for c in rows)


def test_unknown_key_rejected(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  widths: [8, 16]\n  kernal_size: 3\n")
    with pytest.raises(ConfigError, match="kernal_size"):
        load_config(p)
    p.write_text("modle: {}\n")
    with pytest.raises(ConfigError, match="modle"):
        load_config(p)


def test_type_and_value_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  kernel_size: 4\n")
    with pytest.raises(ConfigError, match="odd"):
        load_config(p)
    p.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match="lr"):
        load_config(p)
    with pytest.raises(ConfigError, match="use_kpb"):
        ModelConfig(use_kpb=False, use_lre=True, use_scf=False)


def test_frozen_and_override():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.model.widths = (1, 2)  # type: ignore[misc]
    new = override(cfg, ["train.lr=3e-4", "model.widths=[8, 16, 32, 64]"])
    assert new.train.lr == 3e-4 and new.model.widths == (8, 16, 32, 64)
    with pytest.raises(ConfigError):
        override(cfg, ["train.nope=1"])
