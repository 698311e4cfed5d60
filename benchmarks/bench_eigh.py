"""Float64 symmetric eigendecompositions on the CPU: torch's (MKL's LAPACK in the pip build)
against scipy's drivers (its bundled OpenBLAS LAPACK), on a kernel-like matrix, in one run.

    .venv/bin/python benchmarks/bench_eigh.py --n 2000 4000 --repeats 3

Prints the median of ``--repeats`` alternating calls of each, its ratio to torch's, and the largest
residual |K V - V diag(w)| / |K| of each result (all must be at round-off).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.linalg
import torch
from machine import machine_line


def _kernel(n: int) -> torch.Tensor:
    """An NTK-like positive definite matrix: a ReLU network's kernel has such a spread spectrum."""
    import torchntk as tn

    x = torch.randn(n, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return tn.mlp(depth=3).ntk(x)


def _residual(k: np.ndarray, w: np.ndarray, v: np.ndarray) -> float:
    return float(np.abs(k @ v - v * w).max() / np.abs(k).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_line())
    methods = {
        "torch.linalg.eigh": lambda k: tuple(t.numpy() for t in torch.linalg.eigh(torch.from_numpy(k))),
        "scipy evd": lambda k: scipy.linalg.eigh(k, driver="evd", check_finite=False),
        "scipy evr": lambda k: scipy.linalg.eigh(k, driver="evr", check_finite=False),
    }
    print(f"{'N':>6} {'method':>18} {'median (s)':>11} {'vs torch':>9} {'residual':>10}")
    for n in args.n:
        k = _kernel(n).numpy()
        times: dict[str, list[float]] = {name: [] for name in methods}
        residual = {}
        for _ in range(args.repeats):
            for name, f in methods.items():   # alternate, so that load changes hit all alike
                start = time.perf_counter()
                w, v = f(k)
                times[name].append(time.perf_counter() - start)
                residual[name] = _residual(k, w, v)
        base = statistics.median(times["torch.linalg.eigh"])
        for name in methods:
            median = statistics.median(times[name])
            print(f"{n:>6} {name:>18} {median:>11.2f} {median / base:>9.2f} {residual[name]:>10.1e}")
    print(machine_line())


if __name__ == "__main__":
    main()
