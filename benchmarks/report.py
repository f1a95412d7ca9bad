"""From a run's raw numbers to its ratios, targets, RESULTS.md, RESULTS.json and the plot."""

from __future__ import annotations

import io
import json
from pathlib import Path

from gknet.io.atomic import write_atomic

PLOT_NAME = "time_vs_megapixels.png"
PAIRS = {"gknet_small": "unet_small", "gknet_paper": "unet_paper"}  # GKNet -> its same-width U-Net
TARGET_OVERHEAD = 1.4  # GKNet time / U-Net time at 256x256
# GKNet's time ratio over its U-Net / their MAC ratio: how far from its arithmetic it runs
TARGET_TIME_PER_MAC = {256: 1.15, 1024: 1.5}
TARGET_OP_GAIN = 2.0  # unfold / kernel_modulation, in time or in memory, at 256 px
TARGET_FULLRES_S = 3.0
TARGET_FULLRES_GIB = 2.0
TARGET_PNG_VS_JPEG = 1.3  # whole `gknet harmonize` process on the 12 MP example
TARGET_FOLDER_GAIN = 2.0  # folder mode, images/s against one image at a time
VERDICT = {True: "PASS", False: "MISS", None: "NOT MEASURED"}
FULLRES_STEPS = {
    "decode": "read and decode the composite (JPEG) and mask (PNG)",
    "convert": "PIL images to float tensors",
    "network": "resize to the network size and run the network",
    "transfer": "colour transfer to full resolution",
    "restore": "back to an 8-bit RGB image",
    "encode_jpeg": "encode and write JPEG (quality 95)",
    "encode_png": "encode and write PNG (zlib level 1)",
}


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def find(rows: list[dict], **labels) -> dict:
    return next((r for r in rows if all(r.get(k) == v for k, v in labels.items())), {})


BASELINE_STEP = {"precision": "fp32", "layout": "contiguous", "compiled": False}


def _precision_table(results: dict, s: dict) -> list[str]:
    """Training steps per ``train.precision``, layout (and compiled), against the float32
    contiguous step of the same model and size."""
    rows = results.get("precision", [])
    if not rows:
        return []
    lines = [
        f"## Training throughput per precision (batch {s['train_batch']}, as `gknet train` steps)",
        "",
        "fp32 channels-last eager is the training row above measured again in this section; the "
        "baseline (1.00x) is the fp32 contiguous step; `compile`: the forward pass under "
        "`torch.compile`, its compilation (first step) timed apart.",
        "",
    ]

    def speedup(r):
        base = find(rows, model=r["model"], size=r["size"], **BASELINE_STEP)
        return _ratio(base.get("median_s"), r.get("median_s"))

    return lines + _table(
        [
            "model",
            "size",
            "precision",
            "layout",
            "compile",
            "step s (median)",
            "images/s",
            "peak MiB",
            "vs fp32 contiguous",
            "compile s",
        ],
        [
            [
                r["model"],
                f"{r['size']}x{r['size']}",
                r["precision"],
                r["layout"],
                "on" if r["compiled"] else "off",
                fmt(r.get("median_s"), ".3f"),
                fmt(r.get("images_per_s"), ".1f"),
                fmt(r.get("peak_mib"), ".0f"),
                fmt(speedup(r), ".2f") + ("x" if speedup(r) else ""),
                fmt(r.get("compile_s"), ".0f"),
            ]
            for r in rows
        ],
    )


def compute_ratios(results: dict) -> dict:
    """GKNet / its same-width U-Net and unfold / kernel_modulation, from this run's numbers."""
    model_rows = []
    for section in ("inference", "training"):
        for row in results[section]:
            base = find(results[section], model=PAIRS.get(row["model"]), size=row["size"])
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
    precision_rows = []
    for row in results.get("precision", []):
        base = find(results["precision"], model=row["model"], size=row["size"], **BASELINE_STEP)
        labels = {k: row[k] for k in ("model", "size", "precision", "layout", "compiled")}
        precision_rows.append({**labels, "speedup": _ratio(base.get("median_s"), row.get("median_s"))})
    op_rows = []
    for row in results["kernel_modulation"]:
        if row["impl"] == "kernel_modulation":
            labels = {k: row[k] for k in ("size", "channels", "mode")}
            ref = find(results["kernel_modulation"], impl="unfold", **labels)
            op_rows.append(
                {
                    **labels,
                    "speedup": _ratio(ref.get("median_s"), row.get("median_s")),
                    "memory_ratio": _ratio(ref.get("peak_mib"), row.get("peak_mib")),
                }
            )
    runs = results["folder"].get("runs", [])
    one = find(runs, batch_size=1, workers=0, backend="torch").get("images_per_s")
    folder_rows = [{**r, "speedup": _ratio(r.get("images_per_s"), one)} for r in runs]
    ratios = {"gknet_vs_unet": model_rows, "op_vs_unfold": op_rows, "folder_vs_one_at_a_time": folder_rows}
    if "precision" in results:  # runs before the section existed have none
        ratios["precision_vs_fp32"] = precision_rows
    return ratios


def _target(name: str, goal: str, measured: float | None, display: str, passed: bool | None) -> dict:
    return {"name": name, "goal": goal, "measured": measured, "display": display, "pass": passed}


def _at_most(name: str, limit: float, value: float | None, display: str) -> dict:
    return _target(
        name, f"<= {limit}x", value, display if value else "not measured", value <= limit if value else None
    )


def compute_targets(results: dict) -> list[dict]:
    """The targets with measured values; pass is True (PASS), False (MISS) or None (not measured)."""
    targets = []
    ratios = results["ratios"]
    for model, base in PAIRS.items():
        r = find(ratios["gknet_vs_unet"], section="inference", model=model, size=256).get("time_ratio")
        targets.append(
            _at_most(
                f"{model} time overhead over {base} at 256x256 (inference)",
                TARGET_OVERHEAD,
                r,
                f"{r:.2f}x" if r else "",
            )
        )
    for size, limit in TARGET_TIME_PER_MAC.items():
        for model, base in PAIRS.items():
            row = find(ratios["gknet_vs_unet"], section="inference", model=model, size=size)
            time, macs = row.get("time_ratio"), row.get("macs_ratio")
            value = _ratio(time, macs)
            display = f"{value:.2f} ({time:.2f}x the time for {macs:.2f}x the MACs)" if value else ""
            name = f"{model} time ratio over {base} / MAC ratio at {size}x{size} (inference)"
            targets.append(_at_most(name, limit, value, display))
    for channels in sorted({row["channels"] for row in ratios["op_vs_unfold"]}):
        rows = [r for r in ratios["op_vs_unfold"] if r["size"] == 256 and r["channels"] == channels]
        gains = [max(r["speedup"] or 0, r["memory_ratio"] or 0) for r in rows]
        parts = [
            f"{r['mode']}: {fmt(r['speedup'], '.2f')}x faster, {fmt(r['memory_ratio'], '.1f')}x leaner"
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
    e2e = results["end_to_end"]
    png, jpg = e2e.get("png_vs_jpeg"), e2e.get("jpg", {}).get("median_s")
    display = f"{png:.2f}x ({e2e['png']['median_s']:.2f} s vs {jpg:.2f} s)" if png else ""
    targets.append(
        _at_most(
            f"`gknet harmonize` on the {size} example: PNG output time / JPEG",
            TARGET_PNG_VS_JPEG,
            png,
            display,
        )
    )
    best = max(
        (r for r in ratios["folder_vs_one_at_a_time"] if r.get("speedup")),
        key=lambda r: r["speedup"],
        default={},
    )
    gain = best.get("speedup")
    targets.append(
        _target(
            "folder mode: images/s against one image at a time",
            f">= {TARGET_FOLDER_GAIN}x",
            gain,
            f"{gain:.2f}x ({best['label']})" if gain else "not measured",
            gain >= TARGET_FOLDER_GAIN if gain else None,
        )
    )
    return targets


def fmt(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale if scale != 1 else value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _heading(title: str, section: dict, measured: bool) -> list[str]:
    """A section's heading, followed by why nothing is in it when nothing was measured."""
    reason = section.get("skipped") or section.get("error") or "not in this run"
    return [f"## {title}", ""] + ([] if measured else [f"- not measured: {reason}", ""])


def _header(results: dict) -> list[str]:
    m, s = results["machine"], results["settings"]
    threads = ", ".join(map(str, m["torch_threads"]))
    command = "python -m benchmarks.run" + (" --quick" if s["quick"] else "")
    command += f" --only {' '.join(s['only'])}" if s.get("only") else ""
    lines = [
        "# GKNet benchmarks",
        "",
        f"Generated by `{command}` on {m['date_utc']} UTC (commit {m['git_commit'] or 'unknown'}). "
        "How to read it: benchmarks/README.md.",
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
    return lines + _table(
        ["target", "goal", "measured", "result"],
        [[t["name"], t["goal"], t["display"], VERDICT[t["pass"]]] for t in results["targets"]],
    )


def _model_sections(results: dict) -> list[str]:
    s, ratios = results["settings"], results["ratios"]

    def ratio_for(section, row, key="time_ratio"):
        r = find(ratios["gknet_vs_unet"], section=section, model=row["model"], size=row["size"])
        return fmt(r.get(key), ".2f") + "x" if r.get(key) else ""

    lines = ["## Inference (batch 1, eval mode, no_grad)", ""]
    header = ["model", "size", "params", "GMACs", "latency ms (median)", "peak MiB"]
    lines += _table(
        [*header, "time vs same-width U-Net", "MACs vs same-width U-Net"],
        [
            [
                r["model"],
                f"{r['size']}x{r['size']}",
                fmt(r.get("params"), ",d"),
                fmt(r.get("gmacs"), ".2f"),
                fmt(r.get("median_s"), ".1f", 1e3),
                fmt(r.get("peak_mib"), ".0f"),
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
                fmt(r.get("median_s"), ".3f"),
                fmt(r.get("images_per_s"), ".1f"),
                fmt(r.get("peak_mib"), ".0f"),
                ratio_for("training", r),
            ]
            for r in results["training"]
        ],
    )
    lines += _precision_table(results, s)
    lines += [
        f"## kernel_modulation vs unfold (batch {s['op_batch']}, N = {s['kernel_size']})",
        "",
        "Peak MiB: memory added on top of the inputs (features and kernels) and the process.",
        "",
    ]
    op_rows = []
    for r in ratios["op_vs_unfold"]:
        labels = {k: r[k] for k in ("size", "channels", "mode")}
        ours = find(results["kernel_modulation"], impl="kernel_modulation", **labels)
        ref = find(results["kernel_modulation"], impl="unfold", **labels)
        op_rows.append(
            [
                f"{r['size']}x{r['size']}",
                str(r["channels"]),
                r["mode"],
                fmt(ours.get("median_s"), ".2f", 1e3),
                fmt(ref.get("median_s"), ".2f", 1e3),
                fmt(r["speedup"], ".2f") + "x",
                fmt(ours.get("peak_mib"), ".1f"),
                fmt(ref.get("peak_mib"), ".1f"),
                fmt(r["memory_ratio"], ".1f") + "x",
            ]
        )
    return lines + _table(
        ["size", "C", "mode", "ours ms", "unfold ms", "faster", "ours MiB", "unfold MiB", "leaner"], op_rows
    )


def _fullres_body(results: dict) -> list[str]:
    full, e2e = results["fullres"], results["end_to_end"]
    lines = [
        f"- {full['image']}: {full['width']}x{full['height']} ({full['megapixels']:.1f} MP), weights: "
        f"{full['weights']}, network at {full['resolution']}x{full['resolution']}",
        f"- time: {full['median_s']:.2f} s median of {full['runs']} (no file decoding or encoding)",
        f"- memory: {full['peak_mib']:.0f} MiB added during the call; "
        f"process peak {full['process_peak_mib']:.0f} MiB (Python, torch, model, decoded image included)",
        "",
        "### Where a file-to-file run spends its time",
        "",
        "Each step timed alone (median of up to 3), then whole `gknet harmonize` processes "
        "(interpreter start-up, imports and weight loading included).",
        "",
    ]
    rows = [[name, what, fmt(full.get(f"{name}_s"), ".3f")] for name, what in FULLRES_STEPS.items()]
    startup = e2e.get("startup", {})
    rows.append(
        [
            "start-up",
            "python, imports, loading the weights (a process doing nothing else)",
            fmt(startup.get("median_s"), ".3f"),
        ]
    )
    for fmt_name, label in (("jpg", "JPEG"), ("png", "PNG")):
        run = e2e.get(fmt_name, {})
        peak = f", peak RSS {run['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in run else ""
        rows.append(
            [
                f"whole process, {label}",
                f"`gknet harmonize ... -o out.{fmt_name}`{peak}",
                fmt(run.get("median_s"), ".3f"),
            ]
        )
    return lines + _table(["step", "what", "seconds"], rows)


def _onnx_body(results: dict) -> list[str]:
    onnx = results["onnx"]
    lines = [
        f"Weights: {onnx['weights']}; export {onnx['export_s']:.1f} s, {onnx['onnx_mib']:.1f} MiB; "
        f"largest output difference at 256 px: {onnx['max_abs_diff_256']:.1e}.",
        "",
    ]
    rows = []
    for key, label in (("256", "network, 256x256, batch 1"), ("fullres", "Harmonizer, full-size example")):
        ours, ref = onnx.get(f"onnxruntime_{key}", {}), onnx.get(f"torch_{key}", {})
        rows.append(
            [
                label,
                fmt(ref.get("median_s"), ".1f", 1e3),
                fmt(ours.get("median_s"), ".1f", 1e3),
                fmt(_ratio(ref.get("median_s"), ours.get("median_s")), ".2f") + "x",
            ]
        )
    return lines + _table(["item", "torch ms", "ONNX Runtime ms", "ONNX Runtime faster"], rows)


def _folder_body(results: dict) -> list[str]:
    rows = results["ratios"]["folder_vs_one_at_a_time"]
    lines = ["Whole run in one process (weights loading included, interpreter start-up not).", ""]
    return lines + _table(
        ["configuration", "batch size", "I/O threads", "images", "seconds", "images/s", "vs one at a time"],
        [
            [
                r["label"],
                str(r["batch_size"]),
                str(r["workers"]),
                fmt(r.get("images"), "d"),
                fmt(r.get("seconds"), ".1f"),
                fmt(r.get("images_per_s"), ".2f"),
                fmt(r.get("speedup"), ".2f") + "x",
            ]
            for r in rows
        ],
    )


def _semantic_body(results: dict) -> list[str]:
    sem = results["semantic"]
    full = f"the {sem['megapixels']:.1f} MP example" if "megapixels" in sem else "no full-size example"
    lines = [
        "`gknet_small` against `gknet_small_semantic` (its pretrained EfficientNet-Lite0 encoder, "
        f"frozen), random weights, timed in turns ({sem['rounds']} rounds); full size: {full} through "
        "the whole Harmonizer (network at 256 px plus the transfer to full resolution).",
        "",
    ]
    table = [
        [
            row["model"],
            f"{row['params']:,}",
            f"{row['trainable']:,}",
            fmt(row["gmacs_256"], ".2f"),
            fmt(row["network_256_s"], ".1f", 1e3),
            fmt(row.get("fullres_s"), ".2f"),
        ]
        for row in sem["models"]
    ]
    macs = _ratio(sem["models"][1]["gmacs_256"], sem["models"][0]["gmacs_256"])
    ratios = (macs, sem["network_256_time_ratio"], sem.get("fullres_time_ratio"))
    table.append(
        ["ratio (median over rounds)", "", "", *(fmt(r, ".2f") + ("x" if r else "") for r in ratios)]
    )
    return lines + _table(["model", "params", "trainable", "GMACs at 256", "ms at 256", "s full size"], table)


# (heading, results key, whether it was measured, its body)
OPTIONAL_SECTIONS = (
    (
        "Full-resolution harmonization (Harmonizer, PIL in, PIL out)",
        "fullres",
        lambda results: "median_s" in results["fullres"],
        _fullres_body,
    ),
    ("ONNX Runtime vs torch", "onnx", lambda results: "torch_256" in results["onnx"], _onnx_body),
    (
        "Semantic encoder cost (`model.semantic`)",
        "semantic",
        lambda results: "models" in results.get("semantic", {}),
        _semantic_body,
    ),
    (
        "Folder mode (`gknet harmonize --composites DIR --masks DIR`)",
        "folder",
        lambda results: bool(results["ratios"]["folder_vs_one_at_a_time"]),
        _folder_body,
    ),
)


def render_markdown(results: dict) -> str:
    lines = _header(results) + _model_sections(results)
    for title, key, measured, body in OPTIONAL_SECTIONS:
        done = measured(results)
        lines += _heading(title, results.get(key, {}), done) + (body(results) if done else [])
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
