"""Low-rank preconditioners for (K + ridge I) x = b when K is too large to factor.

Randomized Nystrom preconditioner (Frangella, Tropp, Udell, "Randomized Nystrom
preconditioning", SIAM J. Matrix Anal. Appl. 2023; the sketch is Tropp et al. 2017, Alg. 3).
One product of K with an (N, r) orthonormal Gaussian test matrix Omega, i.e. one pass over the
tiles whatever r, gives K ~= U diag(lam) U^T with U (N, r) orthonormal:

    Y = K Omega,   Y_nu = Y + nu Omega        (a tiny shift nu keeps the core factorable)
    Omega^T Y_nu = C C^T,   B = Y_nu C^-T,   B = U S V^T,   lam = max(S^2 - nu, 0)

and the preconditioner, applied to residuals inside conjugate gradients, is

    P^-1 = (lam_r + mu) U (diag(lam) + mu I)^-1 U^T + (I - U U^T),     mu = ridge

It maps the r leading eigenvalues of K + mu I to about lam_r + mu and leaves the rest, so CG
then converges at the rate of the condition number (lam_r + mu) / (lam_min + mu) instead of
(lam_1 + mu) / (lam_min + mu). This is the same low-rank-plus-identity structure (applied by
Woodbury) that GPyTorch builds from a pivoted Cholesky factor and Falkon from Nystrom centres;
the randomized sketch needs only products with K, which is all a tiled store offers cheaply.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .tiles import single_threaded_ops


class NystromPreconditioner:
    r""":math:`P^{-1}` for :math:`K + \text{ridge}\, I` from a rank-``rank`` randomized Nystrom sketch of K.

    Args:
        operator: K, with ``shape`` (N, N) and ``matmul(V, dtype)``; the sketch costs one product
            with an (N, rank) block, computed in the operator's storage dtype (a preconditioner
            need not be exact: it only has to be symmetric positive definite, which P is).
        rank: sketch size r (< N). Larger r: fewer CG iterations, a longer sketch, N r memory.
        ridge: mu >= 0, the ridge of the system being solved.
        seed: seed of the Gaussian test matrix; same seed, same preconditioner.

    Attributes:
        eigenvectors (N, r') and eigenvalues (r',): the Nystrom approximation of K, r' <= r
        after dropping eigenvalues at the round-off level (below the shift nu).
    """

    def __init__(self, operator: Any, rank: int, ridge: float = 0.0, seed: int = 0) -> None:
        n = operator.shape[0]
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank < n:
            raise ValueError(f"rank must be an integer in [1, N) = [1, {n}), got {rank!r}.")
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {ridge!r}.")
        # The factorizations are of (N, r) and (r, r) matrices: one thread each avoids
        # intra-op barriers that cost more than they save here on a busy machine.
        with single_threaded_ops():
            generator = torch.Generator().manual_seed(seed)
            omega, _ = torch.linalg.qr(torch.randn(n, rank, generator=generator, dtype=torch.float64))
            sketch_dtype = getattr(operator, "storage_dtype", torch.float64)
            y = operator.matmul(omega.to(sketch_dtype), dtype=sketch_dtype).to(torch.float64)
            eps = torch.finfo(sketch_dtype).eps
            nu = eps * n ** 0.5 * float(torch.linalg.matrix_norm(y, ord=2))
            self.eigenvectors, self.eigenvalues, nu = _nystrom_factors(omega, y, nu)
        self.ridge = float(ridge)
        # Eigenvalues below the shift are round-off, not signal: keeping one would make it lam_r
        # and shrink P^-1 along the leading directions to nothing.
        kept = self.eigenvalues > nu
        self.eigenvectors, self.eigenvalues = self.eigenvectors[:, kept], self.eigenvalues[kept]
        if self.eigenvalues.numel():
            smallest = self.eigenvalues[-1] + self.ridge
            self._scale = smallest / (self.eigenvalues + self.ridge) - 1
        else:
            self._scale = self.eigenvalues

    @property
    def rank(self) -> int:
        """The number r' of eigenpairs kept (at most the requested rank; round-off ones are dropped)."""
        return self.eigenvalues.numel()

    def __call__(self, r: Tensor) -> Tensor:
        """P^-1 r for r of shape (N, k)."""
        u = self.eigenvectors
        return r + u @ (self._scale[:, None] * (u.T @ r))


def _nystrom_factors(omega: Tensor, y: Tensor, nu: float) -> tuple[Tensor, Tensor, float]:
    """(U, lam, shift used) of the shifted Nystrom approximation, largest eigenvalue first; the shift grows
    tenfold until the core Omega^T Y_nu factors (round-off in a float32 sketch can make it
    indefinite)."""
    nu = max(nu, torch.finfo(torch.float64).tiny)
    for _ in range(12):
        y_nu = y + nu * omega
        core = omega.T @ y_nu
        chol, info = torch.linalg.cholesky_ex((core + core.T) / 2)
        if int(info) == 0:
            b = torch.linalg.solve_triangular(chol, y_nu.T, upper=False).T   # Y_nu C^-T
            u, s, _ = torch.linalg.svd(b, full_matrices=False)
            return u, (s * s - nu).clamp_min(0), nu
        nu *= 10
    raise ValueError("the Nystrom sketch of the kernel matrix is not positive semi-definite even after "
                     "shifting: the matrix is not a valid kernel matrix (check the store for NaNs or damage).")
