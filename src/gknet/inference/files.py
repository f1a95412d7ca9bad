"""Harmonizing image files: one composite and its mask, or a folder of composites with the masks
of the same file stem, each at full resolution.

Every output is checked before any image is decoded (never an input nor in an input folder,
writable, not an existing file unless ``overwrite``) and written atomically. Folder mode runs through
:func:`gknet.inference.pipeline.run_batched`: one network pass per batch, with reading and
writing in worker threads where that pays (a GPU).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gknet.errors import GknetError
from gknet.io.guard import Inputs

COMPARE_SUFFIX = "_compare.jpg"
# Folder-mode batch: a GPU is fed several images per pass; on the CPU a batch of 256 px images
# runs slower per image than one at a time (the feature maps leave the cache). I/O threads
# likewise help a GPU run but slow a CPU one, where they take cores from torch (measured on
# 2 cores: benchmarks/README.md, "Reading the results").
GPU_BATCH, CPU_BATCH = 8, 1
GPU_WORKERS, CPU_WORKERS = 2, 0
BATCH_PIXELS = 2**22  # a folder-mode batch closes at this many full-size pixels (memory bound)

Job = tuple[Path, Path, Path]  # (composite, mask, output)


@dataclass(frozen=True)
class FileOptions:
    """How masks are read and results written.

    ``threshold``: foreground where mask >= T (0 < T <= 1); None uses the soft mask as alpha.
    ``compare``: also write ``<output stem>_compare.jpg`` (composite | harmonized | mask outline).
    ``strength``: how much of the model's change is applied (:mod:`gknet.inference.strength`).
    """

    threshold: float | None = None
    resize_mask: bool = False
    compare: bool = False
    overwrite: bool = False
    strength: float = 1.0

    def __post_init__(self):
        from gknet.inference.strength import check_strength

        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise GknetError(f"--threshold must be in (0, 1], got {self.threshold}")
        check_strength(self.strength)

    def outputs(self, out: Path) -> tuple[Path, ...]:
        """The result file, and its comparison sheet with ``compare``."""
        return (out, out.with_name(out.stem + COMPARE_SUFFIX)) if self.compare else (out,)


def check_outputs(job: Job, options: FileOptions, inputs: Inputs | None = None) -> None:
    """GknetError, before any work, if one of the job's outputs is an input (its composite and mask,
    and whatever else ``inputs`` holds: :class:`gknet.io.guard.Inputs`) or cannot be written."""
    from gknet.io.images import check_output_path

    inputs = inputs if inputs is not None else Inputs(job[:2])
    for path in options.outputs(job[2]):
        inputs.check(path)
        check_output_path(path, options.overwrite)


def prepare_file(job: Job, options: FileOptions, inputs: Inputs | None = None) -> None:
    """Check a single-file job's outputs and remove the temporaries a killed run left beside them."""
    from gknet.io.atomic import remove_stale_temporaries

    inputs = (inputs if inputs is not None else Inputs()).add_files(*job[:2])
    check_outputs(job, options, inputs)
    for path in options.outputs(job[2]):
        remove_stale_temporaries(path.parent, [path.name])


def folder_jobs(
    composites: str | Path,
    masks: str | Path,
    outdir: str | Path,
    options: FileOptions,
    shard=None,
    inputs: Inputs | None = None,
) -> tuple[list[Job], list[tuple[Path, str]]]:
    """(jobs, unmatched files) of folder mode, ``shard``'s slice (a :class:`gknet.runtime.shard.Shard`
    or None), checked before any work: no output is an input (also of ``inputs``) or lies in an
    input folder, the output folder can be written and no two outputs share a name
    (``a_compare.jpg`` is also ``a.jpg``'s sheet). The first shard reports the unmatched files."""
    from gknet.data.folders import match_by_stem
    from gknet.io.atomic import check_writable, remove_stale_temporaries

    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise GknetError(f"output folder is a file: {outdir}")
    pairs = match_by_stem(composites, masks)
    inputs = (inputs if inputs is not None else Inputs()).add_folders(composites, masks)
    inputs.add_files(*(path for pair in pairs.matched.values() for path in pair))
    jobs = [(c, m, outdir / f"{stem}{c.suffix.lower()}") for stem, (c, m) in pairs.matched.items()]
    inputs.check(outdir, *(path for _, _, out in jobs for path in options.outputs(out)))
    names = Counter(path.name for _, _, out in jobs for path in options.outputs(out))
    clash = [name for name, count in names.items() if count > 1]
    if clash:  # checked over all shards' outputs: every shard refuses alike
        raise GknetError(
            f"two outputs would be named {outdir / clash[0]} (a composite named like another's "
            f"{COMPARE_SUFFIX} sheet): rename it or drop --compare"
        )
    unmatched = pairs.unmatched
    if shard is not None:  # a deterministic slice
        jobs, unmatched = shard.select(jobs), unmatched if shard.index == 1 else []
    if jobs:
        check_writable(jobs[0][2])
    # left by a killed run; only this shard's, the other shards may be writing theirs now
    remove_stale_temporaries(outdir, [path.name for _, _, out in jobs for path in options.outputs(out)])
    return jobs, unmatched


def _load(job: Job, harmonizer, options: FileOptions) -> dict:
    """Check the outputs, read and convert one job (a worker thread's part)."""
    from gknet.io.images import load_mask, load_rgb

    composite, mask, out = job
    check_outputs(job, options)
    image, alpha = load_rgb(composite), load_mask(mask)
    tensors = harmonizer.to_tensors(
        image, alpha, threshold=options.threshold, resize_mask=options.resize_mask
    )
    compare = options.outputs(out)[1] if options.compare else None
    return {"name": composite.name, "image": image, "alpha": alpha, "tensors": tensors, "compare": compare}


def _compute(harmonizer, loaded: list[dict], name_files: bool, strength: float) -> list[tuple[dict, object]]:
    """One network pass for a batch of loaded jobs (the calling thread's part)."""
    results = harmonizer.harmonize_tensors(
        [item["tensors"][0] for item in loaded],
        [item["tensors"][1] for item in loaded],
        labels=[item["name"] for item in loaded] if name_files else None,  # warnings name the file
        strength=strength,
    )
    return list(zip(loaded, results, strict=True))


def _save(job: Job, computed: tuple[dict, object], options: FileOptions) -> None:
    from gknet.evaluation.comparison import comparison_image
    from gknet.io.images import save_image_atomic

    item, tensor = computed
    result = item["tensors"][2](tensor)
    save_image_atomic(result, job[2], overwrite=options.overwrite)
    if item["compare"]:
        image, alpha = item["image"], item["alpha"]
        if alpha.size != image.size:
            alpha = alpha.resize(image.size)
        save_image_atomic(
            comparison_image(image, result, alpha), item["compare"], overwrite=options.overwrite
        )


def harmonize_file(harmonizer, job: Job, options: FileOptions) -> tuple[Path, ...]:
    """Harmonize one (composite, mask, output) job; returns the files written."""
    loaded = [_load(job, harmonizer, options)]
    _save(job, _compute(harmonizer, loaded, name_files=False, strength=options.strength)[0], options)
    return options.outputs(job[2])


def harmonize_folder(
    harmonizer,
    jobs: list[Job],
    options: FileOptions,
    batch_size: int | None = None,
    workers: int | None = None,
) -> Iterator[tuple[Job, GknetError | None]]:
    """Harmonize folder-mode jobs; yields ``(job, error or None)`` in order as each is written.

    A job that fails (unreadable input, existing output, ...) fails alone. ``batch_size`` images
    per network pass and ``workers`` I/O threads default to the device's (GPU or CPU) settings.
    """
    from gknet.inference.pipeline import run_batched

    on_gpu = harmonizer.device.type == "cuda"
    return run_batched(
        jobs,
        lambda job: _load(job, harmonizer, options),
        lambda loaded: _compute(harmonizer, loaded, name_files=True, strength=options.strength),
        lambda job, computed: _save(job, computed, options),
        batch_size=batch_size or (GPU_BATCH if on_gpu else CPU_BATCH),
        workers=workers if workers is not None else (GPU_WORKERS if on_gpu else CPU_WORKERS),
        batch_cost=lambda item: item["tensors"][0].shape[-1] * item["tensors"][0].shape[-2],
        max_cost=BATCH_PIXELS,
    )
