"""Release weights: safetensors tensors + a JSON file that describes them.

``save_release(model, cfg, "m.safetensors")`` writes ``m.safetensors`` and ``m.json``. The
JSON carries the model config, the inference settings (network resolution, input
normalisation, full-resolution transfer parameters, training size; see
:class:`gknet.config.InferenceConfig`) and free metadata, so a release file is all a user
needs. ``load_release`` rebuilds the model from the JSON and loads the tensors strictly,
turning every failure into one clear GknetError. Both refuse tensors holding NaN or
infinity (the weights of a diverged run), which would only produce black images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gknet.config import ConfigError, InferenceConfig, ModelConfig, from_dict, to_dict
from gknet.errors import GknetError
from gknet.io.atomic import atomic_path, write_atomic

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = ("gknet_small",)  # release files in WEIGHTS_DIR, by name
DEFAULT_NAME = "gknet_small"
FORMAT = "gknet-release-1"


def weights_path(name_or_path: str | Path) -> Path:
    """The release file for a shipped name (``"default"`` = ``DEFAULT_NAME``) or a path.

    A shipped name whose file is missing from the installation is an error.
    """
    name = DEFAULT_NAME if str(name_or_path) == "default" else str(name_or_path)
    if name not in SHIPPED:
        return Path(name_or_path)
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise GknetError(
            f"the shipped weights {name!r} are missing from this installation ({path}); "
            "reinstall gknet or pass the path of a release file"
        )
    return path


def release_files(name_or_path: str | Path) -> tuple[Path, ...]:
    """The files a release is read from (weights, JSON; an .onnx export alone): the inputs that a
    command loading it must never write over. Empty for a shipped name that is not installed."""
    try:
        path = weights_path(name_or_path)
    except GknetError:
        return ()
    return (path,) if path.suffix.lower() == ".onnx" else (path, path.with_suffix(".json"))


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """GknetError naming the first tensor that holds NaN or infinity."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise GknetError(
                f"{what} holds non-finite values (NaN or infinity) in {name}: the training run diverged; "
                "use an earlier checkpoint or retrain with a lower train.lr"
            )


def save_release(
    model: torch.nn.Module,
    cfg: ModelConfig,
    path: str | Path,
    meta: dict | None = None,
    inference: InferenceConfig | None = None,
) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar atomically.

    ``inference`` defaults to the standard settings with the model's own normalisation; a
    normalisation other than the model's is an error.
    """
    inference = inference or InferenceConfig(normalization=model.normalization)
    if inference.normalization != model.normalization:
        raise GknetError("the inference settings' normalization differs from the model's")
    path = Path(path).with_suffix(".safetensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_finite(tensors, "the model")
    info = {"format": FORMAT, "model": to_dict(cfg), "inference": to_dict(inference), "meta": meta or {}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata={"format": FORMAT})
        write_atomic(path.with_suffix(".json"), json.dumps(info, indent=2))
    except OSError as exc:
        raise GknetError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _check_size(cfg: ModelConfig, path: Path) -> None:
    """Refuse a config whose tensors the file cannot hold, before allocating them (a hostile or
    broken .json could ask for hundreds of GB)."""
    from gknet.models.memory import state_bytes

    needed = state_bytes(cfg)
    size = path.stat().st_size
    if needed > size:
        raise GknetError(
            f"weights {path} do not match their config: the config needs {needed / 1e6:,.1f} MB of "
            f"tensors, the file holds {size / 1e6:,.1f} MB"
        )


def read_release_info(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a release file (format, model config, inference settings, metadata)."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not path.is_file():
        bare = path.parent == Path(".") and not path.suffix  # looks like a name, not a path
        hint = f" (shipped names: {', '.join(SHIPPED)})" if bare else ""
        raise GknetError(f"weights file not found: {path}{hint}")
    if not sidecar.is_file():
        raise GknetError(f"config file missing next to the weights: {sidecar}")
    try:
        info = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GknetError(f"{sidecar} is not valid JSON: {exc}") from None
    except RecursionError:
        raise GknetError(f"{sidecar} is not valid JSON: nested too deeply") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or "model" not in info:
        raise GknetError(f"{sidecar} is not a gknet release config (expected format {FORMAT!r})")
    return info


def shipped_releases() -> list[dict[str, Any]]:
    """One row per shipped name: whether it is the default, its file, training samples and
    real_val fMSE ratios per subset (from its JSON); ``missing`` where not installed."""
    rows = []
    for name in SHIPPED:
        row: dict[str, Any] = {"name": name, "default": name == DEFAULT_NAME}
        try:
            path = weights_path(name)
            info = read_release_info(path)
        except GknetError as exc:
            rows.append({**row, "missing": str(exc)})
            continue
        meta = info.get("meta", {})
        real = meta.get("real_val", {})
        ratios = {k: v["fmse_ratio"] for k, v in real.items() if isinstance(v, dict) and "fmse_ratio" in v}
        samples = meta.get("lineage", {}).get("total_samples")
        rows.append({**row, "file": str(path), "samples": samples, "real_val_fmse_ratio": ratios})
    return rows


def _section(cls: type, info: dict[str, Any], key: str, path: Path) -> Any:
    try:
        return from_dict(cls, info.get(key), where=f"{path.with_suffix('.json').name}:{key}")
    except ConfigError as exc:
        raise GknetError(f"invalid {key} config for {path}: {exc}") from None


def inference_config(path: str | Path) -> InferenceConfig:
    """The inference settings of a release file (the defaults where its JSON has none)."""
    return _section(InferenceConfig, read_release_info(path), "inference", Path(path))


class Release(NamedTuple):
    """Release files loaded: the model in eval mode, its config, inference settings and metadata."""

    model: torch.nn.Module
    cfg: ModelConfig
    settings: InferenceConfig
    meta: dict[str, Any]


def load_release(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelConfig, dict[str, Any]]:
    """Load release weights -> (model in eval mode, ModelConfig, meta dict)."""
    model, cfg, _, meta = read_release(path, map_location)
    return model, cfg, meta


def read_release(path: str | Path, map_location: str | torch.device = "cpu") -> Release:
    """Load release weights and everything their JSON says (read once)."""
    from gknet.models import build_model

    path = Path(path)
    info = read_release_info(path)
    cfg = _section(ModelConfig, info, "model", path)
    inference = _section(InferenceConfig, info, "inference", path)
    try:
        tensors = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise GknetError(f"cannot read weights {path}: {exc}") from None
    _check_size(cfg, path)
    check_finite(tensors, f"weights {path}")
    model = build_model(cfg, inference.normalization, pretrained=False)  # the file holds every tensor
    expected = model.state_dict()
    for name, tensor in tensors.items():  # load_state_dict would cast integers silently
        if name in expected and tensor.dtype != expected[name].dtype:
            raise GknetError(
                f"weights {path} do not match their config: {name} is {tensor.dtype}, the model's "
                f"is {expected[name].dtype}"
            )
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise GknetError(f"weights {path} do not match their config: {first}") from None
    if missing or unexpected:
        raise GknetError(
            f"weights {path} do not match their config: missing {len(missing)} tensors "
            f"({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}), unexpected {len(unexpected)} "
            f"({', '.join(unexpected[:3])}{'...' if len(unexpected) > 3 else ''})"
        )
    return Release(model.to(map_location).eval(), cfg, inference, info.get("meta", {}))
