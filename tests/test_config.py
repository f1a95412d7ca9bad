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
        ("train.crop_scale=[0.8,0.5]", "train.crop_scale[1] must be a finite number in [0.8, 1]"),
        ("train.max_minutes=-1", "train.max_minutes must be a finite number in [0, inf)"),
        ("train.seed=-1", "train.seed must be an integer >= 0"),
        ("data.val_fraction=.nan", "data.val_fraction must be a finite number in (0, 1)"),
        ("data.workers=-2", "data.workers must be an integer >= 0"),
        ("model.lre_heads=0", "model.lre_heads must be an integer >= 1"),
        ("model.scf_groups=0", "model.scf_groups must be an integer >= 1"),
        ("model.lre_mlp_ratio=.nan", "model.lre_mlp_ratio must be a finite number in (0, inf)"),
        ("model.lre_dim=6 model.lre_heads=2", "LRE width 6 must be divisible by 4 for lre_pos: sinusoidal"),
    ],
)
def test_numbers_outside_their_range_are_refused_with_the_range(assignment, message):
    with pytest.raises(ConfigError) as caught:
        override(Config(), assignment.split())
    assert message in str(caught.value)
