"""Run independent experiments in worker processes, one per CPU core, with progress forwarded.

The experiments of `torchntk reproduce` share nothing but their settings and seed, and each
runs best on few threads (their matrices are small), so on a machine with c cores they run as
c single-threaded processes instead of one c-threaded process: on two cores the default run
takes about half the time. Workers are started with "spawn" (never fork a process holding
torch's thread pools) and report progress through a queue that the parent drains into its bars.
Every random draw is seeded from the run's seed, so the numbers do not depend on which worker
ran what.
"""

from __future__ import annotations

import os
import queue as queue_module
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from .progress import ProgressLike, Silent

_QUEUE: Any = None  # the worker's end of the progress queue (set by _init_worker)


def default_workers(jobs: int) -> int:
    """One worker per core, no more than there are jobs."""
    return max(1, min(jobs, os.cpu_count() or 1))


class _QueueTask:
    def __init__(self, key: str) -> None:
        self.key = key

    def advance(self, steps: int = 1) -> None:
        _QUEUE.put(("advance", self.key, steps))


class _QueueProgress:
    """A worker-side progress object: its tasks send their updates to the parent."""

    def __init__(self, job: str) -> None:
        self.job, self.count = job, 0

    def task(self, description: str, total: int) -> _QueueTask:
        self.count += 1
        key = f"{self.job}:{self.count}"
        _QUEUE.put(("task", key, (description, total)))
        return _QueueTask(key)


def _init_worker(progress_queue: Any, threads: int) -> None:
    global _QUEUE
    import torch

    _QUEUE = progress_queue
    torch.set_num_threads(threads)


def _call(job: str, function: Callable, args: tuple) -> Any:
    return function(*args, progress=_QueueProgress(job))


def _drain(progress_queue: Any, progress: ProgressLike, tasks: dict[str, Any]) -> None:
    while True:
        try:
            kind, key, payload = progress_queue.get_nowait()
        except queue_module.Empty:
            return
        if kind == "task":
            tasks[key] = progress.task(*payload)
        else:
            tasks[key].advance(payload)


def run_jobs(jobs: dict[str, tuple[Callable, tuple]], workers: int, threads: int,
             progress: ProgressLike | None = None) -> dict[str, Any]:
    """Run ``jobs`` = {name: (function, args)} as function(*args, progress=...) in ``workers``
    processes of ``threads`` torch threads each; returns {name: result}. Jobs are submitted in
    the given order (put the longest first). A job's exception is raised here."""
    import multiprocessing

    progress = progress or Silent()
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    tasks: dict[str, Any] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(progress_queue, threads)) as pool:
        futures = {pool.submit(_call, name, function, args): name for name, (function, args) in jobs.items()}
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_queue, progress, tasks)
        results = {futures[f]: f.result() for f in futures}
    _drain(progress_queue, progress, tasks)
    return results
