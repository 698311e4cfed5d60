"""Infinite-width NNGP + NTK, ReLU, depth 4, float64, x of shape (N, 784): time against the floor.

The floor, measured in the same run on the same inputs: one x x^T product plus one arccos and
one sqrt pass over an N x N matrix per hidden layer (into preallocated outputs), which any
implementation of the recursion must do. neural-tangents (JAX) runs beside it when its venv is
present (docs/benchmarks.md says how to make it); its results are checked against ours too.

    .venv/bin/python benchmarks/bench_kernels.py                    # N = 1000, 4000, 8000
    .venv/bin/python benchmarks/bench_kernels.py --n 2000 --repeats 5 --nt-python nt-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import torchntk as tn

DEPTH, BIAS_STD, D = 4, 0.1, 784

NT_SCRIPT = r"""
import sys, types, time, json, statistics
sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import numpy as np, jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
x = np.load(sys.argv[1]); repeats = int(sys.argv[2]); depth = int(sys.argv[3]); b = float(sys.argv[4])
layers = []
for i in range(depth):
    if i:
        layers.append(stax.Relu())
    layers.append(stax.Dense(1, W_std=1.0, b_std=b, parameterization="ntk"))
_, _, kernel_fn = stax.serial(*layers)
kernel_fn = jax.jit(kernel_fn, static_argnames="get")
xj = jax.numpy.asarray(x)
out = kernel_fn(xj, None, get=("nngp", "ntk")); out[1].block_until_ready()
times = []
for _ in range(repeats):
    t = time.perf_counter(); out = kernel_fn(xj, None, get=("nngp", "ntk")); out[1].block_until_ready()
    times.append(time.perf_counter() - t)
np.save(sys.argv[5], np.asarray(out[1])[:64, :64])
print(json.dumps({"median": statistics.median(times)}))
"""


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, thread pool
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_fn(x: torch.Tensor):
    n = x.shape[0]
    gram = torch.empty(n, n, dtype=x.dtype)
    buf = torch.empty_like(gram)
    corr = torch.empty_like(gram).uniform_(-1, 1)  # any values in [-1, 1]: arccos cost is data-independent
    squares = corr.abs()

    def run():
        torch.mm(x, x.T, out=gram)
        for _ in range(DEPTH - 1):
            torch.arccos(corr, out=buf)
            torch.sqrt(squares, out=buf)
    return run


def run_neural_tangents(python: str, x: np.ndarray, repeats: int) -> tuple[float, np.ndarray] | None:
    with tempfile.TemporaryDirectory() as tmp:
        xin, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "ntk.npy")
        np.save(xin, x)
        proc = subprocess.run([python, "-c", NT_SCRIPT, xin, str(repeats), str(DEPTH), str(BIAS_STD), out],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"neural-tangents failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])["median"], np.load(out, allow_pickle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 4000, 8000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=None, help="block side (default: the library's)")
    parser.add_argument("--nt-python", default=os.environ.get("NT_PYTHON", "nt-venv/bin/python"),
                        help="python of a venv with neural-tangents; '' to skip")
    args = parser.parse_args()
    spec = tn.mlp(DEPTH, "relu", bias_std=BIAS_STD)
    options = {} if args.tile is None else {"tile": args.tile}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ReLU depth {DEPTH}, float64, d = {D}, "
          f"median of {args.repeats}")
    print("| N | torchntk (s) | floor (s) | torchntk / floor | neural-tangents (s) | NT / torchntk "
          "| max rel. diff vs NT |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.n:
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((n, D)))
        ours = median_time(lambda x=x: spec.kernels(x, **options), args.repeats)
        floor = median_time(floor_fn(x), args.repeats)
        nt = run_neural_tangents(args.nt_python, x.numpy(), args.repeats) \
            if args.nt_python and os.path.exists(args.nt_python) else None
        if nt is None:
            nt_cols = "n/a | n/a | n/a"
        else:
            reference = spec.ntk(x[:64]).numpy()
            diff = np.abs(nt[1] - reference).max() / np.abs(reference).max()
            nt_cols = f"{nt[0]:.2f} | {nt[0] / ours:.2f}x | {diff:.1e}"
        print(f"| {n} | {ours:.2f} | {floor:.2f} | {ours / floor:.2f} | {nt_cols} |", flush=True)


if __name__ == "__main__":
    main()
