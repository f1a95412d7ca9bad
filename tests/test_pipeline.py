"""gknet.inference.pipeline.run_batched: order, batching, overlap, and one bad item failing alone."""

from __future__ import annotations

import threading
import time

import pytest

from gknet.errors import GknetError
from gknet.inference.pipeline import run_batched


def _run(items, workers, batch_size=3, fail_load=(), fail_compute=(), fail_save=(), **kwargs):
    batches, saved = [], {}

    def load(item):
        if item in fail_load:
            raise GknetError(f"cannot load {item}")
        return item * 10

    def compute(values):
        batches.append(list(values))
        if any(v // 10 in fail_compute for v in values):
            raise GknetError("bad batch")
        return [v + 1 for v in values]

    def save(item, result):
        if item in fail_save:
            raise GknetError(f"cannot save {item}")
        saved[item] = result

    out = list(run_batched(items, load, compute, save, batch_size=batch_size, workers=workers, **kwargs))
    return out, batches, saved


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_every_item_once_in_order_with_its_own_error(workers):
    items = list(range(10))
    out, batches, saved = _run(items, workers, fail_load={2}, fail_compute={5}, fail_save={8})
    assert [item for item, _ in out] == items
    errors = {item: str(error) for item, error in out if error is not None}
    assert errors == {2: "cannot load 2", 5: "bad batch", 8: "cannot save 8"}
    assert saved == {i: i * 10 + 1 for i in items if i not in errors}
    # batches of 3 loaded items; the one holding item 5 is retried item by item
    assert batches[0] == [0, 10, 30] and [50] in batches and [60] in batches
    assert all(len(b) <= 3 for b in batches)


def test_batches_close_at_the_cost_limit():
    out, batches, _ = _run(list(range(6)), 2, batch_size=4, batch_cost=lambda v: v, max_cost=25)
    assert [b for b in batches] == [[0, 10, 20], [30], [40], [50]]
    assert all(error is None for _, error in out)


def test_loading_and_saving_overlap_the_computation():
    """While batch k computes, the worker threads load batch k+1 and save batch k-1."""
    events, lock = [], threading.Lock()

    def log(kind, value):
        with lock:
            events.append((kind, value, threading.current_thread() is threading.main_thread()))

    def load(item):
        time.sleep(0.01)
        log("load", item)
        return item

    def compute(values):
        time.sleep(0.05)
        log("compute", tuple(values))
        return values

    def save(item, _result):
        log("save", item)

    list(run_batched(range(8), load, compute, save, batch_size=2, workers=2))
    assert all(main for kind, _, main in events if kind == "compute")
    assert not any(main for kind, _, main in events if kind != "compute")
    first_compute = events.index(("compute", (0, 1), True))
    assert any(kind == "load" and value >= 2 for kind, value, _ in events[: first_compute + 1])


def test_unexpected_exceptions_propagate_and_arguments_are_checked():
    def load(item):
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        list(run_batched([1], load, lambda v: v, lambda i, r: None, workers=2))
    with pytest.raises(GknetError, match="batch size >= 1"):
        list(run_batched([1], load, lambda v: v, lambda i, r: None, batch_size=0))


def test_a_folder_harmonized_through_the_library_equals_one_file_at_a_time(tmp_path, tiny_release):
    """gknet.inference.files: what `gknet harmonize` runs in folder and single-file mode."""
    import numpy as np
    from PIL import Image

    from gknet import Harmonizer
    from gknet.inference.files import FileOptions, folder_jobs, harmonize_file, harmonize_folder
    from tests.conftest import box_mask, random_rgb, write_image

    for stem, size in (("a", (60, 40)), ("b", (33, 47)), ("c", (20, 20))):
        write_image(tmp_path / "c" / f"{stem}.png", random_rgb(size, seed=len(stem + str(size))))
        if stem != "c":  # c has no mask
            write_image(tmp_path / "m" / f"{stem}.png", box_mask(size))
    harmonizer = Harmonizer.from_pretrained(tiny_release, resolution=32, device="cpu")
    options = FileOptions(compare=True)
    jobs, unmatched = folder_jobs(tmp_path / "c", tmp_path / "m", tmp_path / "out", options)
    assert [job[2].name for job in jobs] == ["a.png", "b.png"] and [p.name for p, _ in unmatched] == ["c.png"]
    assert [error for _, error in harmonize_folder(harmonizer, jobs, options, batch_size=2)] == [None, None]
    for composite, mask, out in jobs:
        one = harmonize_file(harmonizer, (composite, mask, tmp_path / out.name), options)
        assert [p.name for p in one] == [out.name, f"{out.stem}_compare.jpg"]
        assert (out.parent / f"{out.stem}_compare.jpg").is_file()
        a, b = (np.asarray(Image.open(p), np.int16) for p in (out, one[0]))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1  # batch of 2 vs 1: float rounding
    failed = list(harmonize_folder(harmonizer, jobs, options))  # the outputs exist now
    assert all(error is not None and "output exists" in str(error) for _, error in failed)
    with pytest.raises(GknetError, match="threshold"):
        FileOptions(threshold=2)
