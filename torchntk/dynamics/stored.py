"""Gradient-flow means from a training kernel that does not fit in memory (a store on disk).

With Theta = Theta(X, X) held as tiles (``tn.kernel_matrix(spec, x, store=...)``, read by
`torchntk.scale.StoredKernel`) or recomputed tile by tile (`torchntk.scale.ComputedKernel`):

    finite t:  u_t = g_t(Theta_r) Y by block Lanczos (`krylov`): one pass over the tiles per step,
               one Krylov basis for every time;
    t = inf:   u = Theta_r^-1 Y by conjugate gradients with the Nystrom preconditioner
               (`torchntk.scale.conjugate_gradients`);
    test:      mean_t(x) = Theta(x, X) u_t for all times at once, from a stored test-train kernel
               (``kernel_matrix(spec, x_test, x_train, store=...)``) read tile by tile, or from the
               network description, recomputed tile by tile;
    train:     mean_t(X) = Theta u_t (returned by Lanczos; for t = inf, Y - ridge u).

Peak memory is the Lanczos basis, N (m + 1) k float64 numbers for m steps, plus a few tiles per
thread; never N^2. Covariances need the whole eigendecomposition and are not offered here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._progress import rich_progress
from ._checks import as_targets, as_times, check_ridge
from .krylov import lanczos_gain
from .prediction import Prediction


@dataclass
class StoredReport:
    """What the out-of-core prediction did: Lanczos steps and error estimates per finite time,
    CG iterations and recomputed residuals at t = inf, and the seconds of each part."""

    lanczos_steps: int = 0
    lanczos_error: list[float] = field(default_factory=list)
    lanczos_seconds: float = 0.0
    cg_iterations: int = 0
    cg_residual: list[float] = field(default_factory=list)
    cg_seconds: float = 0.0
    test_seconds: float = 0.0


def predict_from_store(train_kernel: Any, y_train: Any, t: Any, *, ridge: float = 0.0, test_train: Any = None,
                       spec: Any = None, x_train: Any = None, x_test: Any = None, kind: str = "ntk",
                       tol: float = 1e-10, max_steps: int = 300, cg_tol: float = 1e-10, rank: int = 256,
                       seed: int = 0, tile: int = 4096, client: Any = None,
                       progress: bool = True) -> tuple[Prediction, StoredReport]:
    """Means of gradient flow at times ``t`` with the training kernel streamed from disk.

    Args:
        train_kernel: Theta(X, X) as a complete symmetric `KernelMatrix` (from ``kernel_matrix``),
            or an operator with ``shape`` and ``matmul`` (`StoredKernel`, `ComputedKernel`, or an
            in-memory tensor for tests).
        y_train: (N,) or (N, k) targets (the mean over initialisations; subtract f_0(X) for one
            network's trajectory).
        t: time or times (T,) in the paper's units (exp(-t Theta / N)); float("inf") for the limit.
        ridge: absolute, added to the diagonal (as in `GradientFlow`).
        test_train: Theta(x, X), shape (M, N): a `KernelMatrix` store (read tile by tile) or an
            array; or None with ``spec``, ``x_train``, ``x_test`` to recompute it tile by tile.
        kind: "ntk" or "nngp", which kernel ``spec`` recomputes for the test points.
        tol: Lanczos' target estimated relative error per time; max_steps: its step cap (each
            step is one pass over the tiles).
        cg_tol, rank, seed: conjugate gradients' relative residual target and Nystrom preconditioner.
        tile: block side when recomputing the test-train kernel; client: Dask client for products.
        progress: show progress bars (Lanczos steps, CG iterations) on stderr.

    Returns:
        (prediction with train_mean (T, N, k) and, with test kernels, mean (T, M, k); a `StoredReport`).

    Raises:
        ValueError: before any work, when the test kernel cannot belong to this training kernel:
            a test-train store, or ``spec``, ``x_train`` and ``kind``, that differ from what the
            training store's manifest records (the message names each difference).
        RuntimeError: when Lanczos or CG does not reach its tolerance (the report's figures are in
        the message); raise max_steps, or the ridge.
    """
    from ..scale.operators import as_operator
    from ..scale.solvers import conjugate_gradients

    operator = as_operator(train_kernel, client)
    n = operator.shape[0]
    ridge = check_ridge(ridge)
    if test_train is not None or x_test is not None:
        _check_test_kernel(operator, test_train, spec, x_train, kind, n)
    y = as_targets(y_train, n, torch.device("cpu"))
    times = as_times(t).cpu()
    infinite = torch.isinf(times)
    finite_index = (~infinite).nonzero().flatten()
    k = y.shape[1]
    report = StoredReport()
    gains = torch.empty(times.shape[0], n, k, dtype=torch.float64)
    fitted = torch.empty_like(gains)

    def apply(v: Tensor) -> Tensor:
        return operator.matmul(v, dtype=torch.float64) + ridge * v

    if finite_index.numel():
        start = time.perf_counter()
        with _bar(progress, "Lanczos steps (one pass over the tiles each)", max_steps) as bar:
            result = lanczos_gain(apply, y, times[finite_index], n, tol=tol, max_steps=max_steps,
                                  progress=bar.check, after_step=bar.step)
        report.lanczos_steps, report.lanczos_error = result.steps, [float(e) for e in result.error]
        report.lanczos_seconds = time.perf_counter() - start
        if not bool(result.converged.all()):
            raise RuntimeError(f"block Lanczos did not reach tol={tol:g} in {result.steps} steps (estimated errors "
                               f"{[f'{e:.1e}' for e in report.lanczos_error]}); raise max_steps (each step is one "
                               "pass over the tiles) or add a ridge.")
        gains[finite_index] = result.gain_y
        fitted[finite_index] = result.fitted - ridge * result.gain_y
    if bool(infinite.any()):
        start = time.perf_counter()
        with _bar(progress, "conjugate gradients (one pass over the tiles each)", None) as bar:
            solve = conjugate_gradients(operator, y, ridge=ridge, tol=cg_tol, rank=rank, seed=seed,
                                        client=client, callback=lambda i, r: bar.step(i))
        report.cg_iterations, report.cg_residual = solve.iterations, [float(r) for r in solve.residual]
        report.cg_seconds = time.perf_counter() - start
        if not solve.converged:
            raise RuntimeError(f"conjugate gradients did not converge: {solve!r}; add a ridge or raise cg_tol.")
        alpha = solve.solution.reshape(n, k)
        gains[infinite] = alpha
        fitted[infinite] = y - ridge * alpha
    pred = Prediction(t=times, train_mean=fitted, method="lanczos + cg (stored kernel)")
    if test_train is not None or x_test is not None:
        start = time.perf_counter()
        stacked = gains.permute(1, 0, 2).reshape(n, -1)  # (N, T k): one pass for every time
        product = _test_product(test_train, spec, x_train, x_test, kind, stacked, tile)
        pred.mean = product.reshape(-1, times.shape[0], k).permute(1, 0, 2).contiguous()
        report.test_seconds = time.perf_counter() - start
    pred.diagnostics = {"lanczos_steps": report.lanczos_steps, "lanczos_error": report.lanczos_error,
                        "cg_iterations": report.cg_iterations, "cg_residual": report.cg_residual}
    return pred, report


def _training_manifest(operator: Any) -> tuple[dict[str, Any], str, str] | None:
    """(manifest, kind, where) of the training kernel behind ``operator``: a store's own
    manifest, or the one a store of a `ComputedKernel`'s spec and inputs would have; None for
    an in-memory matrix, which records nothing to check against."""
    from ..scale.manifest import build_manifest
    from ..scale.operators import SpecTiles, StoreTiles, TiledKernel

    source = operator.source if isinstance(operator, TiledKernel) else None
    if isinstance(source, StoreTiles):
        return source.manifest, source.kind, f"the training store {source.path!r}"
    if isinstance(source, SpecTiles):
        manifest = build_manifest(source.spec, source.x, None, source.kind, source.tile, source.x.dtype)
        return manifest, source.kind, "the computed training kernel"
    return None


def _check_test_kernel(operator: Any, test_train: Any, spec: Any, x_train: Any, kind: str, n: int) -> None:
    """Refuse, before the long solves, a test kernel that cannot be Theta(x, X) for this training
    kernel's network, kind and training inputs X: a product of unrelated matrices has the right
    shape and is silently wrong."""
    from ..scale.manifest import describe_spec, fingerprint
    from ..scale.matrix import KernelMatrix

    if test_train is None:
        if spec is None or x_train is None:
            raise ValueError("test predictions need test_train (a store or an array), or spec, x_train and x_test "
                             "to recompute it.")
        if kind not in ("ntk", "nngp"):
            raise ValueError(f"kind must be 'ntk' or 'nngp', got {kind!r}.")
        rows = np.shape(x_train)[0] if np.ndim(x_train) else 0
        if rows != n:
            raise ValueError(f"x_train has {rows} rows but the training kernel has N = {n}.")
    elif not isinstance(test_train, KernelMatrix):
        shape = tuple(getattr(test_train, "shape", np.shape(test_train)))
        if len(shape) != 2 or shape[1] != n:
            raise ValueError(f"test_train must have shape (M, {n}); got {shape}.")
    record = _training_manifest(operator)
    if record is None or not (test_train is None or isinstance(test_train, KernelMatrix)):
        return
    manifest, train_kind, where = record
    if isinstance(test_train, KernelMatrix):
        stored = test_train.store.manifest
        # The test-train kernel's columns are the training inputs: x2 of a cross store, x of a
        # store of the training inputs against themselves.
        columns = stored["x"] if stored["symmetric"] else stored["x2"]
        given = {"kind": test_train.kind, "spec": stored["spec"], "dtype": stored["dtype"], "x": columns}
        what, fix = (f"the test-train store {test_train.path!r} does",
                     "compute it with the training store's spec, kind and dtype, and x2 = its training inputs")
    else:
        from .._inputs import as_pair_batches

        dtype = torch.float64 if manifest["dtype"] == "float64" else torch.float32
        columns = fingerprint(as_pair_batches(x_train, None, dtype)[0])
        given = {"kind": kind, "spec": describe_spec(spec), "dtype": manifest["dtype"], "x": columns}
        what = "spec, x_train and kind do"
        fix = "pass the spec, training inputs and kind that built the training kernel"
    wanted = {"kind": train_kind, "spec": manifest["spec"], "dtype": manifest["dtype"], "x": manifest["x"]}
    # Fingerprints include the dtype: inputs are comparable only in the same one.
    keys = ("kind", "spec", "dtype", "x") if given["dtype"] == wanted["dtype"] else ("kind", "spec", "dtype")
    from ..scale.manifest import differences

    diffs = differences(wanted, given, keys, sides=("training kernel has", "test kernel has"))
    if diffs:
        raise ValueError(f"{what} not match {where}, so Theta(x, X) would be the kernel of another "
                         "computation and the predictions silently wrong:\n  - " + "\n  - ".join(diffs)
                         + f"\nTo fix: {fix}.")


def _test_product(test_train: Any, spec: Any, x_train: Any, x_test: Any, kind: str, coef: Tensor,
                  tile: int) -> Tensor:
    """Theta(x, X) coef, never holding more than one (tile, tile) block of Theta(x, X)."""
    from ..scale.matrix import KernelMatrix

    n = coef.shape[0]
    if isinstance(test_train, KernelMatrix):
        m, cols = test_train.shape
        if cols != n:
            raise ValueError(f"test_train has {cols} columns but the training kernel has N = {n}.")
        side = test_train.tile
        out = torch.zeros(m, coef.shape[1], dtype=torch.float64)
        for r0 in range(0, m, side):
            for c0 in range(0, n, side):
                block = torch.from_numpy(np.ascontiguousarray(test_train[r0:r0 + side, c0:c0 + side]))
                out[r0:r0 + block.shape[0]] += block.to(torch.float64) @ coef[c0:c0 + block.shape[1]]
        return out
    if test_train is not None:
        block = torch.as_tensor(np.asarray(test_train) if not isinstance(test_train, Tensor) else test_train)
        if block.dim() != 2 or block.shape[1] != n:
            raise ValueError(f"test_train must have shape (M, {n}); got {tuple(block.shape)}.")
        return block.detach().cpu().to(torch.float64) @ coef
    if spec is None or x_train is None:
        raise ValueError("test predictions need test_train (a store or an array), or spec, x_train and x_test to "
                         "recompute it.")
    if kind not in ("ntk", "nngp"):
        raise ValueError(f"kind must be 'ntk' or 'nngp', got {kind!r}.")
    from .._inputs import as_batch
    from ..scale.regression import _cross_kernel_product

    xs, xt = as_batch(x_test, "x_test", torch.float64), as_batch(x_train, "x_train", torch.float64)
    if xt.shape[0] != n:
        raise ValueError(f"x_train has {xt.shape[0]} rows but the training kernel has N = {n}.")
    return _cross_kernel_product(spec, kind, xs.cpu(), xt.cpu(), coef, tile)


class _Bar:
    """A progress bar for iterations (each one pass over the tiles), or nothing when disabled."""

    def __init__(self, enabled: bool, label: str, total: int | None) -> None:
        self.enabled, self.label, self.total = enabled, label, total
        self._progress, self._task = None, None
        self._extra = ""

    def __enter__(self) -> _Bar:
        if self.enabled:
            self._progress = rich_progress(transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def step(self, steps: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=steps)

    def check(self, steps: int, error: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=steps, description=f"{self.label}, error {error:.1e}")


def _bar(enabled: bool, label: str, total: int | None) -> _Bar:
    return _Bar(enabled, label, total)
