"""An ordered, bounded parallel map over worker processes.

Results come back in input order (so a parallel build equals a serial one byte for byte) and at
most `window` batches are in flight (so memory does not grow with the corpus). With one worker the
function runs inline, which is also what tests compare against.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, initializer: Callable[..., None],
    initargs: tuple[Any, ...] = (), window: int | None = None, send: Callable[[T], Any] | None = None,
) -> Iterator[tuple[T, R]]:
    """Yield (item, fn(send(item))) in input order, computed by `workers` spawned processes.

    `send` picks what crosses to the worker (default: the whole item), so the caller can keep
    the rest of an item in the main process without pickling it.
    """
    send = send or (lambda x: x)
    if workers <= 1:
        initializer(*initargs, in_pool=False)
        for item in items:
            yield item, fn(send(item))
        return
    window = window or 3 * workers
    # spawn, not fork: the parent may hold threads (torch, the Rust tokenizer pool) that fork would break
    ex = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer, initargs=initargs)
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            pending.append((item, ex.submit(fn, send(item))))
            if len(pending) >= window:
                head, fut = pending.popleft()
                yield head, fut.result()
        while pending:
            head, fut = pending.popleft()
            yield head, fut.result()
    except BaseException:  # Ctrl-C, an error, or the caller closing early: no result in flight is wanted
        _stop_workers(ex)
        raise
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _stop_workers(ex: ProcessPoolExecutor) -> None:
    """End the worker processes now instead of waiting for the batches they hold (seconds each)."""
    terminate = getattr(ex, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    # A feeder thread blocked writing a batch to the now dead workers would hang the shutdown: close
    # the parent's read end of that pipe so the write fails, as CPython does for a broken pool (gh-94777).
    queue = getattr(ex, "_call_queue", None)
    reader = getattr(queue, "_reader", None)
    if reader is not None:
        reader.close()
    # A worker ended half-way through sending its result leaves the pool's manager thread waiting in
    # recv for the rest of that message, and the shutdown waiting for it: close the parent's write end
    # of the result pipe too (the dead workers' ends are closed), so the manager reads EOF (a broken pool).
    writer = getattr(getattr(ex, "_result_queue", None), "_writer", None)
    if writer is not None:
        writer.close()
