"""ONNX export of a GKNet and an ONNX Runtime model with the torch model's call signature.

    export_onnx(model, "gknet.onnx", settings)      # what `gknet export --onnx` writes
    Harmonizer.from_pretrained("gknet.onnx")        # runs it with ONNX Runtime

The graph takes ``composite`` [B, 3, H, W] and ``mask`` [B, 1, H, W] (float32 in [0, 1])
and returns ``harmonized`` [B, 3, H, W]; batch, height and width are dynamic. The input
normalisation is part of the graph (the model's own); the model config and the release's
inference settings (network resolution, full-resolution transfer) travel in the file's
metadata, so an export runs like the release it came from. It is traced
with the torch.export-based exporter (``dynamo=True``: the TorchScript exporter cannot
export adaptive pooling of a dynamic-size input); while exporting, the kernel modulation
(:mod:`gknet.models.ops`) and SCF's pooling take their plain-op forms.

Needs the optional extra ``pip install 'gknet[onnx]'`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import tempfile
import warnings
from pathlib import Path

import torch

from gknet.config import ConfigError, InferenceConfig, ModelConfig, from_dict, to_dict
from gknet.errors import GknetError
from gknet.io.atomic import atomic_path

INPUTS = ("composite", "mask")
OUTPUT = "harmonized"
# metadata keys of an export: JSON of the ModelConfig and InferenceConfig, and the release's name
META_MODEL, META_INFERENCE, META_NAME = "gknet.model", "gknet.inference", "gknet.name"
OPSET = 18
EXAMPLE_SIZE = 64  # traced example (batch 2, not 1: torch.export specialises sizes 0 and 1)


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise GknetError(f"{module} is not installed: pip install 'gknet[onnx]'") from None


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs a warning per missing torchvision op, warns about shared axis names and
    prints its progress: hide all three."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(
    model: torch.nn.Module,
    path: str | Path | None = None,
    settings: InferenceConfig | None = None,
    name: str = "model",
) -> bytes | Path:
    """Export ``model`` (a GKNet) to ONNX: written atomically to ``path``, or returned as bytes.

    ``settings``: the release's inference settings stored with it (default: the standard
    ones with the model's normalisation); a normalisation other than the model's is an error.
    """
    for module in ("onnx", "onnxscript"):
        _require(module)
    from torch.export import Dim

    settings = settings or InferenceConfig(normalization=model.normalization)
    if settings.normalization != model.normalization:
        raise GknetError("the inference settings' normalization differs from the model's")
    model = model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(0)  # leaves the global random state alone
    composite = torch.rand(2, 3, EXAMPLE_SIZE, EXAMPLE_SIZE, device=device, generator=generator)
    mask = torch.zeros(2, 1, EXAMPLE_SIZE, EXAMPLE_SIZE, device=device)
    mask[..., EXAMPLE_SIZE // 4 : EXAMPLE_SIZE // 2, :] = 1
    dims = {0: Dim("batch"), 2: Dim("height"), 3: Dim("width")}
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            model,
            (composite, mask),
            dynamo=True,
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_shapes={"composite": dims, "mask": dims},
            opset_version=OPSET,
            verbose=False,
        )
    program.model.metadata_props.update(
        {
            META_MODEL: json.dumps(to_dict(model.cfg)),
            META_INFERENCE: json.dumps(to_dict(settings)),
            META_NAME: name,
        }
    )
    if path is None:
        with tempfile.TemporaryDirectory() as tmp:
            program.save(Path(tmp) / "model.onnx", external_data=False)
            return (Path(tmp) / "model.onnx").read_bytes()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            program.save(tmp, external_data=False)
    except OSError as exc:
        raise GknetError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


class OnnxRuntimeModel(torch.nn.Module):
    """An exported GKNet run by ONNX Runtime; ``model(composite, mask)`` like the torch model.

    ``source``: an .onnx file or its bytes. ``device``: ``cpu``, ``cuda[:N]`` (needs
    onnxruntime-gpu) or ``auto`` (CUDA where both torch and onnxruntime have it). Uses torch's
    number of CPU threads. ``cfg``, ``settings`` and ``name`` are the model config, inference
    settings and release name stored in the export.
    """

    def __init__(self, source: str | Path | bytes, device: torch.device | str = "cpu"):
        super().__init__()
        from gknet.runtime.device import resolve_device

        ort = _require("onnxruntime")
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if str(device) == "auto":  # CUDA only where both torch and onnxruntime have it
            device = "cuda" if has_cuda and torch.cuda.is_available() else "cpu"
        device = device if isinstance(device, torch.device) else resolve_device(str(device))
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if not has_cuda:
                raise GknetError("this onnxruntime has no CUDA provider: use --device cpu or onnxruntime-gpu")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        name = "the exported model" if isinstance(source, bytes) else str(source)
        if not isinstance(source, bytes):
            source = Path(source)
            if not source.is_file():
                raise GknetError(f"ONNX model not found: {source}")
            source = str(source)
        try:
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise GknetError(f"cannot load ONNX model {name}: {str(exc).strip().splitlines()[0]}") from None
        found = tuple(i.name for i in self.session.get_inputs())
        if found != INPUTS:
            raise GknetError(f"{name} is not a gknet ONNX export: inputs {found}, expected {INPUTS}")
        self.cfg, self.settings, self.name = _stored_settings(self.session, name)
        self.device = device

    def forward(self, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        feed = {
            name: tensor.detach().to("cpu", torch.float32).contiguous().numpy()
            for name, tensor in zip(INPUTS, (composite, mask), strict=True)
        }
        (out,) = self.session.run([OUTPUT], feed)
        return torch.from_numpy(out).to(composite.device)


def _stored_settings(session, name: str) -> tuple[ModelConfig, InferenceConfig, str]:
    """(model config, inference settings, release name) from an export's metadata."""
    meta = session.get_modelmeta().custom_metadata_map
    if META_MODEL not in meta or META_INFERENCE not in meta:
        raise GknetError(f"{name} has no gknet settings in its metadata: export it with gknet export --onnx")
    try:
        cfg = from_dict(ModelConfig, json.loads(meta[META_MODEL]), where=f"{name}:{META_MODEL}")
        inference = json.loads(meta[META_INFERENCE])
        settings = from_dict(InferenceConfig, inference, where=f"{name}:{META_INFERENCE}")
    except (ConfigError, json.JSONDecodeError, RecursionError) as exc:
        raise GknetError(f"invalid settings in {name}: {exc}") from None
    return cfg, settings, meta.get(META_NAME) or "model"
