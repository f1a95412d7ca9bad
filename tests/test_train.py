"""Training loop: overfitting, data order, schedules, datasets, export, logs and CLI errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from gknet.cli import main as cli_main
from gknet.config import Config, TrainConfig
from gknet.data.split import is_validation
from gknet.inference.release import inference_config, load_release
from gknet.models import build_model
from gknet.models.losses import fn_mse_loss
from gknet.training import epoch_batches, lr_factor, train
from gknet.training.data import build_datasets
from gknet.training.log import ema, read_log
from gknet.training.state import load_state, restore_rng_states, rng_states
from tests.conftest import require_shared, ship_weights, tiny_config
from tests.train_helpers import GKNET, tiny_train_config, write_iharmony4_tree, write_triplet_folder


class ItemList(Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def _batch_loss(model: torch.nn.Module, items: list[dict], a_min: float) -> float:
    batch = {k: torch.stack([it[k] for it in items]) for k in ("composite", "mask", "target")}
    with torch.no_grad():  # train mode: BatchNorm uses batch statistics, as during training
        pred = model(batch["composite"], batch["mask"])
    return float(fn_mse_loss(pred, batch["target"], batch["mask"], a_min))


def test_tiny_model_overfits_four_synthetic_composites(tmp_path):
    from gknet.data.synthetic import SyntheticComposites

    photos = require_shared("data", "photos")
    source = SyntheticComposites(photos, "val", image_size=32, limit=4)
    items = [source[i] for i in range(4)]
    train_cfg = TrainConfig(
        image_size=32, batch_size=4, epochs=1000, max_steps=80, lr=3e-3, log_every=10, val_every=80, threads=1
    )
    cfg = Config(model=tiny_config(), train=train_cfg)
    result = train(cfg, tmp_path / "run", datasets=(ItemList(items), ItemList(items)))
    assert result["step"] == 80 and result["stopped"] == "max_steps"

    torch.manual_seed(cfg.train.seed)  # the initial weights train() started from
    initial = build_model(cfg.model)
    trained = build_model(cfg.model)
    trained.load_state_dict(load_state(tmp_path / "run" / "ckpt" / "last.pt")["model"])
    before, after = _batch_loss(initial, items, cfg.train.a_min), _batch_loss(trained, items, cfg.train.a_min)
    assert after * 10 <= before, (before, after)


class ThreadSpy(ItemList):
    """Records torch's thread count whenever the training loop reads an item."""

    def __init__(self, items: list[dict]):
        super().__init__(items)
        self.threads: set[int] = set()

    def __getitem__(self, index: int) -> dict:
        self.threads.add(torch.get_num_threads())
        return super().__getitem__(index)


def random_items(count: int, size: int = 16) -> list[dict]:
    """Training items of random pixels with a full mask."""
    shape = (size, size)
    return [
        {"composite": torch.rand(3, *shape), "mask": torch.ones(1, *shape), "target": torch.rand(3, *shape)}
        for _ in range(count)
    ]


def test_train_runs_on_train_threads_and_restores_the_thread_count(tmp_path):
    items = random_items(2)
    spy = ThreadSpy(items)
    cfg = Config(model=tiny_config(), train=TrainConfig(image_size=16, batch_size=2, max_steps=1, threads=1))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(cfg, tmp_path / "run", datasets=(spy, ItemList(items)))
        assert spy.threads == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cpu_training_runs_the_network_channels_last(tmp_path):
    """oneDNN's layout: the weights, and the batches the network sees, are channels-last."""
    from gknet.training.loop import Trainer

    items = random_items(2)
    cfg = Config(model=tiny_config(), train=TrainConfig(image_size=16, batch_size=2, max_steps=1, threads=1))
    trainer = Trainer(cfg, tmp_path / "run", datasets=(ItemList(items), ItemList(items)))
    convs = [p for p in trainer.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    seen = []
    trainer.model.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    trainer._train_step({k: torch.stack([it[k] for it in items]) for k in items[0]})
    assert seen[0].is_contiguous(memory_format=torch.channels_last)


def test_epoch_batches_shard_each_global_batch_deterministically():
    whole = epoch_batches(23, 6, seed=3, epoch=1)
    assert len(whole) == 3 and all(len(b) == 6 for b in whole)  # remainder of 23 // 6 dropped
    flat = [i for b in whole for i in b]
    assert len(set(flat)) == 18 and set(flat) <= set(range(23))
    assert whole == epoch_batches(23, 6, seed=3, epoch=1)
    assert whole != epoch_batches(23, 6, seed=3, epoch=2)
    assert whole != epoch_batches(23, 6, seed=4, epoch=1)
    ranks = [epoch_batches(23, 6, seed=3, epoch=1, rank=r, world=3) for r in range(3)]
    for step, batch in enumerate(whole):
        assert [i for shards in ranks for i in shards[step]] == batch
        assert all(len(shards[step]) == 2 for shards in ranks)


def test_lr_factor_warmup_then_cosine():
    assert lr_factor(0, 100, 10, "constant") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "constant") == pytest.approx(1.0)
    assert lr_factor(50, 100, 10, "constant") == 1.0
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(500, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_rng_states_round_trip():
    import random

    states = rng_states()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_states(states)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_folder_datasets_split_and_items(tmp_path):
    root = write_triplet_folder(tmp_path / "data", count=16, size=40)
    cfg = tiny_train_config(root)
    fit, val = build_datasets(cfg.data, cfg.train)
    fit_names = {fit[i]["name"] for i in range(len(fit))}
    val_names = {val[i]["name"] for i in range(len(val))}
    assert fit_names.isdisjoint(val_names) and len(fit_names | val_names) == 16 and val_names
    # the one split rule of every source (gknet.data.split), as for the synthetic photos
    held_out = {n for n in fit_names | val_names if is_validation(n, cfg.data.seed, cfg.data.val_fraction)}
    assert val_names == held_out
    item = fit[0]
    assert item["composite"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    # Training items are a function of (seed, epoch, index); validation items never change.
    epoch0 = [fit[i]["composite"] for i in range(len(fit))]
    fit.set_epoch(1)
    assert any(not torch.equal(fit[i]["composite"], epoch0[i]) for i in range(len(fit)))
    fit.set_epoch(0)
    assert all(torch.equal(fit[i]["composite"], epoch0[i]) for i in range(len(fit)))
    with Image.open(root / "targets" / f"{Path(val[0]['name']).stem}.png") as img:
        target = np.asarray(img.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255
    assert torch.allclose(val[0]["target"], torch.from_numpy(target).permute(2, 0, 1), atol=1e-6)


def test_train_writes_logs_checkpoints_and_exports(tmp_path):
    root = write_triplet_folder(tmp_path / "data", count=12, size=40)
    cfg = tiny_train_config(root, max_steps=7, log_every=2, val_every=3, ckpt_every=3)
    out = tmp_path / "run"
    result = train(cfg, out, config_name="tiny")
    ckpt = out / "ckpt"
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["best.pt", "last.pt", "step_0000003.pt", "step_0000006.pt"]
    assert load_state(ckpt / "last.pt")["step"] == 7
    train_records, val_records = read_log(out / "log.jsonl")
    assert [r["step"] for r in train_records] == [2, 4, 6, 7]
    assert [r["step"] for r in val_records] == [3, 6, 7]
    assert set(train_records[0]) == {"step", "epoch", "loss", "lr", "img_per_s", "time"}
    best = min(val_records, key=lambda r: r["val"]["fmse"])
    assert load_state(ckpt / "best.pt")["step"] == best["step"]
    assert result["best_score"] == pytest.approx(best["val"]["fmse"]) and result["select_on"] == "val.fmse"
    assert result["val"] == val_records[-1]["val"]

    # Validation numbers are the evaluator's metrics of the saved model on the validation split.
    from gknet.evaluation.metrics import image_metrics

    _, val_set = build_datasets(cfg.data, cfg.train)
    model = build_model(cfg.model)
    model.load_state_dict(load_state(ckpt / "last.pt")["model"])
    model.eval()
    items = [val_set[i] for i in range(len(val_set))]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("composite", "mask", "target")}
    with torch.no_grad():
        pred = model(batch["composite"], batch["mask"])
    metrics = image_metrics(pred * 255, batch["target"] * 255, batch["mask"])
    assert result["val"]["fmse"] == pytest.approx(float(metrics["fmse"].mean()), rel=1e-5)

    assert cli_main(["export", str(ckpt / "best.pt"), "-o", str(tmp_path / "model.safetensors")]) == 0
    released, model_cfg, meta = load_release(tmp_path / "model.safetensors")
    assert model_cfg == cfg.model and meta["step"] == best["step"] and meta["config_name"] == "tiny"
    best_weights = load_state(ckpt / "best.pt")["model"]
    assert all(torch.equal(v, best_weights[k]) for k, v in released.state_dict().items())
    assert inference_config(tmp_path / "model.safetensors").train_size == cfg.train.image_size

    assert cli_main(["plot-log", str(out / "log.jsonl"), "-o", str(tmp_path / "curves.png")]) == 0
    with Image.open(tmp_path / "curves.png") as png:
        assert png.format == "PNG" and png.width > 500


def test_cli_refuses_to_overwrite_a_run_and_bad_settings(tmp_path, capsys):
    root = write_triplet_folder(tmp_path / "data", count=12, size=40)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {widths: [8, 16], lre_heads: 2, scf_groups: 4, kpb_levels: 2}\n"
        f"train: {{image_size: 32, batch_size: 2, max_steps: 2, threads: 1}}\n"
        f"data: {{source: folder, root: '{root}', val_fraction: 0.25}}\n"
    )
    out = str(tmp_path / "run")

    def train_cli(*extra: str) -> int:
        return cli_main(["train", "--config", str(config), *extra])

    assert train_cli("--out", out, "--device", "cpu") == 0
    capsys.readouterr()
    assert train_cli("--out", out) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert train_cli("--out", out + "2", "--precision", "fp16", "--device", "cpu") == 2
    assert "CUDA" in capsys.readouterr().err
    assert train_cli("--out", out + "3", "--set", "train.batch_size=40") == 2
    assert "fewer than train.batch_size" in capsys.readouterr().err
    assert train_cli("--set", "train.nope=1") == 2
    assert cli_main(["export", str(config), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err


def test_ema_and_cli_entry_point(tmp_path):
    assert ema([4.0, 4.0, 4.0], 0.9) == pytest.approx([4.0, 4.0, 4.0])
    assert ema([0.0, 1.0], 0.5) == pytest.approx([0.0, 0.5 / 0.75])
    proc = subprocess.run([GKNET, "train", "--help"], capture_output=True, text=True, check=True)
    assert "--resume" in proc.stdout and "torchrun" in proc.stdout


def test_init_weights_fine_tunes_from_a_release(tmp_path, monkeypatch):
    from dataclasses import replace

    from gknet.errors import GknetError
    from gknet.inference.release import save_release

    root = write_triplet_folder(tmp_path / "data", count=12, size=40)
    cfg = tiny_train_config(root, max_steps=1, lr=0.0)
    torch.manual_seed(123)  # weights no seed-0 initialisation would produce
    source = build_model(cfg.model)
    release = save_release(source, cfg.model, tmp_path / "start.safetensors")
    ship_weights(monkeypatch, tmp_path / "shipped", release)

    for weights in (str(release), "default"):
        tuned = replace(cfg, train=replace(cfg.train, init_weights=weights))
        out = tmp_path / f"run_{weights.replace('/', '_')}"
        train(tuned, out)
        trained = load_state(out / "ckpt" / "last.pt")["model"]
        # lr 0: every parameter is still the release's (BatchNorm running statistics move)
        for name, value in source.state_dict().items():
            if "running" not in name and "num_batches" not in name:
                assert torch.equal(trained[name], value), name
    scratch = tmp_path / "scratch"
    train(cfg, scratch)
    weights = load_state(scratch / "ckpt" / "last.pt")["model"]
    assert not torch.equal(weights["head.weight"], source.state_dict()["head.weight"])

    other = replace(cfg, model=replace(cfg.model, kernel_size=5))
    with pytest.raises(GknetError, match="another architecture"):
        train(replace(other, train=replace(other.train, init_weights=str(release))), tmp_path / "bad")


def test_init_weights_may_switch_between_batch_and_group_norm(tmp_path):
    from dataclasses import replace

    from gknet.errors import GknetError
    from gknet.inference.release import save_release

    root = write_triplet_folder(tmp_path / "data", count=12, size=40)
    cfg = tiny_train_config(root, model_overrides={"norm": "batch"}, max_steps=1, lr=0.0)
    torch.manual_seed(7)
    source = build_model(cfg.model)
    with torch.no_grad():  # affine parameters no fresh layer would have
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    release = save_release(source, cfg.model, tmp_path / "bn.safetensors")
    group = replace(cfg, model=replace(cfg.model, norm="group"))
    train(replace(group, train=replace(group.train, init_weights=str(release))), tmp_path / "gn")
    trained = load_state(tmp_path / "gn" / "ckpt" / "last.pt")["model"]
    kept = {k: v for k, v in source.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert set(trained) == set(kept)  # group norm has no running statistics
    for name, value in kept.items():  # lr 0: convolutions and affine parameters carried over
        assert torch.equal(trained[name], value), name

    plain = replace(cfg, model=replace(cfg.model, norm="none"))
    with pytest.raises(GknetError, match="batch <-> group norm"):
        train(replace(plain, train=replace(plain.train, init_weights=str(release))), tmp_path / "bad")


def test_real_validation_selects_the_best_checkpoint(tmp_path):
    import dataclasses

    from gknet.data.iharmony4 import IHarmony4
    from gknet.evaluation.protocol import evaluate
    from gknet.training.validation import RealValidation

    real = write_iharmony4_tree(tmp_path / "real", {"HFlickr": 3, "Hday2night": 2})
    root = write_triplet_folder(tmp_path / "data", count=12, size=40)
    # real validation scores at the protocol's 256 px: five levels keep the LRE to 16x16 tokens
    deep = {"widths": (4, 8, 8, 8, 16)}
    cfg = tiny_train_config(root, deep, max_steps=6, val_every=2, ckpt_every=3)
    data = dataclasses.replace(cfg.data, real_val=str(real), real_val_subsets=("HFlickr", "Hday2night"))
    cfg = dataclasses.replace(cfg, data=data)
    result = train(cfg, tmp_path / "run")
    _, val_records = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in val_records] == [2, 4, 6]
    for record in val_records:
        assert set(record["real_val"]) == {"HFlickr", "Hday2night", "score"}
        ratios = [record["real_val"][s]["fmse_ratio"] for s in ("HFlickr", "Hday2night")]
        assert record["real_val"]["score"] == pytest.approx(sum(ratios) / 2)
    best = min(val_records, key=lambda r: r["real_val"]["score"])
    best_state = load_state(tmp_path / "run" / "ckpt" / "best.pt")
    assert best_state["step"] == best["step"] and best_state["select_on"] == "real_val.score"
    assert result["best_score"] == pytest.approx(best["real_val"]["score"])

    # The training-time numbers are the evaluator's, per subset, for the same model.
    model = build_model(cfg.model)
    model.load_state_dict(best_state["model"])
    model.eval()
    scored = RealValidation(real, ("HFlickr", "Hday2night"), size=32)(model, torch.device("cpu"))
    run = evaluate(model, IHarmony4(real, ["HFlickr", "Hday2night"]), "m", size=32, progress=False)
    for subset in ("HFlickr", "Hday2night"):
        rows = [r for r in run.rows if r["subset"] == subset]
        for key in ("fmse", "mse", "psnr", "composite_fmse"):
            assert scored[subset][key] == pytest.approx(np.mean([r[key] for r in rows]), rel=1e-5), key
