"""A kernel matrix larger than one wants in memory: computed into a store on disk, then solved.

N points on the sphere in 32 dimensions, a smooth target plus noise. `tn.kernel_matrix` writes
the depth-4 ReLU NTK tile by tile into a zarr store (resumable: a second call computes nothing);
conjugate gradients then solve (K + ridge I) a = y, streaming the tiles, with and without the
Nystrom preconditioner. The figure shows the relative residual per iteration: the
preconditioner is what makes large ill-conditioned kernels solvable in few passes over the disk.

    python docs/examples/large_store.py               # N = 8,000 (a 256 MB float32 store)
    python docs/examples/large_store.py --small       # N = 600, seconds (what the tests run)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import torchntk as tn
from torchntk.scale import conjugate_gradients


def run(small: bool, out: Path, store_dir: Path | None = None) -> dict:
    n, tile, rank = (600, 256, 64) if small else (8000, 2048, 512)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.sin(3 * x[:, :1]) + 0.1 * rng.standard_normal((n, 1))
    spec = tn.mlp(depth=4, activation="relu", bias_std=0.1)

    with tempfile.TemporaryDirectory(dir=store_dir) as folder:
        store = Path(folder) / "K.zarr"
        start = time.perf_counter()
        K = tn.kernel_matrix(spec, x, store=store, tile=tile, progress=not small)
        seconds = time.perf_counter() - start
        resumed = tn.kernel_matrix(spec, x, store=store, tile=tile, progress=False)
        assert resumed.summary.computed == 0  # everything was already on disk
        histories = {}
        for name, preconditioner in (("Nystrom preconditioner", "nystrom"), ("no preconditioner", None)):
            history = []
            result = conjugate_gradients(K, y, ridge=1e-3, tol=1e-6, max_iter=400, preconditioner=preconditioner,
                                         rank=rank, callback=lambda i, r, h=history: h.append(float(r.max())))
            histories[name] = (history, result)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (history, result) in histories.items():
        ax.semilogy(range(1, len(history) + 1), history,
                    label=f"{name}: {result.iterations} iterations, {result.seconds:.1f} s")
    ax.axhline(1e-6, color="k", lw=0.8, ls=":")
    ax.set(xlabel="CG iteration", ylabel="relative residual",
           title=f"(K + 1e-3 I) a = y, N = {n:,}; kernel into the store in {seconds:.1f} s")
    ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "large_store.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    for name, (_, result) in histories.items():
        print(f"{name}: {result.iterations} iterations, converged {result.converged}")
    print(f"kernel of N = {n}: {seconds:.1f} s into the store; figure: {path}")
    return {"figure": path, "iterations": {k: v[1].iterations for k, v in histories.items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    parser.add_argument("--store-dir", type=Path, default=None, help="where the temporary store goes")
    args = parser.parse_args()
    run(args.small, args.out, args.store_dir)
