"""Kernel regression with the infinite-width kernels for N too large for memory: the t = inf
prediction of gradient flow (NTK) or the GP posterior mean (NNGP).

With X the N training inputs, y their targets (N,) or (N, k), K = Theta(X, X) or Sigma(X, X):

    mean(x) = k(x, X) (K + ridge I)^-1 y

For kind="ntk" and ridge 0 this is the mean over initialisations of the trained network's output
at t = inf, Theta(x, X) Theta^-1 y (docs/conventions.md; the 1/N time scale drops out at t = inf); for
kind="nngp" it is the posterior mean of the GP prior f ~ GP(0, Sigma(L)) with noise variance
``ridge``. In-memory predictions at finite t live in `torchntk.dynamics`.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _side
from .._inputs import as_batch, check_dtype
from .compute import DEFAULT_STORE_TILE, kernel_matrix
from .operators import ComputedKernel, StoredKernel
from .solvers import SolveResult, cholesky_solve, conjugate_gradients
from .tiles import side_inputs_of

CHOLESKY_MAX_N = 16384
"""solver="auto" factors in memory up to this N (a 2 GiB float64 matrix), and uses CG above."""


def _cross_kernel_product(spec: Any, kind: str, x_test: Tensor, x_train: Tensor, coef: Tensor, tile: int,
                          side_test: dict | None = None, side_train: dict | None = None) -> Tensor:
    """k(x_test, X) coef, one (tile, tile) block of the cross kernel at a time, in float64; each
    block takes its rows of the test and training side inputs."""
    out = torch.zeros(x_test.shape[0], coef.shape[1], dtype=torch.float64)
    kernel = spec.ntk if kind == "ntk" else spec.nngp
    for r0 in range(0, x_test.shape[0], tile):
        rows = x_test[r0:r0 + tile]
        for c0 in range(0, x_train.shape[0], tile):
            cols = x_train[c0:c0 + tile]
            side = _side.keywords(_side.rows(side_test or {}, slice(r0, r0 + tile)),
                                  _side.rows(side_train or {}, slice(c0, c0 + tile)), rows, cols)
            block = kernel(rows, cols, dtype=torch.float64, **side)
            out[r0:r0 + rows.shape[0]] += block.cpu() @ coef[c0:c0 + tile]
    return out


class KernelRegression:
    r""":math:`\text{mean}(x) = k(x, X)\, \big(k(X, X) + \text{ridge}\, I\big)^{-1} y` for large N
    (the t = inf NTK prediction, or the NNGP posterior mean).

    The constructor only stores its arguments; ``fit`` builds (or resumes) the kernel store and
    solves, ``predict`` streams the cross kernel block by block.

    Args:
        spec: network description (`torchntk.mlp`, `torchntk.serial`).
        kind: "ntk" (t = inf of gradient flow) or "nngp" (GP posterior mean).
        ridge: added to the diagonal of k(X, X) (>= 0; the GP noise variance for "nngp").
        store: directory of the kernel store for k(X, X) (resumable, see `kernel_matrix`);
            None keeps no store: Cholesky computes K in memory, CG recomputes tiles each
            iteration.
        solver: "cholesky" (in memory, float64), "cg" (preconditioned conjugate gradients),
            or "auto" (Cholesky up to N = 16384).
        tol, max_iter, rank, seed: of conjugate gradients and its Nystrom preconditioner.
        tile, dtype: of the kernel store (dtype is that of its computation and storage).
        client: Dask client or scheduler address for the kernel tiles and CG's products.
        progress: progress bar while the store is computed.

    Attributes (after fit):
        dual_coef_: :math:`(K + \text{ridge}\, I)^{-1} y`, shape (N, k) float64.
        solve_: `SolveResult` (CG only).
        kernel_: the `KernelMatrix` store, or None.

    Example:
        >>> import os, tempfile
        >>> import numpy as np, torchntk
        >>> rng, store = np.random.default_rng(0), os.path.join(tempfile.mkdtemp(), "K.zarr")
        >>> x_train, y_train, x_test = rng.normal(size=(200, 3)), rng.normal(size=(200, 1)), rng.normal(size=(5, 3))
        >>> model = KernelRegression(torchntk.mlp(4), store=store, ridge=1e-4, tile=128)
        >>> model.fit(x_train, y_train).predict(x_test).shape
        (5, 1)
    """

    def __init__(self, spec: Any, *, kind: str = "ntk", ridge: float = 0.0, store: str | os.PathLike | None = None,
                 solver: str = "auto", tol: float = 1e-6, max_iter: int | None = None, rank: int = 256,
                 seed: int = 0, tile: int = DEFAULT_STORE_TILE, dtype: torch.dtype = torch.float32,
                 client: Any = None, progress: bool = False) -> None:
        self.spec = spec
        self.kind = kind
        self.ridge = ridge
        self.store = store
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.rank = rank
        self.seed = seed
        self.tile = tile
        self.dtype = dtype
        self.client = client
        self.progress = progress

    def __repr__(self) -> str:
        # scikit-learn's convention: the options that differ from their defaults, then the fit.
        defaults = inspect.signature(type(self).__init__).parameters
        options = [f"{name}={getattr(self, name)!r}" for name, parameter in defaults.items()
                   if name not in ("self", "spec") and getattr(self, name) != parameter.default]
        fitted = ""
        if hasattr(self, "dual_coef_"):
            n, k = self.dual_coef_.shape
            fitted = f"; fitted on {n} points, {k} output{'s' if k != 1 else ''}"
        return f"KernelRegression({', '.join([repr(self.spec), *options])}{fitted})"

    def fit(self, x: Any, y: Any, *, side_inputs: dict[str, Any] | None = None) -> KernelRegression:
        """Build k(X, X) and solve (k(X, X) + ridge I) coef = y. x (N, d); y (N,) or (N, k);
        side_inputs: x's by name, as ``spec.kernels(x, ...)`` takes them (an adjacency (N, V, V)
        for a description with Aggregate, a mask (N, *positions)), kept for `predict`."""
        if self.kind not in ("ntk", "nngp"):
            raise ValueError(f"kind must be 'ntk' or 'nngp', got {self.kind!r}.")
        if self.solver not in ("auto", "cholesky", "cg"):
            raise ValueError(f"solver must be 'auto', 'cholesky' or 'cg', got {self.solver!r}.")
        check_dtype(self.dtype)
        x_train = as_batch(x, "x", torch.float64)
        side, _ = side_inputs_of(self.spec, side_inputs, x_train, None)
        n = x_train.shape[0]
        y_t = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y)
        if y_t.dim() not in (1, 2) or y_t.shape[0] != n:
            raise ValueError(f"y must have shape ({n},) or ({n}, k), one row per input; got {tuple(y_t.shape)}.")
        solver = self.solver if self.solver != "auto" else ("cholesky" if n <= CHOLESKY_MAX_N else "cg")
        self.kernel_ = None
        if self.store is not None:
            self.kernel_ = kernel_matrix(self.spec, x_train.to(self.dtype), kind=self.kind, store=self.store,
                                         tile=self.tile, dtype=self.dtype, client=self.client, progress=self.progress,
                                         side_inputs=side)
        self.solve_: SolveResult | None = None
        if solver == "cholesky":
            gram = self.kernel_ if self.kernel_ is not None else \
                self._kernel_in_memory(x_train, side)
            coef = cholesky_solve(gram, y_t, self.ridge)
        else:
            operator = StoredKernel(self.kernel_, self.client) if self.kernel_ is not None else \
                ComputedKernel(self.spec, x_train, self.kind, self.tile, self.dtype, self.client, side_inputs=side)
            self.solve_ = conjugate_gradients(operator, y_t, ridge=self.ridge, tol=self.tol, max_iter=self.max_iter,
                                              rank=self.rank, seed=self.seed)
            coef = self.solve_.solution
        self.x_train_ = x_train
        self.side_train_ = side
        self.dual_coef_ = coef[:, None] if coef.dim() == 1 else coef
        self._vector_target = y_t.dim() == 1
        return self

    def _kernel_in_memory(self, x_train: Tensor, side: dict) -> Tensor:
        kernel = self.spec.ntk if self.kind == "ntk" else self.spec.nngp
        return kernel(x_train, dtype=self.dtype, **side)

    def predict(self, x: Any, *, side_inputs: dict[str, Any] | None = None) -> Any:
        r""":math:`\text{mean}(x) = k(x, X)\, c` with :math:`c` = ``dual_coef_``, shape (M,) or (M, k)
        like y; numpy in, numpy out. ``side_inputs``: x's by name, as for `fit` (a mask that
        only the training or only the test inputs have counts every position of the others as
        real)."""
        if not hasattr(self, "dual_coef_"):
            raise RuntimeError("call fit(x, y) before predict(x).")
        x_test = as_batch(x, "x", torch.float64, device=self.x_train_.device)
        if x_test.shape[1] != self.x_train_.shape[1]:
            raise ValueError(f"x has {x_test.shape[1]} features but the model was fitted on "
                             f"{self.x_train_.shape[1]}.")
        side, _ = side_inputs_of(self.spec, side_inputs, x_test, None)
        mean = _cross_kernel_product(self.spec, self.kind, x_test, self.x_train_, self.dual_coef_, self.tile, side,
                                     self.side_train_)
        if self._vector_target:
            mean = mean[:, 0]
        return mean.numpy() if isinstance(x, np.ndarray) else mean
