"""Solving (K + ridge I) x = b for kernel matrices: Cholesky in memory, preconditioned conjugate
gradients beyond memory.

Both solve the system of kernel regression, x = (K + ridge I)^-1 y, whose solution gives the
t = inf mean of the NTK gradient flow, Theta(x, X) Theta(X, X)^-1 y (docs/conventions.md, ridge 0), or the
GP posterior mean with the NNGP kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .matrix import KernelMatrix
from .operators import as_operator
from .preconditioners import NystromPreconditioner
from .tiles import single_threaded_ops


def _ridge(ridge: Any) -> float:
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0 or ridge == float("inf"):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}.")
    return float(ridge)


def _rhs(y: Any, n: int) -> tuple[Tensor, bool]:
    """y as an (n, k) float64 tensor on the CPU, and whether it was a vector."""
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y).detach()
    if t.dim() not in (1, 2) or t.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) or ({n}, k) to match the {n} x {n} kernel matrix, "
                         f"got {tuple(t.shape)}.")
    if not t.is_floating_point() and t.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"y must hold real numbers, got dtype {t.dtype}.")
    t = t.to("cpu", torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("y has NaN or infinite entries; remove or impute them first.")
    return (t[:, None] if t.dim() == 1 else t), t.dim() == 1


def cholesky_solve(kernel: Any, y: Any, ridge: float = 0.0) -> Tensor:
    r""":math:`x = (K + \text{ridge}\, I)^{-1} y` by Cholesky in float64, in memory.

    Args:
        kernel: K of shape (N, N): a tensor, a numpy array or a `KernelMatrix` (read whole).
        y: right-hand side(s), shape (N,) or (N, k).
        ridge: added to the diagonal (>= 0).

    Returns:
        x, float64, of y's shape.

    Raises:
        ValueError: K + ridge I is not numerically positive definite in float64 (e.g. duplicate
        inputs, or a kernel computed in float32), with advice on what to change.
    """
    ridge = _ridge(ridge)
    if isinstance(kernel, KernelMatrix):
        kernel = kernel.to_torch(torch.float64)
    k = torch.as_tensor(kernel).detach().to("cpu", torch.float64)
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"the kernel matrix must be square, got shape {tuple(k.shape)}.")
    if not bool(torch.isfinite(k).all()):
        raise ValueError("the kernel matrix has NaN or infinite entries (an unfinished store reads NaN where "
                         "tiles are missing); finish or recompute it.")
    rhs, vector = _rhs(y, k.shape[0])
    a = k + ridge * torch.eye(k.shape[0], dtype=torch.float64)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) > 0:
        scale = float(k.diagonal().abs().mean())
        raise ValueError(f"K + ridge I (ridge={ridge:g}) is not numerically positive definite: Cholesky broke "
                         f"down at column {int(info)} of {k.shape[0]} (a non-positive pivot in float64). Its "
                         "smallest eigenvalues are lost to round-off, as with near-duplicate inputs or a kernel "
                         f"computed in float32. Add a ridge (e.g. ridge={1e-6 * scale:.2g}, 1e-6 times the mean "
                         "diagonal; more for a float32 kernel, ~1e-4 times), compute the kernel in float64, or "
                         "remove duplicate inputs.")
    x = torch.cholesky_solve(rhs, chol)
    return x[:, 0] if vector else x


@dataclass
class SolveResult:
    r"""The outcome of `conjugate_gradients`.

    Attributes:
        solution: :math:`x`, float64, shape of y.
        iterations: CG iterations (products with K, not counting the preconditioner's sketch and
            the final residual check).
        residual: the achieved relative residual
            :math:`\lVert b - (K + \text{ridge}\, I)\, x \rVert / \lVert b \rVert` per right-hand
            side, recomputed from x at the end (not the recurrence's estimate).
        converged: every residual <= tol.
        seconds: wall time.
        tol: the target relative residual.
        preconditioner_rank: the rank of the Nystrom preconditioner (0 without one).
    """

    solution: Tensor
    iterations: int
    residual: Tensor
    converged: bool
    seconds: float
    tol: float
    preconditioner_rank: int = 0

    def __repr__(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        return (f"SolveResult({state}: {self.iterations} iterations, max relative residual "
                f"{float(self.residual.max()):.2e} (tol {self.tol:g}), {self.seconds:.1f} s, "
                f"preconditioner rank {self.preconditioner_rank})")


def conjugate_gradients(kernel: Any, y: Any, *, ridge: float = 0.0, tol: float = 1e-6, max_iter: int | None = None,
                        preconditioner: str | Callable[[Tensor], Tensor] | None = "nystrom", rank: int = 256,
                        seed: int = 0, client: Any = None,
                        callback: Callable[[int, Tensor], None] | None = None) -> SolveResult:
    r""":math:`x = (K + \text{ridge}\, I)^{-1} y` by preconditioned conjugate gradients, K never
    held in memory.

    Each iteration is one product with K: one pass over the stored tiles (or a recomputation of
    them), shared by all right-hand sides (the columns of y run as independent CG recurrences
    in lockstep). Stops when every column's relative residual
    :math:`\lVert b - A x \rVert / \lVert b \rVert` is <= tol; the
    residual reported is recomputed from the final x, and CG restarts from x if the recurrence
    drifted from it.

    Args:
        kernel: K (N, N): a `KernelMatrix` store (streamed), an operator from
            `torchntk.scale.operators` (`StoredKernel`, `ComputedKernel`), or an in-memory tensor.
        y: (N,) or (N, k).
        ridge: :math:`\mu \ge 0` added to the diagonal.
        tol: target relative residual per column.
        max_iter: iteration limit (default N).
        preconditioner: "nystrom" (randomized Nystrom of rank ``rank``, one extra pass), None,
            or a callable :math:`r \mapsto P^{-1} r` on (N, k) tensors (symmetric positive
            definite).
        rank: the rank of the Nystrom preconditioner.
        seed: the seed of the Nystrom preconditioner's random sketch.
        client: Dask client or address for the products when ``kernel`` is a KernelMatrix.
        callback: called as callback(iteration, relative_residuals) after every iteration.

    Returns:
        `SolveResult` with the solution, iterations and achieved residuals.
    """
    start = time.perf_counter()
    ridge = _ridge(ridge)
    if not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}.")
    operator = as_operator(kernel, client)
    n = operator.shape[0]
    b, vector = _rhs(y, n)
    max_iter = n if max_iter is None else max_iter
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}.")
    # Everything here but the products is O(N (k + rank)) vector work and small factorizations:
    # one thread avoids intra-op barriers, which cost far more than they save at these sizes on
    # a busy machine (tiled products manage their own threads).
    with single_threaded_ops():
        return _solve(operator, b, vector, ridge, tol, max_iter, preconditioner, rank, seed, callback, start)


def _solve(operator: Any, b: Tensor, vector: bool, ridge: float, tol: float, max_iter: int, preconditioner: Any,
           rank: int, seed: int, callback: Callable[[int, Tensor], None] | None, start: float) -> SolveResult:
    precondition, prec_rank = _preconditioner(preconditioner, operator, rank, ridge, seed)

    def apply(v: Tensor) -> Tensor:
        return operator.matmul(v, dtype=torch.float64) + ridge * v

    norms = torch.linalg.vector_norm(b, dim=0)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))  # a zero column is solved by x = 0
    x = torch.zeros_like(b)
    r = b.clone()
    iterations = 0
    residual = torch.linalg.vector_norm(r, dim=0) / norms
    for _ in range(4):  # a restart recomputes r = b - A x when the recurrence drifted from it
        x, iterations = _cg_loop(apply, precondition, x, r, norms, tol, iterations, max_iter, callback)
        r = b - apply(x)
        residual = torch.linalg.vector_norm(r, dim=0) / norms
        if bool((residual <= tol).all()) or iterations >= max_iter:
            break
    solution = x[:, 0] if vector else x
    return SolveResult(solution, iterations, residual, bool((residual <= tol).all()),
                       time.perf_counter() - start, float(tol), prec_rank)


def _preconditioner(choice: Any, operator: Any, rank: int, ridge: float,
                    seed: int) -> tuple[Callable[[Tensor], Tensor], int]:
    if choice is None:
        return (lambda r: r), 0
    if choice == "nystrom":
        n = operator.shape[0]
        prec = NystromPreconditioner(operator, min(rank, n - 1), ridge, seed)
        return prec, prec.rank
    if callable(choice):
        return choice, getattr(choice, "rank", 0)
    raise ValueError(f"preconditioner must be 'nystrom', None or a callable r -> P^-1 r; got {choice!r}.")


def _cg_loop(apply: Callable[[Tensor], Tensor], precondition: Callable[[Tensor], Tensor], x: Tensor, r: Tensor,
             norms: Tensor, tol: float, iterations: int, max_iter: int,
             callback: Callable[[int, Tensor], None] | None) -> tuple[Tensor, int]:
    """Preconditioned CG from x with residual r, all columns in lockstep; finished columns
    freeze (their step is 0)."""
    active = torch.linalg.vector_norm(r, dim=0) / norms > tol
    z = precondition(r)
    p = z.clone()
    rz = (r * z).sum(dim=0)
    while bool(active.any()) and iterations < max_iter:
        ap = apply(p)
        pap = (p * ap).sum(dim=0)
        if bool((pap[active] <= 0).any()):
            raise ValueError("conjugate gradients met a direction p with p^T (K + ridge I) p <= 0: the matrix is "
                             "not numerically positive definite. Add a ridge (e.g. 1e-6 times the mean diagonal, "
                             "more for a float32 store) or compute the kernel in float64.")
        alpha = torch.where(active, rz / torch.where(active, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        x = x + alpha * p
        r = r - alpha * ap
        iterations += 1
        relative = torch.linalg.vector_norm(r, dim=0) / norms
        if callback is not None:
            callback(iterations, relative)
        active = relative > tol
        if not bool(active.any()):
            break
        z = precondition(r)
        rz_new = (r * z).sum(dim=0)
        beta = torch.where(active, rz_new / torch.where(rz != 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    return x, iterations
