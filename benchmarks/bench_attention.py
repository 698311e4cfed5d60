"""A transformer block's NNGP + NTK (float64) against neural-tangents, side by side in one run.

The block, on sequences (N, C, L) = (100, 16, 32) (neural-tangents: (N, L, C), channels last):

    Conv((1,))                                      embedding, each position alike
    x + SelfAttention(softmax)(x), then LayerNorm   attention with its residual branch
    x + Conv((1,)) ReLU Conv((1,)) (x), LayerNorm   the MLP with its residual branch
    GlobalAvgPool, Dense                            the readout

weight_std 1 and bias_std 0.1 everywhere, LayerNorm over the channels of each position. Two
cases: plain softmax attention, and the same with positional embeddings added to the keys'
input (positional="sum"). neural-tangents (a venv of its own, --nt-python) runs jit-compiled,
timed after a first call, on the same inputs; values are compared entry by entry, the
diagonal (each input with itself) apart from the rest: there neural-tangents' ReLU takes the
angle arctan2(sqrt(q q' - c^2), c) of round-off and may differ by up to ~1e-8 (tests/engine/test_attention.py).

The floor is what any implementation of this block must compute, timed in torch in its best
layout: for the NNGP and the NTK, the attention's G(x) K(x, x') G(x')^T over the P x P
covariances of the N (N + 1) / 2 pairs of a symmetric kernel (two batched GEMMs each), and one
arc-cosine pass over the ReLU's correlations. The layer norms, residual sums, the ReLU's other
elementwise work and the readout are left out, so it sits below what is reachable.

    .venv/bin/python benchmarks/bench_attention.py --nt-python /path/to/nt-venv/bin/python
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
from machine import machine_line, median_time

import torchntk as tn

SHAPE = (100, 16, 32)
"""(N, C, L): inputs, channels, positions."""

BIAS_STD = 0.1
QUERY_KEY_STD = 1.0     # neural-tangents' W_query_std * W_key_std
POSITIONAL_STD = 0.5

CASES = {"softmax": None, "positional": "sum"}
"""Case name -> SelfAttention's ``positional``."""

NT_SCRIPT = r"""
import sys, types, time, json, statistics
sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import numpy as np, jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
x = np.transpose(np.load(sys.argv[1]), (0, 2, 1)); positional = sys.argv[2] == "sum"; repeats = int(sys.argv[3])
bias_std, qk, pos_std = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
width = x.shape[-1]
def conv():
    return stax.Conv(width, (1,), W_std=1.0, b_std=bias_std, parameterization="ntk")
def residual(branch):
    return stax.serial(stax.FanOut(2), stax.parallel(branch, stax.Identity()), stax.FanInSum(), stax.LayerNorm(axis=-1))
embeddings = {"pos_emb_type": "SUM", "W_pos_emb_std": pos_std} if positional else {}
attention = stax.GlobalSelfAttention(width, width, width, 4, linear_scaling=True, W_key_std=qk, W_query_std=1.0,
                                     W_value_std=1.0, W_out_std=1.0, b_std=bias_std, attention_mechanism="SOFTMAX",
                                     **embeddings)
_, _, kernel_fn = stax.serial(conv(), residual(attention), residual(stax.serial(conv(), stax.Relu(), conv())),
                              stax.GlobalAvgPool(), stax.Dense(1, W_std=1.0, b_std=bias_std, parameterization="ntk"))
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


def block(positional: str | None) -> tn.Serial:
    """The transformer block of the module docstring, in torchntk."""
    def conv():
        return tn.Conv((1,), bias_std=BIAS_STD)

    def residual(*branch):
        return tn.serial(tn.FanOut(2), tn.parallel(tn.serial(*branch), tn.Identity()), tn.FanInSum(), tn.LayerNorm())
    attention = tn.SelfAttention(mechanism="softmax", query_key_std=QUERY_KEY_STD, value_std=1.0, bias_std=BIAS_STD,
                                 positional=positional, positional_std=POSITIONAL_STD)
    return tn.serial(conv(), residual(attention), residual(conv(), tn.ReLU(), conv()), tn.GlobalAvgPool(),
                     tn.Dense(bias_std=BIAS_STD))



def floor_fn(n: int, positions: int, dtype: torch.dtype, seed: int = 0):
    """The floor's work (module docstring) on random data of the right sizes (the cost of a GEMM
    or an arccos does not depend on the values). For each kernel, G K G^T over the pairs (i, j),
    i <= j, as the two largest GEMMs it splits into: per column j, K(x_i, x_j) G(x_j)^T for all
    i <= j at once, ((j + 1) P, P) by (P, P); per row i, G(x_i) times all of (i, j >= i),
    (P, P) by (P, (N - i) P). Each GEMM reads a buffer already in its layout: the transposition
    between the two is left out, so this is below any implementation's cost."""
    gen = torch.Generator().manual_seed(seed)
    p2, pairs = positions * positions, n * (n + 1) // 2
    g = torch.rand(n, positions, positions, generator=gen, dtype=dtype)
    data = torch.rand(pairs * p2, generator=gen, dtype=dtype)
    out = torch.empty_like(data)
    corr = torch.rand(pairs, positions, positions, generator=gen, dtype=dtype)

    def run():
        for _ in range(2):      # NNGP, NTK
            for j in range(n):
                size = (j + 1) * p2
                torch.mm(data[:size].view(-1, positions), g[j].T, out=out[:size].view(-1, positions))
            for i in range(n):
                size = (n - i) * p2
                torch.mm(g[i], data[:size].view(positions, -1), out=out[:size].view(positions, -1))
        torch.arccos(corr, out=corr)
    return run


def run_neural_tangents(python: str, x: np.ndarray, positional: str | None, repeats: int, threads: int):
    """(median time, NNGP, NTK) from neural-tangents on ``threads`` cores (XLA's CPU backend has
    no thread count of its own: the subprocess is pinned to that many cores, and with one its
    Eigen thread pool is turned off), or None if it failed."""
    cores = sorted(os.sched_getaffinity(0))[:threads]
    env = dict(os.environ)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    with tempfile.TemporaryDirectory() as tmp:
        xin, out = os.path.join(tmp, "x.npy"), os.path.join(tmp, "k.npz")
        np.save(xin, x)
        proc = subprocess.run([python, "-c", NT_SCRIPT, xin, str(positional), str(repeats), out, str(BIAS_STD),
                               str(QUERY_KEY_STD), str(POSITIONAL_STD)], capture_output=True, text=True, env=env,
                              preexec_fn=lambda: os.sched_setaffinity(0, cores))
        if proc.returncode != 0:
            print(f"neural-tangents failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
        data = np.load(out, allow_pickle=False)
        return json.loads(proc.stdout.strip().splitlines()[-1])["median"], data["nngp"], data["ntk"]


def relative_differences(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """Max |ours - theirs| / max |ours|, off the diagonal and on it."""
    scale = np.abs(ours).max()
    diff = np.abs(ours - theirs)
    on = np.eye(ours.shape[0], dtype=bool)
    return diff[~on].max() / scale, diff[on].max() / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--nt-python", default=os.environ.get("NT_PYTHON", "nt-venv/bin/python"),
                        help="python of a venv with neural-tangents 0.6.5; '' to skip")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch's intra-op threads, and the cores neural-tangents runs on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; {machine_line()}; neural-tangents on {args.threads} core(s)")
    print(f"(N, C, L) = {SHAPE}, NNGP + NTK, float64, "
          f"median of {args.repeats}")
    x = np.random.default_rng(0).standard_normal(SHAPE)
    xt = torch.from_numpy(x)
    floor = median_time(floor_fn(SHAPE[0], SHAPE[2], torch.float64), args.repeats)
    print("| case | torchntk (s) | floor (s) | torchntk / floor | neural-tangents (s) | NT / torchntk "
          "| max rel. diff NNGP (off-diag., diag.) | NTK (off-diag., diag.) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.cases:
        spec = block(CASES[name])
        out = {}

        def call(spec=spec, out=out):
            out["kernels"] = spec.kernels(xt)
        ours = median_time(call, args.repeats)
        nt = run_neural_tangents(args.nt_python, x, CASES[name], args.repeats, args.threads) \
            if args.nt_python and os.path.exists(args.nt_python) else None
        if nt is None:
            cols = "n/a | n/a | n/a | n/a"
        else:
            (dn_off, dn_on), (dt_off, dt_on) = (relative_differences(k.numpy(), theirs)
                                                for k, theirs in zip(out["kernels"], nt[1:], strict=True))
            cols = f"{nt[0]:.2f} | {nt[0] / ours:.2f}x | {dn_off:.1e}, {dn_on:.1e} | {dt_off:.1e}, {dt_on:.1e}"
        print(f"| {name} | {ours:.2f} | {floor:.2f} | {ours / floor:.2f} | {cols} |", flush=True)
    print(f"\nat the end: {machine_line()}")


if __name__ == "__main__":
    main()
