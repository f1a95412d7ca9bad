"""Evaluation outputs: results.json, per_image.csv and report.md (the paper's Tables 1 and 2
with its rows beside the measured ones)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from gknet.errors import GknetError
from gknet.evaluation.protocol import METRICS, Evaluation
from gknet.evaluation.restraint import render_restraint
from gknet.io.atomic import check_writable, remove_stale_temporaries, write_atomic

PAPER_REFERENCE = "GKNet, ICCV 2023 (arXiv 2305.11676)"

# Paper Table 1: subset -> (PSNR, MSE, fMSE).
PAPER_TABLE1 = {
    "Composite": {
        "HCOCO": (33.94, 69.37, 996.59),
        "HAdobe5k": (28.16, 345.54, 2051.61),
        "HFlickr": (28.32, 264.35, 1574.37),
        "Hday2night": (34.01, 109.65, 1409.98),
        "ALL": (31.63, 172.47, 1376.42),
    },
    "iDIH-HRNet [38]": {
        "HCOCO": (39.16, 16.48, 266.19),
        "HAdobe5k": (38.08, 21.88, 173.96),
        "HFlickr": (33.13, 69.67, 443.65),
        "Hday2night": (37.72, 40.59, 590.97),
        "ALL": (38.19, 24.44, 264.96),
    },
    "GKNet (Ours)": {
        "HCOCO": (40.32, 12.95, 222.31),
        "HAdobe5k": (39.97, 17.84, 138.22),
        "HFlickr": (34.45, 57.58, 372.90),
        "Hday2night": (38.47, 42.76, 546.06),
        "ALL": (39.53, 19.90, 220.44),
    },
}
# Paper Table 2: bucket -> (MSE, fMSE). The paper prints no Composite or iDIH-HRNet row
# there; iS2AM comes from the same work [38] as iDIH-HRNet.
PAPER_TABLE2 = {
    "iS2AM [38]": {"0-5": (6.73, 294.76), "5-15": (18.03, 204.69), "15-100": (63.02, 207.82)},
    "GKNet (Ours)": {"0-5": (5.36, 244.06), "5-15": (17.46, 200.34), "15-100": (57.31, 188.75)},
}
TABLE1_COLUMNS = ("HCOCO", "HAdobe5k", "HFlickr", "Hday2night", "ALL")
TABLE2_COLUMNS = ("0-5", "5-15", "15-100")
T1_KEYS, T1_RATIOS = ("psnr", "mse", "fmse"), ("psnr_gain", "mse_ratio", "fmse_ratio")
T2_KEYS, T2_RATIOS = ("mse", "fmse"), ("mse_ratio", "fmse_ratio")
KEY_LABELS = {"psnr": "PSNR↑", "mse": "MSE↓", "fmse": "fMSE↓"}
OUTPUT_FILES = ("results.json", "per_image.csv", "report.md")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _ratio(key: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f} dB" if key == "psnr_gain" else f"×{value:.3f}"


def _row(label: str, groups: dict, keys: tuple[str, ...], ratios: bool = False) -> list[str]:
    """One table row: ``keys`` of each column's group (None = not measured)."""
    cells = [label]
    for group in groups.values():
        for key in keys:
            value = group.get(key) if group else None
            cells.append(_ratio(key, value) if ratios else _fmt(value))
    return cells


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _columns(summary: dict, table: int) -> dict:
    """Column -> group of a summary for Table 1 (subsets + ALL) or Table 2 (buckets)."""
    if table == 2:
        return {b: summary["fg_ratio"].get(b) for b in TABLE2_COLUMNS}
    return {col: summary["all"] if col == "ALL" else summary["subsets"].get(col) for col in TABLE1_COLUMNS}


def _paper_columns(numbers: dict, keys: tuple[str, ...]) -> dict:
    return {col: dict(zip(keys, values, strict=True)) for col, values in numbers.items()}


def _other_subsets(results: dict) -> list[str]:
    """Report lines for subsets outside Table 1's four (e.g. RainNet_examples), in Table 1's layout."""
    names = [name for name in results["subsets"] if name not in TABLE1_COLUMNS]
    if not names:
        return []

    def groups(summary: dict) -> dict:
        return {name: summary["subsets"].get(name) for name in names}

    rows = [_row("composite (measured)", groups(results["composite"]), T1_KEYS)]
    if results["method"] != "composite":
        rows.append(_row(f"{results['method']} (measured)", groups(results), T1_KEYS))
        ratios = groups(results["ratio_to_composite"])
        rows.append(_row(f"{results['method']} / composite (measured)", ratios, T1_RATIOS, ratios=True))
    header = ["Method"] + [f"{name} {KEY_LABELS[k]}" for name in names for k in T1_KEYS]
    return ["## Other subsets (not in the paper)", "", _table(header, rows), ""]


def render_report(results: dict) -> str:
    """report.md: Tables 1 and 2 in the paper's layout, paper rows beside measured ones."""
    method = results["method"]
    tables = []
    for table, keys, ratio_keys in ((1, T1_KEYS, T1_RATIOS), (2, T2_KEYS, T2_RATIOS)):
        paper = PAPER_TABLE1 if table == 1 else PAPER_TABLE2
        rows = [
            _row(f"{name} (paper)", _paper_columns(numbers, keys), keys) for name, numbers in paper.items()
        ]
        rows.append(_row("composite (measured)", _columns(results["composite"], table), keys))
        if method != "composite":
            rows.append(_row(f"{method} (measured)", _columns(results, table), keys))
            rows.append(
                _row(
                    f"{method} / composite (measured)",
                    _columns(results["ratio_to_composite"], table),
                    ratio_keys,
                    ratios=True,
                )
            )
        if table == 1:
            gknet, comp = (_paper_columns(paper[name], keys) for name in ("GKNet (Ours)", "Composite"))
            paper_ratio = {
                col: {
                    "psnr_gain": gknet[col]["psnr"] - comp[col]["psnr"],
                    "mse_ratio": gknet[col]["mse"] / comp[col]["mse"],
                    "fmse_ratio": gknet[col]["fmse"] / comp[col]["fmse"],
                }
                for col in TABLE1_COLUMNS
            }
            rows.append(_row("GKNet / Composite (paper)", paper_ratio, ratio_keys, ratios=True))
        columns = TABLE1_COLUMNS if table == 1 else [f"{b}%" for b in TABLE2_COLUMNS]
        header = ["Method"] + [f"{col} {KEY_LABELS[k]}" for col in columns for k in keys]
        tables.append(_table(header, rows))

    others = _other_subsets(results)
    counts = ", ".join(f"{k} {v['n']}" for k, v in results["subsets"].items()) or "none"
    bucket_counts = ", ".join(f"{b}% {results['fg_ratio'][b]['n']}" for b in TABLE2_COLUMNS)
    proto = results["protocol"]
    lines = [
        f"# Evaluation of `{method}`",
        "",
        f"Data: {results['data'] or 'n/a'}. Images evaluated: {results['n_images']} ({counts}); "
        f"failed: {results['n_failed']}.",
        f"Protocol: {proto['size']}x{proto['size']}, {proto['resize']}; mask {proto['mask']}; "
        f"PSNR peak {proto['psnr_peak']}; {proto['aggregation']} (see docs/evaluation.md).",
        "",
        f"Paper rows are copied from {PAPER_REFERENCE}, Tables 1 and 2, measured on the full iHarmony4 "
        "test set by scripts whose resizing differs; compare methods through the ratio rows, which use "
        "the composite measured in this run.",
        "",
        "## Table 1: iHarmony4 subsets",
        "",
        tables[0],
        "",
        *others,
        "## Restraint: composites below and above the threshold",
        "",
        "Images grouped by the composite's own fMSE; *made worse*: the method's fMSE is higher than "
        "the composite's (see docs/evaluation.md).",
        "",
        render_restraint({method: results["restraint"]}),
        "",
        "## Table 2: foreground ratio",
        "",
        f"Images per bucket: {bucket_counts}. The paper's Table 2 has no Composite or iDIH-HRNet row; "
        "iS2AM is from the same work [38].",
        "",
        tables[1],
        "",
    ]
    if results["failures"]:
        lines += ["## Failed files", ""]
        lines += [f"- `{f['path']}`: {f['error']}" for f in results["failures"]] + [""]
    return "\n".join(lines)


def per_image_csv(rows: list[dict]) -> str:
    columns = ["subset", "name", "fg_ratio", "fg_bucket", *METRICS, *(f"composite_{k}" for k in METRICS)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def prepare_out_dir(out_dir: str | Path, clean: bool = True) -> Path:
    """Check, before an evaluation, that its results can be written into ``out_dir`` (GknetError if
    not), and remove temporaries that a killed run left there (``clean``: only a process that
    writes its results there may, since other processes may be writing theirs now)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GknetError(f"output folder is a file: {out_dir}")
    check_writable(out_dir / OUTPUT_FILES[0])
    if clean:
        remove_stale_temporaries(out_dir, OUTPUT_FILES)
    return out_dir


def write_outputs(run: Evaluation, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, per_image.csv and report.md into ``out_dir`` (each atomically)."""
    out_dir = Path(out_dir)
    results = run.results()
    texts = (json.dumps(results, indent=2) + "\n", per_image_csv(run.rows), render_report(results))
    files = dict(zip(OUTPUT_FILES, texts, strict=True))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            write_atomic(out_dir / name, text)
    except OSError as exc:
        raise GknetError(f"cannot write results to {out_dir}: {exc.strerror or exc}") from None
    return {name: out_dir / name for name in files}
