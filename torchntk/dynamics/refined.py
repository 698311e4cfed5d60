"""The t = inf solve Theta_r^-1 Y by a float32 Cholesky factor refined to float64 accuracy.

A float32 Cholesky factorisation costs about half of a float64 one (half the bytes, twice the SIMD
width). Iterative refinement recovers float64 accuracy from it: with residuals computed in float64,

    x_0 = L32^-T L32^-1 Y,    r_i = Y - Theta_r x_i (float64),    x_(i+1) = x_i + L32^-T L32^-1 r_i,

each step multiplies the error by about cond(Theta_r) * eps32 (Higham, "Accuracy and Stability of
Numerical Algorithms", chapter 12), so it converges while cond(Theta_r) is well below 1 / eps32 ~ 1.7e7.
Convergence is checked a posteriori by the normwise backward error of the final x,

    eta = ||Y - Theta_r x||_F / (||Theta_r||_F ||x||_F + ||Y||_F),

the same quantity that makes a float64 Cholesky solve backward stable. When the float32 factor breaks
down (not positive definite in float32) or eta does not fall below `BACKWARD_TOL`, the caller falls
back to the float64 Cholesky path, which also says when the kernel is singular.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

BACKWARD_TOL = 1e-14
"""Accepted normwise backward error: a float64 Cholesky solve reaches a few eps64 (2.2e-16) times a
modest multiple; 1e-14 leaves room for N up to ~1e5 and means a forward error no worse than the
float64 solve's order (cond * 1e-14)."""

MAX_STEPS = 12
"""Refinement steps before giving up (each costs one float64 product and two float32 triangular solves)."""


@dataclass
class RefinedSolve:
    """x = Theta_r^-1 Y (float64) or None when the refinement failed; steps taken; eta: the final
    normwise backward error (inf when the float32 factorisation broke down)."""

    solution: Tensor | None
    steps: int
    backward_error: float


def refined_solve(kernel: Tensor, rhs: Tensor) -> RefinedSolve:
    """Theta_r^-1 Y with a float32 Cholesky factor and float64 iterative refinement.

    Args:
        kernel: Theta_r (N, N), float64, symmetric positive definite.
        rhs: Y (N, k), float64.

    Returns:
        A `RefinedSolve`; ``solution`` is None when eta stayed above `BACKWARD_TOL`.
    """
    factor, info = torch.linalg.cholesky_ex(kernel.to(torch.float32))
    if int(info) > 0:
        return RefinedSolve(None, 0, float("inf"))
    norm_kernel = float(torch.linalg.matrix_norm(kernel))
    norm_rhs = float(torch.linalg.matrix_norm(rhs))
    if norm_rhs == 0:
        return RefinedSolve(torch.zeros_like(rhs), 0, 0.0)
    x = torch.cholesky_solve(rhs.to(torch.float32), factor).to(torch.float64)
    eta, best = float("inf"), None
    for step in range(1, MAX_STEPS + 1):
        residual = rhs - kernel @ x
        eta_new = float(torch.linalg.matrix_norm(residual)) / (norm_kernel * float(torch.linalg.matrix_norm(x))
                                                               + norm_rhs)
        if not eta_new < eta:  # stagnation or divergence (also NaN): keep the best iterate
            break
        eta, best = eta_new, x
        if eta <= BACKWARD_TOL:
            return RefinedSolve(x, step, eta)
        x = x + torch.cholesky_solve(residual.to(torch.float32), factor).to(torch.float64)
    del best
    return RefinedSolve(None, MAX_STEPS, eta)
