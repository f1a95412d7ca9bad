"""What the benchmarks measure: one function per measurement, run in its own child processes.

Every ``job_*`` takes the :class:`~benchmarks.measure.Plan` plus its own labels and returns
a dict of numbers (see benchmarks/README.md for what each one means).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.measure import REPO, Plan, measure, measure_steps, time_process
from gknet.config import ModelConfig, load_config
from gknet.errors import GknetError
from gknet.models import build_model
from gknet.models.info import count_macs, count_params
from gknet.models.losses import fn_mse_loss
from gknet.models.ops import kernel_modulation, kernel_modulation_unfold

# name -> (config file, strip GKNet's modules to get the plain U-Net of the same widths)
MODELS = {
    "gknet_small": ("gknet_small.yaml", False),
    "gknet_small_semantic": ("gknet_small_semantic.yaml", False),
    "unet_small": ("ablation_baseline.yaml", False),
    "gknet_paper": ("gknet_paper.yaml", False),
    "unet_paper": ("gknet_paper.yaml", True),
}
OPS = {"kernel_modulation": kernel_modulation, "unfold": kernel_modulation_unfold}
CLI_ENTRY = "import sys; from gknet.cli import main; sys.exit(main())"
STARTUP = "from gknet.cli import build_parser; from gknet import Harmonizer; Harmonizer.from_pretrained()"


def model_config(name: str) -> ModelConfig:
    file, plain = MODELS[name]
    cfg = load_config(REPO / "configs" / file).model
    return replace(cfg, use_kpb=False, use_lre=False, use_scf=False) if plain else cfg


def _inputs(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random composite and a centred square mask covering a quarter of the image."""
    composite = torch.rand(batch, 3, size, size)
    mask = torch.zeros(batch, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return composite, mask


def _prepare(plan: Plan) -> None:
    if plan.threads:
        torch.set_num_threads(plan.threads)
    torch.manual_seed(0)


def _harmonizer():
    """(Harmonizer of the shipped weights, its label)."""
    from gknet.inference.harmonizer import Harmonizer

    return Harmonizer.from_pretrained(), "shipped default"


def _env(plan: Plan) -> dict:
    """Environment of a timed `gknet` process: the plan's thread count, no progress bars."""
    env = dict(os.environ)
    if plan.threads:
        env["OMP_NUM_THREADS"] = str(plan.threads)
    return env


def job_inference(plan: Plan, model: str, size: int) -> dict:
    _prepare(plan)
    net = build_model(model_config(model), pretrained=False).eval()
    macs = count_macs(net, size)  # before the memory window: it runs its own forward pass
    # in the channels-last layout, as the Harmonizer runs a network on the CPU
    net.to(memory_format=torch.channels_last)
    composite, mask = (t.contiguous(memory_format=torch.channels_last) for t in _inputs(1, size))

    def call():
        with torch.no_grad():
            net(composite, mask)

    return {"params": count_params(net)["total"], "gmacs": macs / 1e9, **measure(call, plan)}


def _interleaved(calls: dict, rounds: int, loops: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each of ``calls``, taken in turns (one sample of each per round, a
    sample being ``loops`` calls), so that a change in the machine's load hits all alike."""
    for call in calls.values():
        call()  # warm-up
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(loops):
                call()
            samples[name].append((time.perf_counter() - t0) / loops)
    return samples


def job_semantic(plan: Plan, composite_path: str | None, mask_path: str | None) -> dict:
    """What the pretrained semantic encoder costs: gknet_small against gknet_small_semantic (random
    weights), the network at 256 px (batch 1) and the Harmonizer on the full-size example, timed
    in turns; ``time_ratio`` is the median over the rounds of (with encoder / without)."""
    from gknet.inference.harmonizer import Harmonizer
    from gknet.io.images import load_mask, load_rgb

    _prepare(plan)
    names = ("gknet_small", "gknet_small_semantic")
    harmonizers = {n: Harmonizer(build_model(model_config(n), pretrained=False), device="cpu") for n in names}
    composite, mask = _inputs(1, 256)
    rows = []
    for name, harmonizer in harmonizers.items():
        counts = count_params(harmonizer.model)
        macs = count_macs(harmonizer.model, 256) / 1e9
        rows.append(
            {"model": name, "params": counts["total"], "trainable": counts["trainable"], "gmacs_256": macs}
        )
    items = {"network_256": {n: (lambda h=h: h.model(composite, mask)) for n, h in harmonizers.items()}}
    if composite_path:
        image, alpha = load_rgb(composite_path), load_mask(mask_path)
        items["fullres"] = {n: (lambda h=h: h(image, alpha)) for n, h in harmonizers.items()}
    out: dict = {"models": rows, "rounds": plan.repeats}
    with torch.no_grad():
        for item, calls in items.items():
            samples = _interleaved(calls, plan.repeats, loops=5 if item == "network_256" else 1)
            for row in rows:
                row[f"{item}_s"] = statistics.median(samples[row["model"]])
            ratios = [b / a for a, b in zip(*samples.values(), strict=True)]
            out[f"{item}_time_ratio"] = statistics.median(ratios)
    if composite_path:
        out["megapixels"] = image.size[0] * image.size[1] / 1e6
    return out


def job_training(
    plan: Plan,
    model: str,
    size: int,
    precision: str = "fp32",
    layout: str = "channels-last",
    compiled: bool = False,
) -> dict:
    """One optimisation step as `gknet train` takes it (``train.precision``; the channels-last
    layout, as it trains on the CPU), optionally with the forward pass under ``torch.compile``
    (its compilation timed apart: ``compile_s``)."""
    from gknet.training.precision import resolve_precision

    _prepare(plan)
    memory_format = {"channels-last": torch.channels_last, "contiguous": torch.contiguous_format}[layout]
    net = build_model(model_config(model), pretrained=False).train().to(memory_format=memory_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    composite, mask = (t.contiguous(memory_format=memory_format) for t in _inputs(plan.train_batch, size))
    target = torch.rand_like(composite)
    autocast = resolve_precision(precision, torch.device("cpu")).autocast
    forward = torch.compile(net, dynamic=False) if compiled else net

    def call():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            pred = forward(composite, mask)
        fn_mse_loss(pred.float(), target, mask).backward()
        optimizer.step()

    compile_s = None
    if compiled:
        t0 = time.perf_counter()
        call()
        compile_s = time.perf_counter() - t0
    result = measure(call, plan)
    if compiled:
        result["compile_s"] = compile_s
    if "median_s" in result:  # a time pass
        result["images_per_s"] = plan.train_batch / result["median_s"]
    return result


def job_modulation(plan: Plan, impl: str, size: int, channels: int, backward: bool) -> dict:
    _prepare(plan)
    op, taps = OPS[impl], plan.kernel_size**2
    features = torch.randn(plan.op_batch, channels, size, size, requires_grad=backward)
    kernels = torch.randn(plan.op_batch, channels, taps, size, size, requires_grad=backward)
    grad_out = torch.ones(plan.op_batch, channels, size, size)

    def forward():
        with torch.no_grad():
            op(features, kernels)

    def forward_backward():
        op(features, kernels).backward(grad_out)
        features.grad = kernels.grad = None  # the gradients are part of each call's memory

    return measure(forward_backward if backward else forward, plan)


def job_fullres(plan: Plan, composite_path: str, mask_path: str) -> dict:
    """The Harmonizer call on the full-size example, then each step of a file-to-file run alone."""
    from gknet.io.images import load_mask, load_rgb, save_image_atomic

    _prepare(plan)
    harmonizer, weights = _harmonizer()
    composite, mask = load_rgb(composite_path), load_mask(mask_path)
    result = measure(lambda: harmonizer(composite, mask), plan)
    width, height = composite.size

    def network(tensors):  # the steps of Harmonizer.harmonize_tensors, one at a time
        comp, alpha, restore = tensors
        inputs = harmonizer._network_inputs(comp, alpha)
        return inputs, harmonizer.model(inputs[2], inputs[3]), restore

    def transfer(state):
        (comp, alpha, low_comp, low_alpha), low_out, restore = state
        out = harmonizer._full_resolution(comp, alpha, low_comp, low_out, low_alpha)
        return torch.where(alpha > 0, out, comp), restore

    def encoder(path: Path):
        def encode(image):
            save_image_atomic(image, path, overwrite=True)
            return image

        return encode

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        steps = {
            "decode": lambda _: (load_rgb(composite_path), load_mask(mask_path)),
            "convert": lambda images: harmonizer.to_tensors(*images),
            "network": network,
            "transfer": transfer,
            "restore": lambda state: state[1](state[0]),
            "encode_jpeg": encoder(Path(tmp) / "out.jpg"),
            "encode_png": encoder(Path(tmp) / "out.png"),
        }
        for name, seconds in measure_steps(steps, replace(plan, repeats=min(plan.repeats, 3))).items():
            result[f"{name}_s"] = seconds
    return {
        **result,
        "image": Path(composite_path).name,
        "width": width,
        "height": height,
        "megapixels": width * height / 1e6,
        "weights": weights,
        "resolution": harmonizer.resolution,
    }


def job_end_to_end(plan: Plan, composite_path: str, mask_path: str) -> dict:
    """Whole `gknet harmonize` processes on the example, writing JPEG and PNG, and the start-up alone."""
    command = [sys.executable, "-c", CLI_ENTRY, "harmonize", composite_path, mask_path, "--overwrite"]
    out = {"startup": time_process([sys.executable, "-c", STARTUP], plan.process_runs, _env(plan))}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("jpg", "png"):
            out[fmt] = time_process([*command, "-o", f"{tmp}/out.{fmt}"], plan.process_runs, _env(plan))
    jpg, png = out["jpg"].get("median_s"), out["png"].get("median_s")
    return {**out, "png_vs_jpeg": png / jpg if jpg and png else None}


def job_onnx(plan: Plan, composite_path: str | None, mask_path: str | None) -> dict:
    """ONNX Runtime against torch: the network at 256 px (batch 1) and the full-size example."""
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"not installed: {', '.join(missing)} (pip install 'gknet[onnx]')"}
    from gknet.inference.harmonizer import Harmonizer
    from gknet.inference.onnx_backend import OnnxRuntimeModel, export_onnx
    from gknet.io.images import load_mask, load_rgb

    _prepare(plan)
    torch_h, weights = _harmonizer()
    t0 = time.perf_counter()
    exported = export_onnx(torch_h.model, settings=torch_h.settings, name=torch_h.name)
    result = {"weights": weights, "export_s": time.perf_counter() - t0, "onnx_mib": len(exported) / 2**20}
    runtime = OnnxRuntimeModel(exported)
    ort_h = Harmonizer(runtime, settings=runtime.settings, name=runtime.name)
    composite, mask = _inputs(1, torch_h.resolution)
    with torch.no_grad():
        difference = torch_h.model(composite, mask) - ort_h.model(composite, mask)
        result["max_abs_diff_256"] = float(difference.abs().max())
        for name, h in (("torch", torch_h), ("onnxruntime", ort_h)):
            result[f"{name}_256"] = measure(lambda h=h: h.model(composite, mask), plan)
    if composite_path:
        image, alpha = load_rgb(composite_path), load_mask(mask_path)
        for name, h in (("torch", torch_h), ("onnxruntime", ort_h)):
            result[f"{name}_fullres"] = measure(lambda h=h: h(image, alpha), plan)
    return result


def job_folder(plan: Plan, folder: str, batch_size: int, workers: int, backend: str) -> dict:
    """`gknet harmonize --composites --masks` in this process: images per second of the whole run.

    ``backend`` "onnxruntime": the shipped weights are exported to ONNX first (not timed).
    """
    from gknet.cli import main
    from gknet.data.folders import match_by_stem

    _prepare(plan)
    root = Path(folder)
    pairs = list(match_by_stem(root / "composites", root / "masks").matched.values())
    pairs = pairs[: plan.folder_images] if plan.folder_images else pairs
    with tempfile.TemporaryDirectory() as tmp:
        comps, masks = Path(tmp) / "c", Path(tmp) / "m"
        comps.mkdir(), masks.mkdir()
        for composite, mask in pairs:
            (comps / composite.name).symlink_to(composite.resolve())
            (masks / mask.name).symlink_to(mask.resolve())
            composite.read_bytes(), mask.read_bytes()  # both runs start with the files in the page cache
        args = ["harmonize", "--composites", str(comps), "--masks", str(masks), "-o", f"{tmp}/out"]
        args += ["--no-progress", "--batch-size", str(batch_size), "--workers", str(workers)]
        if backend == "onnxruntime":
            from gknet.inference.onnx_backend import export_onnx

            harmonizer, _ = _harmonizer()
            try:
                onnx = export_onnx(harmonizer.model, f"{tmp}/model.onnx", harmonizer.settings)
            except GknetError as exc:  # the onnx extra is not installed
                return {"error": str(exc)}
            args += ["--weights", str(onnx)]
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
        seconds = time.perf_counter() - t0
    if code:
        return {"error": f"gknet harmonize exited with {code}"}
    return {"images": len(pairs), "seconds": seconds, "images_per_s": len(pairs) / seconds}
