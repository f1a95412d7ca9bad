"""Benchmark runner: one documented protocol -> results.json, per_image.csv, report.md.

Protocol (DoveNet / iDIH, used by the paper; see docs/evaluation.md):
1. composite, target and mask are resized to 256x256 with Pillow's bilinear filter on the
   8-bit images (the mask as 8-bit grayscale); the mask is then binarised as ``/255 > 0.5``;
2. the method runs on the resized composite (float [0, 1]) with the binarised mask;
3. its output is scaled to 0-255 (float, not rounded), clamped, and scored against the
   resized target with :func:`gknet.metrics.image_metrics`;
4. means over images per subset, over every image (ALL) and per foreground-ratio bucket.
The composite itself is scored in the same pass, so each method is also reported as a
ratio to the composite measured under exactly the same resizing.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from gknet.atomic import check_writable, remove_stale_temporaries, write_atomic
from gknet.baselines import Method, get_baseline
from gknet.data.samples import SampleDataset
from gknet.errors import GknetError
from gknet.metrics import fg_bucket, image_metrics, ratio_to_reference, summarize

EVAL_SIZE = 256
METRICS = ("mse", "psnr", "fmse")
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


def load_method(
    baseline: str | None = None, weights: str | None = None, device: str | torch.device = "cpu"
) -> tuple[Method, str]:
    """(method, name) for a baseline name, or release weights (a shipped name or a path).

    Weights are run through :class:`gknet.harmonizer.Harmonizer`, exactly as users run them.
    """
    if (baseline is None) == (weights is None):
        raise GknetError("choose exactly one of a baseline or weights")
    if baseline is not None:
        return get_baseline(baseline), baseline
    from gknet.harmonizer import Harmonizer

    harmonizer = Harmonizer.from_pretrained(weights, device=device)
    return harmonizer.harmonize_tensor, harmonizer.name


def prepare_images(
    composite: Image.Image, mask: Image.Image, target: Image.Image, size: int = EVAL_SIZE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Protocol step 1: uint8 composite [3,S,S], bool mask [1,S,S], uint8 target [3,S,S]."""

    def resized(img: Image.Image) -> np.ndarray:
        return np.asarray(img.resize((size, size), Image.BILINEAR))

    comp, tgt = (torch.from_numpy(resized(im).transpose(2, 0, 1).copy()) for im in (composite, target))
    fg = torch.from_numpy(resized(mask.convert("L")).astype(np.float64) / 255.0 > 0.5)[None]
    return comp, fg, tgt


def limit_per_subset(samples: SampleDataset, limit: int) -> SampleDataset:
    """The first ``limit`` samples of each subset (listing problems kept)."""
    if limit < 1:
        raise GknetError(f"limit must be positive, got {limit}")
    kept, seen = [], {}
    for sample in samples:
        seen[sample.subset] = seen.get(sample.subset, 0) + 1
        if seen[sample.subset] <= limit:
            kept.append(sample)
    return SampleDataset(kept, samples.problems)


class _ProtocolInputs(torch.utils.data.Dataset):
    """Loads and resizes samples; a failure becomes an ``error`` record, not an exception."""

    def __init__(self, samples: SampleDataset, size: int):
        self.samples, self.size = samples, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        try:
            composite, mask, target = sample.load()
            if target is None:
                raise GknetError(f"no target (ground-truth) image for {sample.composite}")
            comp, fg, tgt = prepare_images(composite, mask, target, self.size)
        except GknetError as exc:
            return {"index": index, "error": str(exc)}
        return {"index": index, "composite": comp, "mask": fg, "target": tgt}


@dataclass
class Evaluation:
    """Per-image rows and failures of one run, with the aggregates computed from them."""

    method: str
    rows: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    protocol: dict = field(default_factory=dict)
    source: str = ""
    seconds: float = 0.0
    shard: dict | None = None  # which slice of the samples, for a run split over processes

    def results(self) -> dict:
        """The results.json document."""
        measured = summarize(self.rows)
        composite = summarize([{**r, **{k: r[f"composite_{k}"] for k in METRICS}} for r in self.rows])
        return {
            "method": self.method,
            **measured,
            "composite": composite,
            "ratio_to_composite": ratio_to_reference(measured, composite),
            "n_images": len(self.rows),
            "n_failed": len(self.failures),
            "failures": self.failures,
            "protocol": self.protocol,
            "data": self.source,
            "seconds": round(self.seconds, 3),
            **({"shard": self.shard} if self.shard else {}),
        }


def evaluate(
    method: Method,
    samples: SampleDataset,
    method_name: str,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    psnr_peak: str = "255",
    workers: int = 0,
    size: int = EVAL_SIZE,
    source: str = "",
    progress: bool = True,
) -> Evaluation:
    """Run ``method`` over ``samples`` under the benchmark protocol.

    A sample that cannot be loaded (missing, unreadable, size mismatch, no target) is
    recorded in ``failures`` with its path and the run goes on; so are the dataset's
    listing ``problems``.
    """
    if batch_size < 1 or workers < 0:
        raise GknetError(f"need batch size >= 1 and workers >= 0, got {batch_size} and {workers}")
    if psnr_peak not in ("255", "target_max"):
        raise GknetError(f"psnr peak must be 255 or target_max, got {psnr_peak!r}")
    device = torch.device(device)
    run = Evaluation(
        method=method_name,
        failures=[{"path": str(path), "error": message} for path, message in samples.problems],
        protocol={
            "size": size,
            "resize": "Pillow bilinear on 8-bit images (mask as 8-bit grayscale)",
            "mask": "binarised after resizing as L / 255 > 0.5; also the method's mask input",
            "prediction": "output * 255 as float, clamped to [0, 255], not rounded",
            "psnr_peak": psnr_peak,
            "fmse_empty_mask": 0.0,
            "aggregation": "plain mean over images; ALL over every image",
        },
        source=source,
    )
    loader = torch.utils.data.DataLoader(
        _ProtocolInputs(samples, size), batch_size=batch_size, num_workers=workers, collate_fn=list
    )
    start = time.perf_counter()
    with (
        torch.inference_mode(),
        tqdm(total=len(samples), desc=f"evaluate {method_name}", unit="img", disable=not progress) as bar,
    ):
        for batch in loader:
            for item in batch:
                if "error" in item:
                    sample = samples[item["index"]]
                    run.failures.append({"path": str(sample.composite), "error": item["error"]})
                    tqdm.write(f"failed: {item['error']}")
            ok = [item for item in batch if "error" not in item]
            if ok:
                run.rows.extend(score_batch(method, ok, samples, device, psnr_peak))
            bar.update(len(batch))
    run.seconds = time.perf_counter() - start
    return run


def score_batch(
    method: Method, items: list[dict], samples: SampleDataset, device, psnr_peak: str = "255"
) -> list[dict]:
    """Per-image rows of the method and of the composite itself for one batch of protocol inputs
    (``{"index", "composite", "mask", "target"}`` as :func:`prepare_images` makes them)."""
    comp, fg, target = (
        torch.stack([it[k] for it in items]).to(device) for k in ("composite", "mask", "target")
    )
    comp255, target255 = comp.float(), target.float()
    output = method(comp255 / 255.0, fg.float())
    if output.shape != comp.shape:
        raise ValueError(f"method returned shape {tuple(output.shape)}, expected {tuple(comp.shape)}")
    scores = image_metrics(output.float() * 255.0, target255, fg, psnr_peak)
    anchor = image_metrics(comp255, target255, fg, psnr_peak)
    rows = []
    for i, item in enumerate(items):
        sample = samples[item["index"]]
        ratio = float(scores["fg_ratio"][i])
        rows.append(
            {
                "subset": sample.subset,
                "name": sample.name,
                "fg_ratio": ratio,
                "fg_bucket": fg_bucket(ratio),
                **{k: float(scores[k][i]) for k in METRICS},
                **{f"composite_{k}": float(anchor[k][i]) for k in METRICS},
            }
        )
    return rows


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


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Check, before an evaluation, that its results can be written into ``out_dir`` (GknetError if
    not), and remove temporaries that a killed run left there."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GknetError(f"output folder is a file: {out_dir}")
    check_writable(out_dir / OUTPUT_FILES[0])
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
