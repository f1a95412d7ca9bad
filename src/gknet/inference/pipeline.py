"""Batched processing of many files with loading and saving overlapped with the computation.

``run_batched(items, load, compute, save)`` loads items in worker threads, hands them to
``compute`` in batches in the calling thread (where the model runs, on all of torch's
threads), and saves the results in the worker threads while the next batch computes.
Image decoding and encoding (Pillow, zlib) and torch release the GIL, so on a CPU the
three stages really run at the same time.

A :class:`~gknet.errors.GknetError` raised for one item fails that item only; a batch whose
computation fails is retried one item at a time so that one bad input does not take its
batch with it. Memory stays bounded: at most ``batch_size + max(workers, 1)`` loaded items
and ``workers`` pending saves exist at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

from gknet.errors import GknetError


def _run(fn, *args) -> Future:
    """``fn(*args)`` as an already finished future (the ``workers=0`` executor)."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as exc:  # delivered to the caller by future.result()
        future.set_exception(exc)
    return future


def run_batched(
    items: Iterable[Any],
    load: Callable[[Any], Any],
    compute: Callable[[list[Any]], list[Any]],
    save: Callable[[Any, Any], None],
    batch_size: int = 8,
    workers: int = 2,
    batch_cost: Callable[[Any], float] | None = None,
    max_cost: float = float("inf"),
) -> Iterator[tuple[Any, GknetError | None]]:
    """Yield ``(item, error or None)`` for every item, in input order, once it is saved (or failed).

    ``load(item)`` and ``save(item, result)`` run in ``workers`` threads (0: everything runs
    in this thread, nothing overlaps); ``compute(loaded_list)`` returns one result per
    loaded value. A batch closes at ``batch_size`` items or once the ``batch_cost`` of its
    loaded values (e.g. their pixels) reaches ``max_cost``.
    """
    if batch_size < 1 or workers < 0:
        raise GknetError(f"need batch size >= 1 and workers >= 0, got {batch_size} and {workers}")
    with ThreadPoolExecutor(workers) if workers else nullcontext() as pool:
        submit = pool.submit if pool else _run
        pending = iter(items)
        loads: deque[tuple[Any, Future]] = deque()
        saves: deque[tuple[Any, Future | GknetError]] = deque()

        def fill() -> None:  # keep the next loads running while this batch computes
            while len(loads) < max(workers, 1):
                item = next(pending, _END)
                if item is _END:
                    return
                loads.append((item, submit(load, item)))

        def finished(limit: int) -> Iterator[tuple[Any, GknetError | None]]:
            while len(saves) > limit:
                item, job = saves.popleft()
                yield item, job if isinstance(job, GknetError) else _error_of(job)

        fill()
        while loads:
            entries, batch, cost = [], [], 0.0  # entries: every item of the batch, failed loads included
            while loads and len(batch) < batch_size and cost < max_cost:
                item, job = loads.popleft()
                error = _error_of(job)
                entries.append((item, error))
                if error is None:
                    batch.append((item, job.result()))
                    cost += batch_cost(batch[-1][1]) if batch_cost else 0.0
                fill()
            computed = iter(_compute(compute, batch))
            for item, error in entries:
                result = error or next(computed)[1]
                saves.append((item, result if isinstance(result, GknetError) else submit(save, item, result)))
            yield from finished(workers)
        yield from finished(0)


def _compute(compute, batch: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """(item, result or GknetError) for each loaded item of the batch."""
    if not batch:
        return []
    try:
        results = compute([value for _, value in batch])
    except GknetError as exc:
        if len(batch) == 1:
            return [(batch[0][0], exc)]
        return [pair for one in batch for pair in _compute(compute, [one])]
    return [(item, result) for (item, _), result in zip(batch, results, strict=True)]


def _error_of(job: Future) -> GknetError | None:
    """The GknetError the job raised, None if it succeeded; any other exception propagates."""
    exc = job.exception()
    if exc is None:
        return None
    if isinstance(exc, GknetError):
        return exc
    raise exc


_END = object()
