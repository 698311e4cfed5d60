"""Convolutional NNGP + NTK (float64) against neural-tangents, side by side in one run.

The network: 3 conv layers (3x3 filters, "same" padding, bias_std 0.1) with ReLU between and
after, then a readout and a Dense layer. Two cases, the readouts neural-tangents needs the
most memory and time for:
- GlobalAvgPool on (100, 1, 8, 8): needs covariances between all pairs of positions;
- Flatten on (500, 1, 28, 28): needs each position with itself only.
neural-tangents (a venv of its own, --nt-python) runs jit-compiled, timed after a first call,
on the same inputs transposed to its channels-last layout; values are compared on every entry.
With --baseline DIR (a checkout of an earlier torchntk) the same call also runs there, in
alternating subprocesses (benchmarks/baseline.py), and the table gives this checkout over it.
Then peak memory (ru_maxrss) of a GlobalAvgPool kernel at N = 1000 on 8x8 inputs, in a
subprocess of its own so that nothing else counts.

The floor, measured in the same run, is the least work this covariance structure needs, in plain
torch on operands already in place: over the N (N + 1) / 2 pairs of a symmetric kernel, at each
pair of positions the kernels need (each position with itself for Flatten: (H, W); every pair
of positions for GlobalAvgPool: (H, W, H, W)), the first layer's products of the inputs; for
each of the three convolutions, its 3 x 3 window as two separable 3-term sums (along each
spatial axis, on the NNGP and on the NTK); and for each ReLU one arccos and one square-root pass
over the NNGP's entries and one product for the NTK, in chunks of pairs of the library's tile
size. Padding copies, the variances, the bias terms and the readout are left out, so no
implementation can go below it.

    .venv/bin/python benchmarks/bench_arch.py
    .venv/bin/python benchmarks/bench_arch.py --baseline ../release --nt-python /path/to/nt-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from baseline import compare_checkouts
from machine import median_time

import torchntk as tn

CASES = {"gap": ((100, 1, 8, 8), "GlobalAvgPool"), "flatten": ((500, 1, 28, 28), "Flatten")}

NT_SCRIPT = r"""
import sys, types, time, json, statistics
sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import numpy as np, jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
x = np.transpose(np.load(sys.argv[1]), (0, 2, 3, 1)); readout = sys.argv[2]; repeats = int(sys.argv[3])
layers = []
for _ in range(3):
    layers += [stax.Conv(1, (3, 3), padding="SAME", W_std=1.0, b_std=0.1, parameterization="ntk"), stax.Relu()]
layers += [stax.GlobalAvgPool() if readout == "GlobalAvgPool" else stax.Flatten(),
           stax.Dense(1, W_std=1.0, b_std=0.1, parameterization="ntk")]
_, _, kernel_fn = stax.serial(*layers)
kernel_fn = jax.jit(kernel_fn, static_argnames="get")
xj = jax.numpy.asarray(x)
out = kernel_fn(xj, None, get=("nngp", "ntk")); out[1].block_until_ready()
times = []
for _ in range(repeats):
    t = time.perf_counter(); out = kernel_fn(xj, None, get=("nngp", "ntk")); out[1].block_until_ready()
    times.append(time.perf_counter() - t)
np.savez(sys.argv[4], nngp=np.asarray(out[0]), ntk=np.asarray(out[1]))
print(json.dumps({"median": statistics.median(times)}))
"""

MEMORY_SCRIPT = r"""
import resource, sys, numpy as np, torchntk as tn
sys.path.insert(0, sys.argv[2])
from bench_arch import cnn
x = np.random.default_rng(0).standard_normal((int(sys.argv[1]), 1, 8, 8))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cnn("GlobalAvgPool").kernels(x)
print(before / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


CNN_CODE = ("tn.serial(*[layer for _ in range(3) for layer in (tn.Conv((3, 3), padding='same', bias_std=0.1), "
            "tn.ReLU())], tn.GlobalAvgPool() if {gap} else tn.Flatten(), tn.Dense(bias_std=0.1))")
"""`cnn` as an expression, for the subprocesses of benchmarks/baseline.py."""


def cnn(readout: str):
    layers = []
    for _ in range(3):
        layers += [tn.Conv((3, 3), padding="same", bias_std=0.1), tn.ReLU()]
    return tn.serial(*layers, tn.GlobalAvgPool() if readout == "GlobalAvgPool" else tn.Flatten(),
                     tn.Dense(bias_std=0.1))


def floor_fn(shape: tuple[int, ...], readout: str, tile_bytes: int = 2 * 2**20):
    """A zero-argument function doing the floor's work (module docstring) for inputs of ``shape``,
    in chunks of pairs whose tensors are ``tile_bytes`` each (as the library's tiles are), so that
    the floor is computed from cache as the library's tiles are, and its memory stays small."""
    n, _, h, w = shape
    pairs = n * (n + 1) // 2
    full = readout == "GlobalAvgPool"
    # each spatial axis is one dim (Flatten: a position with itself) or two (GlobalAvgPool: p and q)
    axes = ((1, 2), (3, 4)) if full else ((1,), (2,))
    sizes = (h, h, w, w) if full else (h, w)
    chunk = max(1, min(pairs, tile_bytes // (8 * math.prod(sizes))))
    padded = [torch.rand(chunk, *(s + 2 for s in sizes), dtype=torch.float64) for _ in range(2)]
    half = [torch.empty(chunk, *(s if d in axes[0] else s + 2 for d, s in enumerate(sizes, 1)),
                        dtype=torch.float64) for _ in range(2)]
    out = [torch.empty(chunk, *sizes, dtype=torch.float64) for _ in range(2)]
    corr = torch.empty_like(out[0]).uniform_(-1, 1)   # arccos' cost does not depend on the values
    squares, buf = corr.abs(), torch.empty_like(corr)
    x = torch.rand(n, *sizes, dtype=torch.float64)
    rows, cols = torch.triu_indices(n, n)
    starts = range(0, pairs - chunk + 1, chunk)        # whole chunks: at most one chunk short of all pairs

    def window(src: torch.Tensor, dst: torch.Tensor, dims: tuple[int, ...]) -> None:
        """dst = the sum of src's 3 shifts along ``dims`` together (for (p, q): a diagonal shift)."""
        def shift(a: int) -> torch.Tensor:
            return src[(slice(None), *(slice(a, a + dst.shape[d]) if d in dims else slice(None)
                                       for d in range(1, src.dim())))]
        torch.add(shift(0), shift(1), out=dst)
        dst.add_(shift(2))

    def run() -> None:
        for start in starts:
            pair = slice(start, start + chunk)
            torch.mul(x[rows[pair]], x[cols[pair]], out=buf)   # the first layer's x(p) x'(q) of each pair
            for layer in range(3):
                for k in range(2 if layer else 1):             # the NTK is the NNGP at the first layer
                    window(padded[k], half[k], axes[0])
                    window(half[k], out[k], axes[1])
                torch.arccos(corr, out=buf)                    # the ReLU's map
                torch.sqrt(squares, out=buf)
                out[1].mul_(corr)
    return run



def run_neural_tangents(python: str, x: np.ndarray, readout: str, repeats: int):
    with tempfile.TemporaryDirectory() as tmp:
        xin, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "k.npz")
        np.save(xin, x)
        proc = subprocess.run([python, "-c", NT_SCRIPT, xin, readout, str(repeats), out], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            print(f"neural-tangents failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
        data = np.load(out, allow_pickle=False)
        return json.loads(proc.stdout.strip().splitlines()[-1])["median"], data["nngp"], data["ntk"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating subprocesses per checkout")
    parser.add_argument("--baseline", default=None, help="root of an earlier torchntk checkout to compare with")
    parser.add_argument("--nt-python", default=os.environ.get("NT_PYTHON", "nt-venv/bin/python"),
                        help="python of a venv with neural-tangents 0.6.5; '' to skip")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; median of {args.repeats}, float64")
    print("| case | torchntk (s) | baseline (s) | torchntk / baseline | floor (s) | torchntk / floor "
          "| neural-tangents (s) | NT / torchntk | max rel. diff (NNGP, NTK) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    here = os.path.dirname(os.path.abspath(__file__))
    checkouts = {"torchntk": os.path.dirname(here), **({"baseline": args.baseline} if args.baseline else {})}
    for shape, readout in CASES.values():
        x = np.random.default_rng(0).standard_normal(shape)
        spec = cnn(readout)
        xt = torch.from_numpy(x)
        results = compare_checkouts(CNN_CODE.format(gap=readout == "GlobalAvgPool"), x, {"dtype": "float64"},
                                    checkouts, repeats=args.repeats, rounds=args.rounds)
        ours = results["torchntk"][0]
        if "baseline" in results:
            if not np.allclose(results["torchntk"][1], results["baseline"][1], rtol=1e-12, atol=0):
                raise SystemExit(f"{readout}: the checkouts' kernels differ")
            base = f"{results['baseline'][0]:.2f} | {ours / results['baseline'][0]:.3f}"
        else:
            base = "n/a | n/a"
        nt = run_neural_tangents(args.nt_python, x, readout, args.repeats) \
            if args.nt_python and os.path.exists(args.nt_python) else None
        if nt is None:
            cols = "n/a | n/a | n/a"
        else:
            k, t = spec.kernels(xt)
            diff = (np.abs(nt[1] - k.numpy()).max() / np.abs(k.numpy()).max(),
                    np.abs(nt[2] - t.numpy()).max() / np.abs(t.numpy()).max())
            cols = f"{nt[0]:.2f} | {nt[0] / ours:.2f}x | {diff[0]:.1e}, {diff[1]:.1e}"
        floor = median_time(floor_fn(shape, readout), args.repeats)
        print(f"| {readout} {shape} | {ours:.2f} | {base} | {floor:.2f} | {ours / floor:.2f} | {cols} |", flush=True)
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(args.memory_n), here], capture_output=True,
                          text=True, check=True)
    before, peak = map(float, proc.stdout.split())
    print(f"\npeak resident memory, GlobalAvgPool CNN kernel on ({args.memory_n}, 1, 8, 8): {peak:.0f} MiB "
          f"({before:.0f} MiB after imports; the two (N, N) float64 outputs are "
          f"{2 * args.memory_n ** 2 * 8 / 2**20:.0f} MiB); load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
