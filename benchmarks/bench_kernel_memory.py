"""Temporary memory of the tiled kernel computation: peak resident memory beyond the inputs and
the two (N, N) outputs, which the tile size (not N) should bound.

Each measurement runs in a fresh subprocess (peak RSS is per process).

    .venv/bin/python benchmarks/bench_kernel_memory.py                 # N = 5000, 20000; ReLU depth 4, float64
    .venv/bin/python benchmarks/bench_kernel_memory.py --n 20000 --tile 256 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch, torchntk as tn
n, d, tile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
spec = tn.mlp(4, "relu", bias_std=0.1)
spec.kernels(x[:64])                      # load code paths before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
nngp, ntk = spec.kernels(x, tile=tile)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak": peak, "outputs": 2 * nngp.numel() * 8, "seconds": seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--tile", type=int, nargs="+", default=[512])
    args = parser.parse_args()
    print("| N | tile | outputs (GiB) | peak RSS beyond baseline (GiB) | temporaries (MiB) | time (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.n:
        for tile in args.tile:
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.d), str(tile)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            grown = r["peak"] - r["before"]
            temporaries = grown - r["outputs"]
            print(f"| {n} | {tile} | {r['outputs'] / 2**30:.2f} | {grown / 2**30:.2f} | "
                  f"{temporaries / 2**20:.0f} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
