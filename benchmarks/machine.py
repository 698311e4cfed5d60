"""The machine line every benchmark prints at its start and end: timings on a shared machine mean
little without the load average and the thread settings they were taken under."""

from __future__ import annotations

import os


def machine_line(extra_env: tuple[str, ...] = ()) -> str:
    """Load average (1, 5, 15 min), cores, torch's intra-op threads and the thread variables set."""
    import torch

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *extra_env)
    env = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in names)
    return (f"load average (1, 5, 15 min): {load}; cores: {os.cpu_count()}; torch threads: "
            f"{torch.get_num_threads()}; {env}")
