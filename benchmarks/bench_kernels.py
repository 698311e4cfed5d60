"""Infinite-width NNGP + NTK, ReLU, depth 4, x of shape (N, 784): time against the floor, the
last release and neural-tangents, in float64, float32 and with diagonal=True.

The floor, measured in the same run on the same inputs: one x x^T product plus one arccos and
one sqrt pass over an N x N matrix per hidden layer (into preallocated outputs), which any
implementation of the recursion must do (diagonal=True: the same per entry of the diagonal).
With --baseline DIR (a checkout of an earlier torchntk, e.g. ``git worktree add DIR 5726a8e`` for 0.1.0)
the same call runs in both checkouts, in alternating subprocesses (benchmarks/baseline.py), and
the table gives this checkout over the baseline. neural-tangents (JAX) runs beside them when its
venv is present (docs/benchmarks.md says how to make it); its results are checked against ours.

    .venv/bin/python benchmarks/bench_kernels.py                    # N = 1000, 4000, 8000
    .venv/bin/python benchmarks/bench_kernels.py --baseline ../release --nt-python ../nt-venv/bin/python
    .venv/bin/python benchmarks/bench_kernels.py --n 2000 --repeats 5 --modes float64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from baseline import compare_checkouts
from machine import median_time

DEPTH, BIAS_STD, D = 4, 0.1, 784

NT_SCRIPT = r"""
import sys, types, time, json, statistics
sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import numpy as np, jax
jax.config.update("jax_enable_x64", sys.argv[6] == "float64")
from neural_tangents import stax
x = np.load(sys.argv[1]); repeats = int(sys.argv[2]); depth = int(sys.argv[3]); b = float(sys.argv[4])
layers = []
for i in range(depth):
    if i:
        layers.append(stax.Relu())
    layers.append(stax.Dense(1, W_std=1.0, b_std=b, parameterization="ntk"))
_, _, kernel_fn = stax.serial(*layers)
kernel_fn = jax.jit(kernel_fn, static_argnames="get")
xj = jax.numpy.asarray(x if sys.argv[6] == "float64" else x.astype(np.float32))
out = kernel_fn(xj, None, get=("nngp", "ntk")); out[1].block_until_ready()
times = []
for _ in range(repeats):
    t = time.perf_counter(); out = kernel_fn(xj, None, get=("nngp", "ntk")); out[1].block_until_ready()
    times.append(time.perf_counter() - t)
np.save(sys.argv[5], np.asarray(out[1])[:64, :64].astype(np.float64))
print(json.dumps({"median": statistics.median(times)}))
"""



def floor_fn(x: torch.Tensor, diagonal: bool = False):
    n = x.shape[0]
    shape = (n,) if diagonal else (n, n)
    gram = torch.empty(shape, dtype=x.dtype)
    buf = torch.empty_like(gram)
    corr = torch.empty_like(gram).uniform_(-1, 1)  # any values in [-1, 1]: arccos cost is data-independent
    squares = corr.abs()

    def run():
        if diagonal:
            torch.sum(x * x, dim=1, out=gram)
        else:
            torch.mm(x, x.T, out=gram)
        for _ in range(DEPTH - 1):
            torch.arccos(corr, out=buf)
            torch.sqrt(squares, out=buf)
    return run


def run_neural_tangents(python: str, x: np.ndarray, repeats: int, dtype: str) -> tuple[float, np.ndarray] | None:
    with tempfile.TemporaryDirectory() as tmp:
        xin, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "ntk.npy")
        np.save(xin, x)
        proc = subprocess.run([python, "-c", NT_SCRIPT, xin, str(repeats), str(DEPTH), str(BIAS_STD), out, dtype],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"neural-tangents failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])["median"], np.load(out, allow_pickle=False)


MODES = {"float64": {"dtype": "float64"}, "float32": {"dtype": "float32"},
         "diagonal": {"dtype": "float64", "diagonal": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 4000, 8000])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per subprocess (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating subprocesses per checkout")
    parser.add_argument("--baseline", default=None, help="root of an earlier torchntk checkout to compare with")
    parser.add_argument("--nt-python", default=os.environ.get("NT_PYTHON", "nt-venv/bin/python"),
                        help="python of a venv with neural-tangents; '' to skip")
    args = parser.parse_args()
    spec_code = f"tn.mlp({DEPTH}, 'relu', bias_std={BIAS_STD})"
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkouts = {"torchntk": here, **({"baseline": args.baseline} if args.baseline else {})}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ReLU depth {DEPTH}, d = {D}; median of "
          f"{args.rounds} x {args.repeats} calls per checkout; load average {os.getloadavg()[0]:.2f}")
    print("| N | mode | torchntk (s) | baseline (s) | torchntk / baseline | floor (s) | torchntk / floor "
          "| neural-tangents (s) | NT / torchntk | max rel. diff vs NT |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.n:
        x64 = np.random.default_rng(0).standard_normal((n, D))
        for mode in args.modes:
            options = MODES[mode]
            x = x64 if options["dtype"] == "float64" else x64.astype(np.float32)
            results = compare_checkouts(spec_code, x, options, checkouts, repeats=args.repeats, rounds=args.rounds)
            ours, corner = results["torchntk"]
            if "baseline" in results:
                base, base_corner = results["baseline"]
                if not np.allclose(corner, base_corner, rtol=1e-5 if mode == "float32" else 1e-12, atol=0):
                    raise SystemExit(f"N = {n} {mode}: the checkouts' kernels differ")
                base_cols = f"{base:.3f} | {ours / base:.3f}"
            else:
                base_cols = "n/a | n/a"
            floor = median_time(floor_fn(torch.from_numpy(x), diagonal=mode == "diagonal"), args.repeats)
            nt = run_neural_tangents(args.nt_python, x64, args.repeats, options["dtype"]) \
                if args.nt_python and os.path.exists(args.nt_python) and mode != "diagonal" else None
            if nt is None:
                nt_cols = "n/a | n/a | n/a"
            else:
                diff = np.abs(nt[1] - corner).max() / np.abs(corner).max()
                nt_cols = f"{nt[0]:.2f} | {nt[0] / ours:.2f}x | {diff:.1e}"
            print(f"| {n} | {mode} | {ours:.3f} | {base_cols} | {floor:.3f} | {ours / floor:.2f} | {nt_cols} |",
                  flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
