"""Speed, memory and scaling of GKNet, side by side with plain U-Nets of the same widths.

Usage (from the repository root, with the venv's python)::

    python -m benchmarks.run [--quick] [--only SECTION ...] [--out DIR] [--threads N]

Writes RESULTS.md, RESULTS.json and time_vs_megapixels.png. Only a full run (no --quick,
no --only) writes to benchmarks/ by default, replacing the published results; any other
run goes to outputs/benchmarks/ unless --out says otherwise. Every measurement runs in its
own child processes, one timed and one for its peak memory (that process's resident
high-water mark), so nothing leaks from one measurement into the next, nor from the timed
calls into the peak. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

from tqdm import tqdm

from benchmarks import jobs as J
from benchmarks.measure import REPO, Plan, isolated, machine_info, merged
from benchmarks.report import BASELINE_STEP, VERDICT, compute_ratios, compute_targets, write_outputs
from gknet.data.iharmony4 import IHarmony4
from gknet.errors import GknetError

PUBLISHED = REPO / "benchmarks"
UNPUBLISHED = REPO / "outputs" / "benchmarks"
DEFAULT_EXAMPLE = REPO.parent / "shared" / "examples" / "iharmony4_mini"
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "lalonde_composites"
SECTIONS = (
    "inference",
    "training",
    "precision",
    "kernel_modulation",
    "fullres",
    "end_to_end",
    "onnx",
    "folder",
    "semantic",
)
# sections whose jobs take a peak memory (measure()): they run a second time, in a memory pass
# (compiled steps excepted: a second compilation would take minutes for a number eager rows give)
MEMORY_SECTIONS = ("inference", "training", "precision", "kernel_modulation", "fullres", "onnx")
# training steps per precision: (precision, memory layout, torch.compile); compiled at the
# smallest size only. The quick plan times only the baseline (report.BASELINE_STEP: the step
# before bf16 and channels-last) and the default (what gknet train takes on the CPU now).
PRECISION_RUNS = (
    ("fp32", "contiguous", False),
    ("fp32", "channels-last", False),
    ("bf16", "contiguous", False),
    ("bf16", "channels-last", False),
    ("bf16", "channels-last", True),
)
BASELINE, DEFAULT = (BASELINE_STEP["precision"], BASELINE_STEP["layout"]), ("bf16", "channels-last")
PRECISION_MODELS = ("gknet_small",)
SCALING_MODELS = ("gknet_small", "unet_small")  # also measured at Plan.scaling_sizes
# folder mode: (label, batch size, I/O threads, backend); the first is the one-image-at-a-time loop
FOLDER_RUNS = (
    ("one at a time (CPU default)", 1, 0, "torch"),
    ("one at a time + I/O threads", 1, 2, "torch"),
    ("batched + I/O threads (GPU default)", 8, 2, "torch"),
    ("ONNX Runtime, one at a time", 1, 0, "onnxruntime"),
)

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
    process_runs=3,
    folder_images=0,
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
    process_runs=1,
    folder_images=16,
    compile_training=False,
    every_training_step=False,
)


def fullres_pair(example: Path) -> tuple[Path, Path] | None:
    """(composite, mask) of the first test sample of an iHarmony4 tree, or None if it is absent."""
    if not example.is_dir():
        return None
    samples = IHarmony4(example)
    return (samples[0].composite, samples[0].mask) if len(samples) else None


def jobs(plan: Plan, example: Path, folder: Path, only=SECTIONS) -> list[tuple[str, dict, object, dict]]:
    """(section, labels, job, job kwargs) for every measurement of the plan in the ``only`` sections.

    Items that are compared run back to back (GKNet then its U-Net, ours then unfold), so
    that a change in the machine's load between them distorts the ratios as little as possible.
    """
    out = []
    for size in sorted({*plan.infer_sizes, *plan.scaling_sizes}):
        for model in plan.models:
            if size in plan.infer_sizes or model in SCALING_MODELS:
                labels = {"model": model, "size": size}
                out.append(("inference", labels, J.job_inference, labels))
    for size in plan.train_sizes:
        for model in plan.models:
            labels = {"model": model, "size": size}
            out.append(("training", {**labels, "batch": plan.train_batch}, J.job_training, labels))
    for size in plan.train_sizes:
        for model in PRECISION_MODELS:
            for precision, layout, compiled in PRECISION_RUNS:
                if compiled and (size != min(plan.train_sizes) or not plan.compile_training):
                    continue
                if not plan.every_training_step and (precision, layout) not in (BASELINE, DEFAULT):
                    continue
                labels = {
                    "model": model,
                    "size": size,
                    "precision": precision,
                    "layout": layout,
                    "compiled": compiled,
                }
                out.append(("precision", {**labels, "batch": plan.train_batch}, J.job_training, labels))
    for size in plan.op_sizes:
        for channels in plan.op_channels:
            for mode in ("forward", "forward+backward"):
                for impl in J.OPS:
                    labels = {"impl": impl, "size": size, "channels": channels, "mode": mode}
                    kwargs = {"impl": impl, "size": size, "channels": channels, "backward": mode != "forward"}
                    out.append(
                        ("kernel_modulation", {**labels, "batch": plan.op_batch}, J.job_modulation, kwargs)
                    )
    pair = fullres_pair(example)
    paths = {"composite_path": str(pair[0]), "mask_path": str(pair[1])} if pair else None
    if paths:
        out.append(("fullres", {}, J.job_fullres, paths))
        out.append(("end_to_end", {}, J.job_end_to_end, paths))
    out.append(("onnx", {}, J.job_onnx, paths or {"composite_path": None, "mask_path": None}))
    out.append(("semantic", {}, J.job_semantic, paths or {"composite_path": None, "mask_path": None}))
    if (folder / "composites").is_dir():
        for label, batch_size, workers, backend in FOLDER_RUNS:
            labels = {"label": label, "batch_size": batch_size, "workers": workers, "backend": backend}
            kwargs = {"folder": str(folder), "batch_size": batch_size, "workers": workers, "backend": backend}
            out.append(("folder", labels, J.job_folder, kwargs))
    return [item for item in out if item[0] in only]


def run(plan: Plan, example: Path, folder: Path, quick: bool, only=SECTIONS) -> dict:
    machine = machine_info()
    results: dict = {"machine": machine, "settings": {"quick": quick, "only": list(only), **asdict(plan)}}
    if tuple(only) == SECTIONS:
        results["settings"]["only"] = []
    results.update(inference=[], training=[], precision=[], kernel_modulation=[])
    absent = {"fullres": f"example not found: {example}", "folder": f"folder not found: {folder}"}
    absent["end_to_end"] = absent["fullres"]
    for section in ("fullres", "end_to_end", "onnx", "folder", "semantic"):  # replaced by what is measured
        results[section] = {"skipped": absent.get(section, "") if section in only else "not in this run"}
    for section, labels, job, kwargs in tqdm(
        jobs(plan, example, folder, only), desc="benchmarks", unit="item"
    ):
        measured = isolated(job, plan=plan, **kwargs)
        if section in MEMORY_SECTIONS and not labels.get("compiled"):  # peaks from a fresh process
            measured = merged(measured, isolated(job, memory=True, plan=plan, **kwargs))
        if section == "folder":
            results["folder"].pop("skipped", None)
            results["folder"].setdefault("runs", []).append({**labels, **measured})
        elif section in ("fullres", "end_to_end", "onnx", "semantic"):
            results[section] = measured
        else:
            results[section].append({**labels, "megapixels": labels["size"] ** 2 / 1e6, **measured})
    machine["load_end"] = list(os.getloadavg())
    # read in the children: the parent runs no torch code, so that forking it stays safe
    rows = [*results["inference"], *results["training"], *results["precision"], *results["kernel_modulation"]]
    rows.append(results["fullres"])
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
        f"{section}: {row.get('model') or row.get('impl') or row.get('label') or ''} {row.get('size', '')}: "
        f"{row['error']}"
        for section in ("inference", "training", "precision", "kernel_modulation")
        for row in results[section]
        if "error" in row
    ]
    failed += [
        f"folder: {r['label']}: {r['error']}" for r in results["folder"].get("runs", []) if "error" in r
    ]
    for section in ("fullres", "end_to_end", "onnx", "semantic"):
        if "error" in results[section]:
            failed.append(f"{section}: {results[section]['error']}")
    for fmt in ("jpg", "png", "startup"):
        if "error" in results["end_to_end"].get(fmt, {}):
            failed.append(f"end_to_end {fmt}: {results['end_to_end'][fmt]['error']}")
    return out + [f"measurement failed: {f}" for f in failed]


def output_dir(out: Path | None, partial: bool) -> Path:
    """Where the results go: --out if given; the published benchmarks/ only for a full run."""
    return out or (UNPUBLISHED if partial else PUBLISHED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a few minutes)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", help=", ".join(SECTIONS))
    parser.add_argument(
        "--out",
        type=Path,
        help=f"output directory (default: {PUBLISHED.relative_to(REPO)}/ for a full run, "
        f"{UNPUBLISHED.relative_to(REPO)}/ for a quick or partial one)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--example",
        type=Path,
        default=DEFAULT_EXAMPLE,
        help="iHarmony4 tree with the full-resolution example",
    )
    parser.add_argument(
        "--folder", type=Path, default=DEFAULT_FOLDER, help="composites/ and masks/ for the folder-mode item"
    )
    args = parser.parse_args(argv)
    plan = replace(QUICK if args.quick else FULL, threads=args.threads)
    only = tuple(s for s in SECTIONS if s in (args.only or SECTIONS))
    out = output_dir(args.out, partial=args.quick or only != SECTIONS)
    try:
        results = run(plan, args.example, args.folder, args.quick, only)
    except GknetError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    for path in write_outputs(results, out):
        print(path)
    for t in results["targets"]:
        print(f"{VERDICT[t['pass']]}: {t['name']}: {t['display']}")
    for w in results["warnings"]:
        print(f"WARNING: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
