import math
from pathlib import Path

import pytest
import yaml

from gknet.config import (
    Config,
    ConfigError,
    InferenceConfig,
    ModelConfig,
    from_dict,
    load_config,
    override,
    to_dict,
)

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_shipped_configs_exist():
    names = {p.stem for p in CONFIGS}
    rows = ("baseline", "kpb", "kpb_lre", "full")
    expected = {"gknet_paper", "gknet_small"} | {f"ablation_{r}" for r in rows}
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_round_trip_through_their_stored_form(path):
    """Checkpoints store the config as a dict: each shipped config comes back equal from it."""
    cfg = load_config(path)
    assert from_dict(Config, yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg


def test_ablation_rows_differ_only_in_switches():
    root = Path(__file__).resolve().parents[1] / "configs"
    rows = [load_config(root / f"ablation_{r}.yaml") for r in ("baseline", "kpb", "kpb_lre", "full")]
    switches = [(c.model.use_kpb, c.model.use_lre, c.model.use_scf) for c in rows]
    assert switches == [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    strip = [{**to_dict(c.model), "use_kpb": 0, "use_lre": 0, "use_scf": 0} for c in rows]
    assert all(s == strip[0] for s in strip)
    assert all(c.train == rows[0].train and c.data == rows[0].data for c in rows)


def test_ablation_rows_are_overrides_of_the_full_row():
    root = Path(__file__).resolve().parents[1] / "configs"
    base = to_dict(load_config(root / "ablation_full.yaml"))
    switches = {"use_kpb", "use_lre", "use_scf"}
    for row in ("baseline", "kpb", "kpb_lre"):
        raw = yaml.safe_load((root / f"ablation_{row}.yaml").read_text())
        assert raw["base"] == "ablation_full.yaml" and set(raw) == {"base", "model"}
        assert set(raw["model"]) == switches  # the file holds its switches and nothing else
        resolved = to_dict(load_config(root / f"ablation_{row}.yaml"))
        assert resolved.keys() == base.keys()
        for section in base:  # a full config, equal to the base but for the switches
            assert resolved[section].keys() == base[section].keys()
            differing = {k for k in base[section] if resolved[section][k] != base[section][k]}
            assert differing <= (switches if section == "model" else set()), (row, section, differing)


def test_base_key_merges_per_key_and_rejects_cycles(tmp_path):
    (tmp_path / "a.yaml").write_text("model: {widths: [8, 16, 32, 64], kernel_size: 5}\ntrain: {lr: 0.1}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nmodel:\n  kernel_size: 7\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\ntrain:\n  epochs: 3\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.model.widths, cfg.model.kernel_size) == ((8, 16, 32, 64), 7)
    assert (cfg.train.lr, cfg.train.epochs) == (0.1, 3)
    (tmp_path / "e.yaml").write_text("base: b.yaml\nmodel:\n  kernal_size: 3\n")
    with pytest.raises(ConfigError, match="kernal_size"):
        load_config(tmp_path / "e.yaml")
    (tmp_path / "d.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "d.yaml")
    (tmp_path / "a.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "c.yaml")


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


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("train.lr=-1e-3", "train.lr must be a finite number in [0, inf), got -0.001"),
        ("train.lr=.nan", "train.lr must be a finite number in [0, inf), got nan"),
        ("train.lr=.inf", "train.lr must be a finite number"),
        ("train.max_steps=-5", "train.max_steps must be an integer >= 0, got -5"),
        ("train.epochs=0", "train.epochs must be an integer >= 1"),
        ("train.log_every=0", "train.log_every must be an integer >= 1"),
        ("train.warmup_steps=-1", "train.warmup_steps must be an integer >= 0"),
        ("train.eps=0", "train.eps must be a finite number in (0, inf)"),
        ("train.betas=[0.9,1.5]", "train.betas[1] must be a finite number in [0, 1)"),
        ("train.ema_decay=1", "train.ema_decay must be a finite number in [0, 1)"),
        ('data.edit_modes={"object":-1}', "data.edit_modes.object must be a finite number in [0, inf)"),
        ('data.edit_families={"sepia":1}', "unknown key(s) in data.edit_families: sepia (allowed: "),
        ("train.lr={a:", "override 'train.lr={a:': the value is not valid YAML (while parsing a flow node)"),
        ("data.edit_families=[1]", "data.edit_families must be a mapping such as {lab_transfer: 1.0}"),
        ('data.edit_modes={"scene":true}', "data.edit_modes.scene must be a number, got True"),
        ("train.crop_scale=[0.8,0.5]", "train.crop_scale[1] must be a finite number in [0.8, 1]"),
        ("train.max_minutes=-1", "train.max_minutes must be a finite number in [0, inf)"),
        ("train.seed=-1", "train.seed must be an integer >= 0"),
        ("data.val_fraction=.nan", "data.val_fraction must be a finite number in (0, 1)"),
        ("data.workers=-2", "data.workers must be an integer >= 0"),
        ("data.cache_mb=-1", "data.cache_mb must be a finite number in [0, inf)"),
        ("model.lre_heads=0", "model.lre_heads must be an integer >= 1"),
        ("model.scf_groups=0", "model.scf_groups must be an integer >= 1"),
        ("model.lre_mlp_ratio=.nan", "model.lre_mlp_ratio must be a finite number in (0, inf)"),
        ("model.s2am_mid_k=.inf", "model.s2am_mid_k must be a finite number in (0, inf), got inf"),
        ("model.s2am_levels=0", "model.s2am_levels must be between 1 and 3"),
        ("model.lre_dim=6 model.lre_heads=2", "LRE width 6 must be divisible by 4 for lre_pos: sinusoidal"),
    ],
)
def test_numbers_outside_their_range_are_refused_with_the_range(assignment, message):
    with pytest.raises(ConfigError) as caught:
        override(Config(), assignment.split())
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"resolution": 8}, "inference.resolution must be >= 16"),
        ({"normalization": {"std": [0.2, math.nan, 0.2]}}, "inference.normalization.std[1] must be a finite"),
        ({"normalization": {"std": [0.2, 0.2, 0]}}, "normalization.std[2] must be a finite number in (0"),
        ({"normalization": {"mean": [math.inf, 0, 0]}}, "inference.normalization.mean[0] must be a finite"),
        ({"fullres": {"eps": math.nan}}, "inference.fullres.eps must be a finite number in (0, inf)"),
        ({"fullres": {"radius": 0}}, "inference.fullres.radius must be an integer >= 1"),
    ],
)
def test_release_inference_numbers_outside_their_range_are_refused(section, message):
    with pytest.raises(ConfigError) as caught:
        from_dict(InferenceConfig, section, where="inference")
    assert message in str(caught.value)
