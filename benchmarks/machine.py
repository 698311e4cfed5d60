"""What every benchmark shares: the machine line it prints at its start and end (timings on a
shared machine mean little without the load average and the thread settings they were taken
under), and the median of repeated calls."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``fn``, after one untimed warm-up call
    (allocator, thread pool)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_line(extra_env: tuple[str, ...] = ()) -> str:
    """Load average (1, 5, 15 min), cores, torch's intra-op threads and the thread variables set."""
    import torch

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *extra_env)
    env = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in names)
    return (f"load average (1, 5, 15 min): {load}; cores: {os.cpu_count()}; torch threads: "
            f"{torch.get_num_threads()}; {env}")
