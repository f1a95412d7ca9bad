"""How the benchmarks measure: median times and peak memory, each in its own child process."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import math
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
# Time and memory are taken in separate child processes (see isolated), each under its own
# allocator setting from its start. Memory pass: every allocation over 128 KiB is mapped and
# returned on free, so the peak does not depend on what ran before (with glibc's drifting
# threshold freed blocks stay resident: the same measurement differed by 2x between runs).
# Timing that way is slow (each tensor faults its pages in again: 110 vs 64-69 ms for
# gknet_small at 256 px), so the time pass fixes the threshold at 32 MiB, where glibc's own
# drifting one ends up, and keeps it from drifting during the measurement.
MEMORY_MMAP_THRESHOLD = 128 * 1024
TIMING_MMAP_THRESHOLD = 32 * MIB
CHILD_TIMEOUT_S = 3600
MEMORY_PASS = False  # set in the child of a memory pass: measure() then takes the peak only


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
    process_runs: int  # whole `gknet` processes timed per end-to-end item
    folder_images: int  # composites of the folder-mode item (0 = all)
    train_batch: int = 8
    op_batch: int = 1
    kernel_size: int = 3
    threads: int = 0  # torch CPU threads; 0 = torch's default
    compile_training: bool = True  # also time a torch.compile'd training step (minutes to compile)
    # every precision x layout step; False: the baseline (fp32 contiguous) and the default only
    every_training_step: bool = True


def _peak_rss() -> int:
    """Resident high-water mark of this process in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _current_rss() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except OSError:  # no /proc: the high-water mark is the best lower bound we have
        return _peak_rss()


def _mmap_threshold(nbytes: int) -> None:
    """Serve glibc allocations over ``nbytes`` from their own mapping, unmapped on free."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, nbytes)


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


def measure(call, plan: Plan) -> dict:
    """Median time of ``call`` in a time pass; in a memory pass (MEMORY_PASS), the resident memory
    one call adds at its peak, after one warm-up call.

    The first warm-up call faults in code and builds one-time caches; the second calibrates
    how many calls make one sample, and counts as the first sample if it alone lasts
    ``plan.sample_s``.
    """
    call()
    if MEMORY_PASS:
        before = _start_memory_window()
        call()
        peak = _peak_rss()
        return {"peak_mib": max(peak - before, 0) / MIB, "process_peak_mib": peak / MIB}
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
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "runs": len(samples),
        "loops": loops,
        "threads": torch.get_num_threads(),
    }


def measure_steps(steps: dict, plan: Plan) -> dict[str, float]:
    """Median seconds of each step of a pipeline, run in order ``plan.repeats`` times (after one
    warm-up pass); each step receives the previous step's result (the first, None)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(plan.repeats + 1):
        value = None
        for name, step in steps.items():
            t0 = time.perf_counter()
            value = step(value)
            if repeat:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(samples) for name, samples in times.items()}


def time_process(command: list[str], runs: int, env: dict | None = None) -> dict:
    """Median wall time of a whole process (interpreter start-up included) and its peak RSS."""
    samples, peaks = [], []
    for _ in range(runs):
        with tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
            samples.append(time.perf_counter() - t0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode:
                err.seek(0)
                last = (err.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
                return {"error": f"exit code {proc.returncode}: {last}"}
        peaks.append(usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024))
    return {"median_s": statistics.median(samples), "runs": runs, "peak_rss_mib": max(peaks) / MIB}


def _child(conn, job, kwargs, memory: bool) -> None:
    global MEMORY_PASS
    MEMORY_PASS = memory
    _mmap_threshold(MEMORY_MMAP_THRESHOLD if memory else TIMING_MMAP_THRESHOLD)
    try:
        conn.send(("ok", job(**kwargs)))
    except BaseException:  # report every failure to the parent instead of dying silently
        conn.send(("error", traceback.format_exc(limit=3).strip().splitlines()[-1]))
    finally:
        conn.close()


def isolated(job, memory: bool = False, **kwargs) -> dict:
    """Run ``job(**kwargs)`` in a fresh child process: its result dict, or ``{"error": ...}``.

    ``memory``: a memory pass (see MEMORY_PASS). fork is cheap (torch is imported once, in
    the parent, which runs no torch op itself).
    """
    ctx = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, job, kwargs, memory))
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


def merged(timed: dict, memory: dict) -> dict:
    """A time pass's result with a memory pass's peaks added (nested dicts merged key by key;
    where both passes report a value, e.g. an export time, the time pass's is kept)."""
    out = {**memory, **timed}
    for key, value in timed.items():
        if isinstance(value, dict) and isinstance(memory.get(key), dict):
            out[key] = merged(value, memory[key])
    return out


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
