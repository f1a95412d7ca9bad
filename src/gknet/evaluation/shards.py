"""Evaluation split over processes: one shard's samples, and the merge of the shards' outputs.

Shard K of N evaluates the K-th contiguous slice of the samples (:mod:`gknet.runtime.shard`) and
reports the dataset's listing problems only in shard 1, so the shards' per-image rows and
failures, concatenated in shard order, are those of a single-process run in the same
order; :func:`merge_shards` recomputes every aggregate from them, so the merged
results.json, per_image.csv and report.md equal a single-process run's (``seconds``
becomes the sum of the shards' times). The slices start at multiples of the batch size:
each image is then scored in the same batch as in one process (a batch's sums may be
ordered by its size), and with the same number of threads every number is bit for bit
the same.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from gknet.data.samples import SampleDataset
from gknet.errors import GknetError
from gknet.evaluation.protocol import Evaluation
from gknet.runtime.shard import Shard

TEXT_COLUMNS = ("subset", "name", "fg_bucket")  # per_image.csv columns that are not numbers


def shard_samples(samples: SampleDataset, shard: Shard, batch_size: int) -> tuple[SampleDataset, dict]:
    """(this shard's samples, the ``shard`` record its results.json carries)."""
    start, stop = shard.bounds(len(samples), unit=batch_size)
    problems = samples.problems if shard.index == 1 else []
    record = {"index": shard.index, "count": shard.count, "samples": stop - start}
    record["total_samples"] = len(samples)
    return SampleDataset(list(samples.samples[start:stop]), problems), record


def shard_dirs(dirs: list[str | Path]) -> list[Path]:
    """Each DIR is a shard's output folder, or a folder holding ``shard-K-of-N`` folders."""
    found = []
    for folder in map(Path, dirs):
        if (folder / "results.json").is_file():
            found.append(folder)
            continue
        inner = sorted(p for p in folder.glob("shard-*-of-*") if (p / "results.json").is_file())
        if not inner:
            raise GknetError(f"no results.json in {folder} (nor in shard-K-of-N folders inside it)")
        found.extend(inner)
    return found


def _read_shard(folder: Path) -> tuple[dict, list[dict]]:
    try:
        results = json.loads((folder / "results.json").read_text())
        with open(folder / "per_image.csv", newline="") as f:
            rows = [
                {k: v if k in TEXT_COLUMNS else float(v) for k, v in row.items()} for row in csv.DictReader(f)
            ]
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deeply
        raise GknetError(f"cannot read the evaluation in {folder}: {exc}") from None
    if not isinstance(results, dict) or not isinstance(results.get("shard"), dict):
        raise GknetError(f"{folder / 'results.json'} is not a shard's result (run with --shard K/N)")
    if len(rows) != results.get("n_images"):
        counts = f"per_image.csv has {len(rows)} rows, results.json {results.get('n_images')}"
        raise GknetError(f"{folder}: {counts}")
    return results, rows


def merge_shards(dirs: list[str | Path]) -> Evaluation:
    """One Evaluation from the output folders of shards 1..N of one run (any order)."""
    shards = sorted((_read_shard(d) for d in shard_dirs(dirs)), key=lambda s: s[0]["shard"]["index"])
    first = shards[0][0]
    count = first["shard"]["count"]
    indices = [results["shard"]["index"] for results, _ in shards]
    if any(results["shard"]["count"] != count for results, _ in shards):
        raise GknetError("the shards come from different splits (shard counts differ)")
    if indices != list(range(1, count + 1)):
        raise GknetError(f"need each of shards 1..{count} once, got {', '.join(map(str, indices)) or 'none'}")
    for results, _ in shards:
        for key in ("method", "protocol", "data"):
            if results[key] != first[key]:
                raise GknetError(f"shards differ in {key}: {results[key]!r} and {first[key]!r}")
        if results["shard"]["total_samples"] != first["shard"]["total_samples"]:
            raise GknetError("the shards come from different splits (numbers of samples differ)")
    if sum(results["shard"]["samples"] for results, _ in shards) != first["shard"]["total_samples"]:
        raise GknetError("the shards do not cover the dataset exactly once")
    return Evaluation(
        method=first["method"],
        rows=[row for _, rows in shards for row in rows],
        failures=[failure for results, _ in shards for failure in results["failures"]],
        protocol=first["protocol"],
        source=first["data"],
        seconds=sum(results["seconds"] for results, _ in shards),
    )
