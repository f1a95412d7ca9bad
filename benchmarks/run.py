"""Speed, memory and scaling of GKNet, side by side with plain U-Nets of the same widths.

Usage (from the repository root, with the venv's python)::

    python benchmarks/run.py [--quick] [--out benchmarks/] [--threads N] [--example DIR]

Writes RESULTS.md, RESULTS.json and time_vs_megapixels.png to ``--out``. Every measurement
runs in its own child process, so its peak memory is that process's resident high-water
mark and nothing leaks from one measurement into the next. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import io
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from gknet.atomic import write_atomic
from gknet.config import ModelConfig, load_config
from gknet.data.iharmony4 import IHarmony4
from gknet.errors import GknetError
from gknet.losses import fn_mse_loss
from gknet.model_info import count_macs, count_params
from gknet.models import build_model
from gknet.ops import kernel_modulation, kernel_modulation_unfold

REPO = Path(__file__).resolve().parents[1]
DEFAULT_EXAMPLE = REPO.parent / "shared" / "examples" / "iharmony4_mini"
MIB = 2**20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
PLOT_NAME = "time_vs_megapixels.png"

# name -> (config file, strip GKNet's modules to get the plain U-Net of the same widths)
MODELS = {
    "gknet_small": ("gknet_small.yaml", False),
    "unet_small": ("ablation_baseline.yaml", False),
    "gknet_paper": ("gknet_paper.yaml", False),
    "unet_paper": ("gknet_paper.yaml", True),
}
SCALING_MODELS = ("gknet_small", "unet_small")  # also measured at Plan.scaling_sizes
PAIRS = {"gknet_small": "unet_small", "gknet_paper": "unet_paper"}  # GKNet -> its same-width U-Net
OPS = {"kernel_modulation": kernel_modulation, "unfold": kernel_modulation_unfold}

TARGET_OVERHEAD = 1.5  # GKNet time / U-Net time at 256x256
TARGET_OP_GAIN = 2.0  # unfold / kernel_modulation, in time or in memory, at 256 px
TARGET_FULLRES_S = 3.0
TARGET_FULLRES_GIB = 2.0
CHILD_TIMEOUT_S = 3600
VERDICT = {True: "PASS", False: "MISS", None: "NOT MEASURED"}


@dataclass(frozen=True)
class Plan:
    models: tuple[str, ...]
    infer_sizes: tuple[int, ...]
    scaling_sizes: tuple[int, ...]  # extra inference sizes for the scaling plot (SCALING_MODELS)
    train_sizes: tuple[int, ...]
    op_sizes: tuple[int, ...]
    op_channels: tuple[int, ...]
    repeats: int  # timed samples per measurement (fewer if budget_s runs out)
    min_runs: int
    budget_s: float  # stop sampling after this long once min_runs samples exist
    sample_s: float  # loop fast calls so that one sample lasts at least this long
    train_batch: int = 8
    op_batch: int = 1
    kernel_size: int = 3
    threads: int = 0  # torch CPU threads; 0 = torch's default


FULL = Plan(
    models=("gknet_small", "unet_small", "gknet_paper", "unet_paper"),
    infer_sizes=(256, 1024),
    scaling_sizes=(512, 768),
    train_sizes=(128, 256),
    op_sizes=(64, 128, 256),
    op_channels=(32, 64),
    repeats=7,
    min_runs=3,
    budget_s=20.0,
    sample_s=0.2,
)
QUICK = Plan(
    models=("gknet_small", "unet_small"),
    infer_sizes=(128, 256),
    scaling_sizes=(),
    train_sizes=(64,),
    op_sizes=(128, 256),
    op_channels=(32,),
    repeats=3,
    min_runs=1,
    budget_s=1.0,
    sample_s=0.02,
)


# ---------------------------------------------------------------- measuring (child processes)


def _peak_rss() -> int:
    """Resident high-water mark of this process in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _current_rss() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except OSError:  # no /proc: the high-water mark is the best lower bound we have
        return _peak_rss()


def _map_large_allocations() -> None:
    """Make glibc give every allocation over 128 KiB its own mapping, returned on free.

    By default glibc raises this threshold as the program frees large blocks, so tensors
    land on the heap or not depending on what ran before, and freed heap memory stays
    resident: the same measurement would then report different peaks from run to run.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _start_memory_window() -> int:
    """Return freed heap memory to the OS and restart the high-water mark; the RSS now.

    Both steps are Linux/glibc best effort; without them the delta can only be overestimated.
    """
    gc.collect()
    malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, which ru_maxrss reports
    return _current_rss()


def _measure(call, plan: Plan) -> dict:
    """Median time of ``call`` and the resident memory it adds at its peak.

    The first warm-up call runs before the memory window opens (it faults in code and
    builds one-time caches); the second calibrates how many calls make one sample, and
    counts as the first sample if it alone lasts ``plan.sample_s``.
    """
    call()
    before = _start_memory_window()
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    loops = max(1, math.ceil(plan.sample_s / max(first, 1e-9)))
    samples = [first] if loops == 1 else []

    def done() -> bool:
        over_budget = time.perf_counter() - start > plan.budget_s
        return len(samples) >= plan.repeats or (len(samples) >= plan.min_runs and over_budget)

    while not done():
        t0 = time.perf_counter()
        for _ in range(loops):
            call()
        samples.append((time.perf_counter() - t0) / loops)
    peak = _peak_rss()
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "runs": len(samples),
        "loops": loops,
        "peak_mib": max(peak - before, 0) / MIB,
        "process_peak_mib": peak / MIB,
        "threads": torch.get_num_threads(),
    }


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


def job_inference(plan: Plan, model: str, size: int) -> dict:
    _prepare(plan)
    net = build_model(model_config(model)).eval()
    composite, mask = _inputs(1, size)
    macs = count_macs(net, size)  # before the memory window: it runs its own forward pass

    def call():
        with torch.no_grad():
            net(composite, mask)

    return {"params": count_params(net)["total"], "gmacs": macs / 1e9, **_measure(call, plan)}


def job_training(plan: Plan, model: str, size: int) -> dict:
    _prepare(plan)
    net = build_model(model_config(model)).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    composite, mask = _inputs(plan.train_batch, size)
    target = torch.rand_like(composite)

    def call():
        optimizer.zero_grad(set_to_none=True)
        fn_mse_loss(net(composite, mask), target, mask).backward()
        optimizer.step()

    result = _measure(call, plan)
    return {**result, "images_per_s": plan.train_batch / result["median_s"]}


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

    return _measure(forward_backward if backward else forward, plan)


def job_fullres(plan: Plan, composite_path: str, mask_path: str) -> dict:
    from gknet.data.imageio import load_mask, load_rgb
    from gknet.harmonizer import Harmonizer

    _prepare(plan)
    t0 = time.perf_counter()
    composite, mask = load_rgb(composite_path), load_mask(mask_path)
    load_s = time.perf_counter() - t0
    harmonizer, weights = Harmonizer.from_pretrained(), "shipped default"
    width, height = composite.size
    return {
        **_measure(lambda: harmonizer(composite, mask), plan),
        "image": Path(composite_path).name,
        "width": width,
        "height": height,
        "megapixels": width * height / 1e6,
        "weights": weights,
        "resolution": harmonizer.resolution,
        "decode_s": load_s,
    }


def _child(conn, job, kwargs) -> None:
    try:
        _map_large_allocations()
        conn.send(("ok", job(**kwargs)))
    except BaseException:  # report every failure to the parent instead of dying silently
        conn.send(("error", traceback.format_exc(limit=3).strip().splitlines()[-1]))
    finally:
        conn.close()


def isolated(job, **kwargs) -> dict:
    """Run ``job(**kwargs)`` in a fresh child process: its result dict, or ``{"error": ...}``.

    fork is cheap (torch is imported once, in the parent, which runs no torch op itself).
    """
    ctx = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, job, kwargs))
    proc.start()
    sender.close()
    status, value = "error", f"no result after {CHILD_TIMEOUT_S} s"
    try:
        if receiver.poll(CHILD_TIMEOUT_S):
            status, value = receiver.recv()
    except EOFError:
        proc.join()
        value = f"child process died (exit code {proc.exitcode}; out of memory?)"
    proc.kill()  # only does something after a timeout
    proc.join()
    return value if status == "ok" else {"error": value}


# ---------------------------------------------------------------- the run (parent process)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def machine_info() -> dict:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "git_commit": _git_commit(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "load_start": list(os.getloadavg()),
    }


def fullres_pair(example: Path) -> tuple[Path, Path] | None:
    """(composite, mask) of the first test sample of an iHarmony4 tree, or None if it is absent."""
    if not example.is_dir():
        return None
    samples = IHarmony4(example)
    return (samples[0].composite, samples[0].mask) if len(samples) else None


def jobs(plan: Plan, example: Path) -> list[tuple[str, dict, object, dict]]:
    """(section, labels, job, job kwargs) for every measurement of the plan.

    Items that are compared run back to back (GKNet then its U-Net, ours then unfold), so
    that a change in the machine's load between them distorts the ratios as little as possible.
    """
    out = []
    for size in sorted({*plan.infer_sizes, *plan.scaling_sizes}):
        for model in plan.models:
            if size in plan.infer_sizes or model in SCALING_MODELS:
                labels = {"model": model, "size": size}
                out.append(("inference", labels, job_inference, labels))
    for size in plan.train_sizes:
        for model in plan.models:
            labels = {"model": model, "size": size}
            out.append(("training", {**labels, "batch": plan.train_batch}, job_training, labels))
    for size in plan.op_sizes:
        for channels in plan.op_channels:
            for mode in ("forward", "forward+backward"):
                for impl in OPS:
                    labels = {"impl": impl, "size": size, "channels": channels, "mode": mode}
                    kwargs = {"impl": impl, "size": size, "channels": channels, "backward": mode != "forward"}
                    out.append(
                        ("kernel_modulation", {**labels, "batch": plan.op_batch}, job_modulation, kwargs)
                    )
    pair = fullres_pair(example)
    if pair is not None:
        out.append(("fullres", {}, job_fullres, {"composite_path": str(pair[0]), "mask_path": str(pair[1])}))
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _find(rows: list[dict], **labels) -> dict:
    return next((r for r in rows if all(r.get(k) == v for k, v in labels.items())), {})


def compute_ratios(results: dict) -> dict:
    """GKNet / its same-width U-Net and unfold / kernel_modulation, from this run's numbers."""
    model_rows = []
    for section in ("inference", "training"):
        for row in results[section]:
            base = _find(results[section], model=PAIRS.get(row["model"]), size=row["size"])
            if row["model"] in PAIRS and base:
                model_rows.append(
                    {
                        "section": section,
                        "model": row["model"],
                        "baseline": base["model"],
                        "size": row["size"],
                        "time_ratio": _ratio(row.get("median_s"), base.get("median_s")),
                        "memory_ratio": _ratio(row.get("peak_mib"), base.get("peak_mib")),
                        "macs_ratio": _ratio(row.get("gmacs"), base.get("gmacs")),
                    }
                )
    op_rows = []
    for row in results["kernel_modulation"]:
        if row["impl"] == "kernel_modulation":
            labels = {k: row[k] for k in ("size", "channels", "mode")}
            ref = _find(results["kernel_modulation"], impl="unfold", **labels)
            op_rows.append(
                {
                    **labels,
                    "speedup": _ratio(ref.get("median_s"), row.get("median_s")),
                    "memory_ratio": _ratio(ref.get("peak_mib"), row.get("peak_mib")),
                }
            )
    return {"gknet_vs_unet": model_rows, "op_vs_unfold": op_rows}


def _target(name: str, goal: str, measured: float | None, display: str, passed: bool | None) -> dict:
    return {"name": name, "goal": goal, "measured": measured, "display": display, "pass": passed}


def compute_targets(results: dict) -> list[dict]:
    """The issue's targets with measured values; pass is True (PASS), False (MISS) or None (not measured)."""
    targets = []
    ratios = results["ratios"]
    for model, base in PAIRS.items():
        row = _find(ratios["gknet_vs_unet"], section="inference", model=model, size=256)
        r = row.get("time_ratio")
        targets.append(
            _target(
                f"{model} time overhead over {base} at 256x256 (inference)",
                f"<= {TARGET_OVERHEAD}x",
                r,
                f"{r:.2f}x" if r else "not measured",
                r <= TARGET_OVERHEAD if r else None,
            )
        )
    for channels in sorted({row["channels"] for row in ratios["op_vs_unfold"]}):
        rows = [r for r in ratios["op_vs_unfold"] if r["size"] == 256 and r["channels"] == channels]
        gains = [max(r["speedup"] or 0, r["memory_ratio"] or 0) for r in rows]
        parts = [
            f"{r['mode']}: {_fmt(r['speedup'], '.2f')}x faster, {_fmt(r['memory_ratio'], '.1f')}x leaner"
            for r in rows
        ]
        measured = min(gains) if gains and all(gains) else None
        targets.append(
            _target(
                f"kernel_modulation vs unfold at 256 px, C={channels} (every mode)",
                f">= {TARGET_OP_GAIN}x faster or leaner",
                measured,
                "; ".join(parts) or "not measured",
                measured >= TARGET_OP_GAIN if measured else None,
            )
        )
    full = results["fullres"]
    seconds, gib = full.get("median_s"), full.get("process_peak_mib")
    gib = gib / 1024 if gib else None
    size = f"{full['megapixels']:.2g} MP" if "megapixels" in full else "12 MP"
    targets.append(
        _target(
            f"full-resolution harmonization of the {size} example: time",
            f"< {TARGET_FULLRES_S} s",
            seconds,
            f"{seconds:.2f} s" if seconds else "not measured",
            seconds < TARGET_FULLRES_S if seconds else None,
        )
    )
    targets.append(
        _target(
            f"full-resolution harmonization of the {size} example: process peak memory",
            f"< {TARGET_FULLRES_GIB} GiB",
            gib,
            f"{gib:.2f} GiB" if gib else "not measured",
            gib < TARGET_FULLRES_GIB if gib else None,
        )
    )
    return targets


def run(plan: Plan, example: Path, quick: bool) -> dict:
    machine = machine_info()
    results: dict = {"machine": machine, "settings": {"quick": quick, **asdict(plan)}}
    results.update(inference=[], training=[], kernel_modulation=[])
    results["fullres"] = {"skipped": f"example not found: {example}"}
    todo = jobs(plan, example)
    for section, labels, job, kwargs in tqdm(todo, desc="benchmarks", unit="item"):
        measured = isolated(job, plan=plan, **kwargs)
        if section == "fullres":
            results["fullres"] = measured
        else:
            results[section].append({**labels, "megapixels": labels["size"] ** 2 / 1e6, **measured})
    machine["load_end"] = list(os.getloadavg())
    # read in the children: the parent runs no torch code, so that forking it stays safe
    rows = [*results["inference"], *results["training"], *results["kernel_modulation"], results["fullres"]]
    machine["torch_threads"] = sorted({r["threads"] for r in rows if "threads" in r})
    results["ratios"] = compute_ratios(results)
    results["targets"] = compute_targets(results)
    results["warnings"] = warnings_for(results)
    return results


def warnings_for(results: dict) -> list[str]:
    machine, out = results["machine"], []
    busiest = max(machine["load_start"][0], machine["load_end"][0])
    if busiest > machine["cores"]:
        out.append(
            f"1-minute load average reached {busiest:.2f} on {machine['cores']} cores: other jobs were "
            "running, absolute timings are inflated (ratios measured in the same run are more reliable)"
        )
    failed = [
        f"{section}: {row.get('model') or row.get('impl') or ''} {row.get('size', '')}: {row['error']}"
        for section in ("inference", "training", "kernel_modulation")
        for row in results[section]
        if "error" in row
    ]
    if "error" in results["fullres"]:
        failed.append(f"fullres: {results['fullres']['error']}")
    return out + [f"measurement failed: {f}" for f in failed]


# ---------------------------------------------------------------- reporting


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale if scale != 1 else value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def render_markdown(results: dict) -> str:
    m, s, ratios = results["machine"], results["settings"], results["ratios"]
    threads = ", ".join(map(str, m["torch_threads"]))
    lines = [
        "# GKNet benchmarks",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if s['quick'] else ''}` on {m['date_utc']} UTC "
        f"(commit {m['git_commit'] or 'unknown'}). How to read it: benchmarks/README.md.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; {m['platform']}",
        f"- Python {m['python']}, torch {m['torch']}, torch threads: {threads or 'unknown'}",
        "- load average (1, 5, 15 min): start "
        + ", ".join(f"{x:.2f}" for x in m["load_start"])
        + "; end "
        + ", ".join(f"{x:.2f}" for x in m["load_end"]),
        "",
    ]
    if results["warnings"]:
        lines += ["**Warnings**", ""] + [f"- WARNING: {w}" for w in results["warnings"]] + [""]
    lines += ["## Targets", ""]
    lines += _table(
        ["target", "goal", "measured", "result"],
        [[t["name"], t["goal"], t["display"], VERDICT[t["pass"]]] for t in results["targets"]],
    )

    def ratio_for(section, row, key="time_ratio"):
        r = _find(ratios["gknet_vs_unet"], section=section, model=row["model"], size=row["size"])
        return _fmt(r.get(key), ".2f") + "x" if r.get(key) else ""

    lines += ["## Inference (batch 1, eval mode, no_grad)", ""]
    lines += _table(
        [
            "model",
            "size",
            "params",
            "GMACs",
            "latency ms (median)",
            "peak MiB",
            "time vs same-width U-Net",
            "MACs vs same-width U-Net",
        ],
        [
            [
                r["model"],
                f"{r['size']}x{r['size']}",
                _fmt(r.get("params"), ",d"),
                _fmt(r.get("gmacs"), ".2f"),
                _fmt(r.get("median_s"), ".1f", 1e3),
                _fmt(r.get("peak_mib"), ".0f"),
                ratio_for("inference", r),
                ratio_for("inference", r, "macs_ratio"),
            ]
            for r in results["inference"]
        ],
    )
    lines += [
        f"## Training throughput (batch {s['train_batch']}, forward + FN-MSE loss + backward + Adam)",
        "",
    ]
    lines += _table(
        ["model", "size", "step s (median)", "images/s", "peak MiB", "time vs same-width U-Net"],
        [
            [
                r["model"],
                f"{r['size']}x{r['size']}",
                _fmt(r.get("median_s"), ".3f"),
                _fmt(r.get("images_per_s"), ".1f"),
                _fmt(r.get("peak_mib"), ".0f"),
                ratio_for("training", r),
            ]
            for r in results["training"]
        ],
    )
    lines += [
        f"## kernel_modulation vs unfold (batch {s['op_batch']}, N = {s['kernel_size']})",
        "",
        "Peak MiB: memory added on top of the inputs (features and kernels) and the process.",
        "",
    ]
    op_rows = []
    for r in ratios["op_vs_unfold"]:
        labels = {k: r[k] for k in ("size", "channels", "mode")}
        ours = _find(results["kernel_modulation"], impl="kernel_modulation", **labels)
        ref = _find(results["kernel_modulation"], impl="unfold", **labels)
        op_rows.append(
            [
                f"{r['size']}x{r['size']}",
                str(r["channels"]),
                r["mode"],
                _fmt(ours.get("median_s"), ".2f", 1e3),
                _fmt(ref.get("median_s"), ".2f", 1e3),
                _fmt(r["speedup"], ".2f") + "x",
                _fmt(ours.get("peak_mib"), ".1f"),
                _fmt(ref.get("peak_mib"), ".1f"),
                _fmt(r["memory_ratio"], ".1f") + "x",
            ]
        )
    lines += _table(
        ["size", "C", "mode", "ours ms", "unfold ms", "faster", "ours MiB", "unfold MiB", "leaner"], op_rows
    )
    full = results["fullres"]
    lines += ["## Full-resolution harmonization (Harmonizer, PIL in, PIL out)", ""]
    if "median_s" in full:
        lines += [
            f"- {full['image']}: {full['width']}x{full['height']} ({full['megapixels']:.1f} MP), weights: "
            f"{full['weights']}, network at {full['resolution']}x{full['resolution']}",
            f"- time: {full['median_s']:.2f} s median of {full['runs']} (JPEG/PNG decoding, not included: "
            f"{full['decode_s']:.2f} s)",
            f"- memory: {full['peak_mib']:.0f} MiB added during the call; "
            f"process peak {full['process_peak_mib']:.0f} MiB (Python, torch, model, decoded image included)",
            "",
        ]
    else:
        lines += [f"- not measured: {full.get('skipped') or full.get('error')}", ""]
    lines += ["## Cost against image size", "", f"![time vs megapixels]({PLOT_NAME})", ""]
    return "\n".join(lines)


def render_plot(results: dict) -> bytes:
    """PNG of inference time against megapixels (log-log), one line per model, plus the full-res point."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot()
    for model in dict.fromkeys(r["model"] for r in results["inference"]):
        rows = sorted(
            (r for r in results["inference"] if r["model"] == model and "median_s" in r),
            key=lambda r: r["megapixels"],
        )
        ax.plot([r["megapixels"] for r in rows], [r["median_s"] for r in rows], marker="o", label=model)
    full = results["fullres"]
    if "median_s" in full:
        ax.plot(
            [full["megapixels"]],
            [full["median_s"]],
            marker="*",
            markersize=14,
            linestyle="none",
            label=f"Harmonizer, full resolution (network at {full['resolution']} + transfer)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("megapixels")
    ax.set_ylabel("time per image (s)")
    ax.set_title("Inference time against image size (batch 1, CPU)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def write_outputs(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "RESULTS.json": json.dumps(results, indent=2).encode(),
        "RESULTS.md": render_markdown(results).encode(),
        PLOT_NAME: render_plot(results),
    }
    for name, data in files.items():
        write_atomic(out / name, data)
    return [out / name for name in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (under a minute)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--example",
        type=Path,
        default=DEFAULT_EXAMPLE,
        help="iHarmony4 tree with the full-resolution example",
    )
    args = parser.parse_args(argv)
    plan = replace(QUICK if args.quick else FULL, threads=args.threads)
    try:
        results = run(plan, args.example, args.quick)
    except GknetError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    for path in write_outputs(results, args.out):
        print(path)
    for t in results["targets"]:
        print(f"{VERDICT[t['pass']]}: {t['name']}: {t['display']}")
    for w in results["warnings"]:
        print(f"WARNING: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
