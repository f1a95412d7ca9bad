"""Training loop: one process on CPU/GPU, or DDP when launched by ``torchrun``.

Reproducibility contract: the model is initialised from ``train.seed``; the order of the
training items in epoch ``e`` is a fixed permutation drawn from ``(train.seed, e)``; each
item depends only on ``(data.seed, e, index)`` (``set_epoch``); DataLoaders use private
generators, so the global RNGs are touched only by the model itself. A checkpoint stores
the epoch and how many of its batches were consumed, so a resumed run skips exactly the
batches already seen and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from gknet.config import Config, to_dict
from gknet.errors import GknetError
from gknet.io.atomic import publish_copy, remove_stale_temporaries, write_atomic
from gknet.models.losses import fn_mse_loss
from gknet.runtime.device import resolve_device
from gknet.runtime.shard import local_rank
from gknet.training.distributed import epoch_batches, init_distributed
from gknet.training.ema import WeightAverage
from gknet.training.log import RunLog
from gknet.training.precision import resolve_precision
from gknet.training.state import load_state, restore_rng_states, rng_states, save_state, selection
from gknet.training.validation import is_better, to_device, validate

# train.init_weights may change model.norm between these (their layers share weight and bias)
NORMS_WITH_AFFINE = {"batch", "group"}
BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def lr_factor(step: int, total_steps: int, warmup: int, schedule: str) -> float:
    """Base-lr multiplier for optimiser step ``step`` (0-based): linear warmup, then constant or cosine."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def _loader(dataset: Dataset, workers: int, pin: bool, seed: int, **kwargs) -> DataLoader:
    # A private generator: building an iterator must not draw from torch's global RNG.
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, num_workers=workers, pin_memory=pin, generator=gen, **kwargs)


def _resume_path(resume: str | Path | None, out_dir: Path) -> Path | None:
    last = out_dir / "ckpt" / "last.pt"
    if resume is None:
        if last.exists():
            raise GknetError(f"{out_dir} already holds a run ({last}); pass --resume auto or another --out")
        return None
    if str(resume) == "auto":
        return last if last.exists() else None
    return Path(resume)


def train(
    cfg: Config,
    out_dir: str | Path,
    resume: str | Path | None = None,
    device: str = "auto",
    config_name: str | None = None,
    datasets: tuple[Dataset, Dataset] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir`` and return the final metrics.

    resume: a checkpoint path, ``"auto"`` (``out_dir/ckpt/last.pt`` if present) or None.
    datasets: (train, validation) datasets yielding gknet items; default: built from cfg.data.
    ``train.threads`` (when set) holds for the run; the previous thread count is restored after.
    Returns ``{"step", "epoch", "stopped", "loss", "val", "real_val", "best_score", "select_on"}``.
    """
    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        trainer = Trainer(cfg, Path(out_dir), device, config_name, datasets)
        path = _resume_path(resume, trainer.out_dir)
        if path is not None:
            trainer.restore(path)
        else:
            if resume is not None and trainer.dist.main:
                tqdm.write(f"no checkpoint in {trainer.out_dir / 'ckpt'}: starting a new run")
            if cfg.train.init_weights:
                trainer.init_from(cfg.train.init_weights)
        return trainer.run()
    finally:
        torch.set_num_threads(threads)


class Trainer:
    """One training run: built from a config by the constructor, then optionally :meth:`restore`d
    from a checkpoint or initialised from release weights (:meth:`init_from`), then :meth:`run`."""

    def __init__(
        self,
        cfg: Config,
        out_dir: Path,
        device: str = "auto",
        config_name: str | None = None,
        datasets: tuple[Dataset, Dataset] | None = None,
    ):
        from gknet.models import build_model
        from gknet.models.semantic import parameter_groups
        from gknet.training.data import build_datasets
        from gknet.training.validation import RealValidation

        self.cfg, self.out_dir, self.config_name = cfg, out_dir, config_name
        tc = cfg.train
        self.device = resolve_device(device, local_rank())
        self.dist = init_distributed(self.device)
        self.precision = resolve_precision(tc.precision, self.device)
        if tc.batch_size % self.dist.world:
            raise GknetError(
                f"train.batch_size={tc.batch_size} is not divisible by the world size {self.dist.world}"
            )
        self.per_rank_batch = tc.batch_size // self.dist.world

        self.train_set, self.val_set = datasets if datasets is not None else build_datasets(cfg.data, tc)
        if len(self.train_set) < tc.batch_size:
            raise GknetError(
                f"{len(self.train_set)} training items, fewer than train.batch_size={tc.batch_size}"
            )
        self.steps_per_epoch = len(self.train_set) // tc.batch_size
        budget = tc.epochs * self.steps_per_epoch
        self.total_steps = min(budget, tc.max_steps) if tc.max_steps else budget
        if tc.schedule == "cosine" and tc.max_minutes and not tc.max_steps and self.dist.main:
            tqdm.write(
                f"warning: the cosine schedule spans {self.total_steps} steps (train.epochs); with a "
                "max_minutes budget set train.max_steps to the steps that fit, or the lr never decays"
            )

        torch.manual_seed(tc.seed)
        np.random.seed(tc.seed)
        self.model = build_model(cfg.model).to(self.device)
        # oneDNN's convolutions run in channels-last layout: on the CPU the network and its inputs
        # are converted to it (gknet_small, 128 px, 2 threads: steps 1.12x faster in fp32, 1.25x
        # in bf16). Checkpoints and exports hold the same values whatever the layout.
        self.layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model.to(memory_format=self.layout)
        if self.dist.world > 1 and self.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        # The fused Adam updates every parameter in one kernel (gknet_small on 2 CPU threads: 1.7
        # against 7.1 ms a step for the loop); on the CPU torch has it from 2.4.
        fused = self.device.type == "cuda" or (self.device.type == "cpu" and torch.__version__ >= "2.4")
        self.optimizer = torch.optim.Adam(
            parameter_groups(self.model, tc.lr),
            lr=tc.lr,
            betas=tc.betas,
            eps=tc.eps,
            weight_decay=tc.weight_decay,
            fused=fused or None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, tc.warmup_steps, tc.schedule)
        )
        self.scaler = self.precision.scaler()
        # A running average of the weights, validated and exported instead of them.
        self.ema = WeightAverage(self.model, tc.ema_decay) if tc.ema_decay else None
        self.net = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        # The best checkpoint has the lowest score: the real composites' mean fMSE ratio when
        # data.real_val is set, else the synthetic validation fMSE.
        self.real_val = None
        if cfg.data.real_val and self.dist.main:
            self.real_val = RealValidation(Path(cfg.data.real_val).expanduser(), cfg.data.real_val_subsets)
        self.select_on = "real_val.score" if cfg.data.real_val else "val.fmse"
        self.pin = self.device.type == "cuda"
        self.val_loader = _loader(
            self.val_set, cfg.data.workers, self.pin, tc.seed, batch_size=self.per_rank_batch, shuffle=False
        )

        # Progress: where the run stands (restored by `restore`), and this process's timing.
        self.epoch = self.batch_in_epoch = self.step = 0
        self.best_score: float | None = None
        self.last_val: dict[str, float] | None = None
        self.last_real: dict | None = None
        self.resumed = False
        self.elapsed_before = 0.0
        self.started = time.monotonic()
        self.window_start = self.started  # start of the current img/s window
        self.saved_step = self.validated_step = -1
        self.log: RunLog | None = None
        self.bar: tqdm | None = None

    # -- starting points ------------------------------------------------------------------
    def init_from(self, weights: str) -> None:
        """Start from release weights (``train.init_weights``); batch <-> group norm may change,
        and a semantic encoder may be added to a release without one (its projections start at
        zero, so the model starts out computing what the release computes)."""
        from gknet.inference.release import load_release, weights_path

        source = weights_path(weights)
        released, model_cfg, _ = load_release(source)
        cfg = self.cfg.model
        old, new = model_cfg.norm, cfg.norm
        adds_semantic = model_cfg.semantic == "none" != cfg.semantic
        if adds_semantic:
            fields = ("semantic", "semantic_levels", "semantic_mask", "semantic_lr")
            model_cfg = replace(model_cfg, **{name: getattr(cfg, name) for name in fields})
        if replace(model_cfg, norm=new) != cfg or (old != new and {old, new} - NORMS_WITH_AFFINE):
            raise GknetError(
                f"train.init_weights {source} holds another architecture than the config's model "
                "section; fine-tuning needs the same model settings, except batch <-> group norm "
                "and an added semantic encoder (see its .json)"
            )
        weights = released.state_dict()
        if old != new:
            # Batch and group norm layers share their affine parameters; BatchNorm's running
            # statistics have no counterpart (dropped, or started fresh).
            weights = {k: v for k, v in weights.items() if not k.endswith(BN_STATISTICS)}
        if adds_semantic:  # the encoder keeps the weights it was built with
            weights.update((k, v) for k, v in self.model.state_dict().items() if k.startswith("semantic."))
        missing, unexpected = self.model.load_state_dict(weights, strict=old == new)
        if unexpected or not all(k.endswith(BN_STATISTICS) for k in missing):
            raise GknetError(f"train.init_weights {source} does not fit the model: {missing + unexpected}")
        if self.ema is not None:
            self.ema = WeightAverage(self.model, self.cfg.train.ema_decay)  # average from these weights
        if self.dist.main:
            change = f" ({old} norm -> {new} norm)" if old != new else ""
            tqdm.write(f"initialised from {source}{change}")

    def restore(self, path: Path) -> None:
        """Continue the run stored in checkpoint ``path`` exactly where it stopped."""
        state = load_state(path, map_location=self.device)
        if state["config"]["model"] != to_dict(self.cfg)["model"]:
            raise GknetError(f"{path} was trained with a different model config; resume with its config")
        select_on, best_score = selection(state)
        if select_on != self.select_on:
            raise GknetError(
                f"{path} chose its best checkpoint by {select_on}, this config by "
                f"{self.select_on}; resume with the same data.real_val setting"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] or not self.scaler.is_enabled():  # empty: saved by a run without fp16
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        elif self.ema is not None:
            self.ema = WeightAverage(self.model, self.cfg.train.ema_decay)  # the run kept none so far
        restore_rng_states(state["rng"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.best_score = best_score
        self.last_val, self.last_real = state["val"], state.get("real_val")
        self.elapsed_before = state["elapsed"]
        self.saved_step = self.validated_step = self.step
        self.resumed = True
        if self.dist.main:
            where = f"step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})"
            tqdm.write(f"resumed from {path} at {where}")

    # -- state -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best_score": self.best_score,
            "select_on": self.select_on,
            "val": self.last_val,
            "real_val": self.last_real,
            "elapsed": self._elapsed(),
            "config": to_dict(self.cfg),
            "config_name": self.config_name,
        }

    def _elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def _prepare_run_folder(self) -> None:
        if self.dist.main:
            (self.out_dir / "ckpt").mkdir(parents=True, exist_ok=True)
            # Temporaries of a run killed mid-write (ours alone write here); the run continues.
            remove_stale_temporaries(self.out_dir / "ckpt")
            remove_stale_temporaries(self.out_dir, ["config.yaml", "log.jsonl"])
            write_atomic(self.out_dir / "config.yaml", yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        self.log = RunLog(self.out_dir, self.dist.main, self.step if self.resumed else None)

    def _checkpoint(self, periodic: bool) -> None:
        paused = time.monotonic()
        self.dist.barrier()
        if self.dist.main:
            ckpt = self.out_dir / "ckpt"
            last = ckpt / "last.pt"
            if periodic:
                step_path = save_state(self._state(), ckpt / f"step_{self.step:07d}.pt")
                publish_copy(step_path, last)
            else:
                save_state(self._state(), last)
        self.dist.barrier()
        self.saved_step = self.step
        self.window_start += time.monotonic() - paused  # keep img/s a training-only rate

    def _validate(self) -> None:
        paused = time.monotonic()
        if self.dist.main:
            model = self.ema.model if self.ema is not None else self.model
            self.last_val = validate(model, self.val_loader, self.device)
            record = {"step": self.step, "epoch": self.epoch, "val": self.last_val}
            score = self.last_val["fmse"]
            if self.real_val is not None:
                self.last_real = record["real_val"] = self.real_val(model, self.device)
                score = self.last_real["score"]
            self.log.write(record)
            if not math.isfinite(score):
                tqdm.write(
                    f"warning: validation at step {self.step} is not finite: not kept as best.pt "
                    f"({self.select_on} = {score})"
                )
            if is_better(score, self.best_score):
                self.best_score = score
                save_state(self._state(), self.out_dir / "ckpt" / "best.pt")
        self.dist.barrier()
        self.validated_step = self.step
        self.window_start += time.monotonic() - paused

    # -- loop --------------------------------------------------------------------------
    def _train_step(self, batch: dict) -> torch.Tensor:
        composite, mask, target = to_device(batch, self.device)
        composite, mask = (t.contiguous(memory_format=self.layout) for t in (composite, mask))
        with self.precision.autocast():
            pred = self.net(composite, mask)
        loss = fn_mse_loss(pred.float(), target, mask, self.cfg.train.a_min)
        self._stop_if_diverged(loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach()

    def _stop_if_diverged(self, loss: torch.Tensor) -> None:
        """Stop at the first NaN / infinite loss, before it reaches the weights (all ranks together)."""
        if not self.dist.any(not bool(torch.isfinite(loss.detach())), self.device):
            return
        step, value = self.step + 1, loss.detach().item()
        self.log.write({"step": step, "event": "diverged", "loss": str(value)})
        self.log.close()
        self.bar.close()
        kept = f"ckpt/last.pt holds step {self.saved_step}" if self.saved_step > 0 else "no checkpoint kept"
        raise GknetError(
            f"training diverged: the loss is {value} at step {step} (epoch {self.epoch}); stopped, "
            f"{kept}; lower train.lr ({self.cfg.train.lr:g}) or raise train.warmup_steps"
        )

    def _out_of_time(self) -> bool:
        minutes = self.cfg.train.max_minutes
        # Every rank must stop after the same step.
        return bool(minutes) and self.dist.any(self._elapsed() >= 60 * minutes, self.device)

    def run(self) -> dict[str, Any]:
        """Train until the epochs, ``train.max_steps`` or ``train.max_minutes`` run out."""
        tc = self.cfg.train
        self._prepare_run_folder()
        self.started = self.window_start = time.monotonic()
        stopped = "max_steps" if tc.max_steps and self.step >= tc.max_steps else "epochs"
        loss_sum, window_steps = torch.zeros((), device=self.device), 0
        last_loss = math.nan
        bar = self.bar = tqdm(
            total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not self.dist.main
        )
        self.log.write(
            {
                "step": self.step,
                "event": "start",
                "world_size": self.dist.world,
                "global_batch": self.per_rank_batch * self.dist.world,
                "per_rank_batch": self.per_rank_batch,
            }
        )
        while stopped == "epochs" and self.epoch < tc.epochs:
            if hasattr(self.train_set, "set_epoch"):
                self.train_set.set_epoch(self.epoch)
            batches = epoch_batches(
                len(self.train_set), tc.batch_size, tc.seed, self.epoch, self.dist.rank, self.dist.world
            )
            loader = _loader(
                self.train_set,
                self.cfg.data.workers,
                self.pin,
                tc.seed + self.epoch,
                batch_sampler=batches[self.batch_in_epoch :],
            )
            for batch in loader:
                lr = self.optimizer.param_groups[0]["lr"]
                loss_sum += self._train_step(batch)
                self.step += 1
                self.batch_in_epoch += 1
                window_steps += 1
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == self.total_steps:
                    last_loss, img_per_s = self._log_train(loss_sum, window_steps, lr)
                    bar.set_postfix(self._postfix(last_loss, img_per_s))
                    loss_sum.zero_()
                    window_steps, self.window_start = 0, time.monotonic()
                if tc.val_every and self.step % tc.val_every == 0:
                    self._validate()
                if tc.ckpt_every and self.step % tc.ckpt_every == 0:
                    self._checkpoint(periodic=True)
                if tc.max_steps and self.step >= tc.max_steps:
                    stopped = "max_steps"
                elif self._out_of_time():
                    stopped = "max_minutes"
                if stopped != "epochs":
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
                if not tc.val_every:
                    self._validate()
                if not tc.ckpt_every:
                    self._checkpoint(periodic=True)
        bar.close()
        if self.validated_step != self.step:
            self._validate()
        if self.saved_step != self.step:
            self._checkpoint(periodic=False)
        self.log.write({"step": self.step, "event": "end", "stopped": stopped, "time": self._elapsed()})
        self.log.close()
        self.dist.close()
        return {
            "step": self.step,
            "epoch": self.epoch,
            "stopped": stopped,
            "loss": last_loss,
            "val": self.last_val,
            "real_val": self.last_real,
            "best_score": self.best_score,
            "select_on": self.select_on,
        }

    def _postfix(self, loss: float, img_per_s: float) -> dict[str, str]:
        """Progress-bar fields: loss, speed, and the last validation (synthetic, real ratios)."""
        fields = {"loss": f"{loss:.4g}", "img_s": f"{img_per_s:.1f}"}
        if self.last_val is not None:
            fields["val_fmse"] = f"{self.last_val['fmse']:.0f}"
        if self.last_real is not None:
            fields["real"] = f"{self.last_real['score']:.3f}"
        return fields

    def _log_train(self, loss_sum: torch.Tensor, steps: int, lr: float) -> tuple[float, float]:
        loss = float(self.dist.mean(loss_sum / max(steps, 1)))
        img_per_s = steps * self.cfg.train.batch_size / max(time.monotonic() - self.window_start, 1e-9)
        self.log.write(
            {
                "step": self.step,
                "epoch": self.epoch,
                "loss": loss,
                "lr": lr,
                "img_per_s": img_per_s,
                "time": self._elapsed(),
            }
        )
        return loss, img_per_s
