"""
Independent runs side by side (`--jobs N`): each in a process of its own, with its own port and
output directory, results returned in the order they were asked for, so `--jobs 4` reports
exactly what `--jobs 1` would.

Processes, not threads: a run forks servers (with a `preexec_fn`), which is unsafe while other
threads of the same process may hold locks. The `spawn` start method gives each worker a clean
interpreter.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_jobs() -> int:
    """One run per CPU the process may use (a run is mostly its server's own work)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def run_all(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    *,
    jobs: int,
    stop: Callable[[Result], bool] | None = None,
) -> Iterator[Result]:
    """
    `function(item)` for every item, at most `jobs` at a time, yielded in the order of `items`.
    With `stop`, nothing new is started once a yielded result satisfies it; runs already started
    finish and are yielded after it. `function` must be importable (a module-level function) for
    the worker processes to find it.
    """
    pending = list(items)
    if jobs <= 1:
        for item in pending:
            result = function(item)
            yield result
            if stop is not None and stop(result):
                return
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures: list[Future[Result]] = []
        index = 0
        stopped = False
        while index < len(pending) or futures:
            while not stopped and index < len(pending) and len(futures) < jobs:
                futures.append(pool.submit(function, pending[index]))
                index += 1
            if not futures:
                break
            result = futures.pop(0).result()
            yield result
            if stop is not None and stop(result):
                stopped = True
                for future in futures:
                    future.cancel()
                for future in futures:
                    if not future.cancelled():
                        yield future.result()
                return
