"""The training log: ``log.jsonl`` records (+ TensorBoard when installed) and their plot.

Records, one JSON object per line:

- training: ``{"step", "epoch", "loss", "lr", "img_per_s", "time"}`` (loss: mean since the
  previous record; time: seconds of training in the run so far, across resumes),
- validation: ``{"step", "epoch", "val": {"mse", "fmse", "psnr"}}``, plus, with ``data.real_val``,
  ``"real_val": {subset: {"n", "mse", "fmse", "psnr", "composite_fmse", "fmse_ratio"}, "score"}``,
- events: ``{"step", "event": "start" | "end" | "diverged", ...}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gknet.errors import GknetError
from gknet.io.atomic import atomic_path, check_writable, remove_stale_temporaries, write_atomic
from gknet.io.plotting import require_matplotlib


class RunLog:
    """Appends records to ``out_dir/log.jsonl`` on rank 0; a no-op on other ranks."""

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int | None):
        self.path = out_dir / "log.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # Drop records a killed run wrote after its last checkpoint: those steps are redone.
            kept = [line for line in self.path.read_text().splitlines() if _record_step(line) <= resume_step]
            write_atomic(self.path, "".join(f"{line}\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tb"))
        except ImportError:
            pass  # TensorBoard is optional

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None and "event" not in record:
            for key, value in _scalars(record).items():
                self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


VAL_KEYS = ("fmse", "psnr")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_real_val(value: Any) -> bool:
    """``{"score": number, subset: {"fmse_ratio": number, ...}, ...}``, as the plot reads it."""
    if not (isinstance(value, dict) and _is_number(value.get("score"))):
        return False
    subsets = [v for k, v in value.items() if k != "score"]
    return all(isinstance(v, dict) and _is_number(v.get("fmse_ratio")) for v in subsets)


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tags of a training or validation record."""
    if "val" not in record:
        return {f"train/{k}": record[k] for k in ("loss", "lr", "img_per_s")}
    tags = {f"val/{k}": v for k, v in record["val"].items()}
    for subset, metrics in (record.get("real_val") or {}).items():
        if subset == "score":
            tags["real_val/score"] = metrics
        else:
            tags.update({f"real_val/{subset}/{k}": v for k, v in metrics.items()})
    return tags


def _record_step(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, RecursionError):
        return math.inf  # a line cut short by a kill


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(training records, validation records) of a log.jsonl, each sorted by step."""
    path = Path(path)
    if not path.is_file():
        raise GknetError(f"log file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise GknetError(f"{path} is not a text log (not UTF-8 at byte {exc.start})") from None
    train, val = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
            raise GknetError(f"{path}:{number} is not a JSON record") from None
        if not isinstance(record, dict) or not _is_number(record.get("step")):
            raise GknetError(f"{path}:{number} is not a training log record (no numeric 'step')")
        if "event" in record:
            continue
        if "val" in record:
            if not (
                isinstance(record["val"], dict) and all(_is_number(record["val"].get(k)) for k in VAL_KEYS)
            ):
                raise GknetError(f"{path}:{number}: 'val' must hold the numbers {', '.join(VAL_KEYS)}")
            if "real_val" in record and not _is_real_val(record["real_val"]):
                raise GknetError(f"{path}:{number}: 'real_val' must hold a 'score' and each subset's ratio")
            val.append(record)
        elif "loss" in record:
            if not _is_number(record["loss"]):
                raise GknetError(f"{path}:{number}: 'loss' must be a number")
            train.append(record)
    if not train and not val:
        raise GknetError(f"{path} holds no training or validation records")
    return sorted(train, key=lambda r: r["step"]), sorted(val, key=lambda r: r["step"])


def ema(values: list[float], factor: float) -> list[float]:
    """Exponential moving average, bias-corrected so the curve starts at the first value."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = factor * avg + (1 - factor) * v
        out.append(avg / (1 - factor**i) if factor else v)
    return out


def plot_training_log(
    log: str | Path, output: str | Path, smooth: float = 0.9, overwrite: bool = False
) -> Path:
    """Training loss (raw + EMA-smoothed), validation fMSE / PSNR and, when logged, the real
    composites' fMSE ratio per subset against the step, as one figure."""
    require_matplotlib("gknet plot-log")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not 0.0 <= smooth < 1.0:
        raise GknetError(f"--smooth must be in [0, 1), got {smooth}")
    output = Path(output)
    if output.exists() and not overwrite:
        raise GknetError(f"output exists: {output} (pass --overwrite to replace it)")
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise GknetError(f"unsupported plot format {output.suffix!r} (use .png, .pdf or .svg)")
    check_writable(output)
    remove_stale_temporaries(output.parent, [output.name])
    train, val = read_log(log)
    real = [r for r in val if r.get("real_val")]
    fig, axes = plt.subplots(1, 4 if real else 3, figsize=(20 if real else 15, 4))
    steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
    axes[0].plot(steps, losses, alpha=0.3, color="tab:blue", label="loss")
    axes[0].plot(steps, ema(losses, smooth), color="tab:blue", label=f"EMA {smooth}")
    axes[0].set(title="training loss (fMSE, Eq. 7)", xlabel="step", yscale="log")
    vsteps = [r["step"] for r in val]
    axes[1].plot(vsteps, [r["val"]["fmse"] for r in val], "o-", color="tab:red")
    axes[1].set(title="validation fMSE (lower is better)", xlabel="step")
    axes[2].plot(vsteps, [r["val"]["psnr"] for r in val], "o-", color="tab:green")
    axes[2].set(title="validation PSNR dB (higher is better)", xlabel="step")
    if real:
        rsteps = [r["step"] for r in real]
        for subset in [k for k in real[-1]["real_val"] if k != "score"]:
            ratios = [r["real_val"].get(subset, {}).get("fmse_ratio", math.nan) for r in real]
            axes[3].plot(rsteps, ratios, "o-", label=subset, alpha=0.7)
        axes[3].plot(rsteps, [r["real_val"]["score"] for r in real], "k-", lw=2, label="mean (selects best)")
        axes[3].axhline(1.0, color="gray", ls="--", lw=1)
        axes[3].set(title="real composites: fMSE / composite's", xlabel="step")
        axes[3].legend(fontsize=8)
    axes[0].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(output) as tmp:
            fig.savefig(tmp, format=fmt, dpi=100)
    finally:
        plt.close(fig)
    return output
