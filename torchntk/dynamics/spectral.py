"""Functions of the training kernel evaluated on its eigenvalues: the gain of gradient flow and of
gradient descent at many times at once.

With Theta(X, X) = V diag(lambda) V^T, the predictor of Section A.2 of the paper is

    T_t(x) = Theta(x, X) Theta^-1 (I - exp(-t Theta / N)) = Theta(x, X) V diag(g_t) V^T,
    g_t(lambda) = (1 - exp(-t lambda / N)) / lambda                      (gradient flow)
    g_k(lambda) = (1 - (1 - eta lambda / N)^k) / lambda                  (k steps of rate eta)

Both are smooth at lambda = 0 (limits t / N and k eta / N), so finite times need no inverse:
only t = inf (g = 1 / lambda) needs a non-singular kernel. Each extra time is one row of g.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def flow_gain(eigenvalues: Tensor, times: Tensor, n: int) -> Tensor:
    """g_t(lambda_j) = (1 - exp(-t lambda_j / n)) / lambda_j, shape (T, N); t = inf gives 1 / lambda_j.

    Computed with expm1 so that small t lambda keeps full relative precision; eigenvalues are
    clamped at 0 (negative ones are rounding noise, checked by the caller).
    """
    lam = eigenvalues.clamp_min(0)[None, :]
    t = times.to(eigenvalues)[:, None]
    finite = torch.isfinite(t)
    t_safe = torch.where(finite, t, torch.zeros_like(t))
    positive = lam > 0
    lam_safe = torch.where(positive, lam, torch.ones_like(lam))
    g = torch.where(positive, -torch.expm1(-t_safe * lam_safe / n) / lam_safe, t_safe / n)
    return torch.where(finite, g, 1 / lam)


def descent_gain(eigenvalues: Tensor, steps: Tensor, lr: float, n: int) -> Tensor:
    """g_k(lambda_j) = (1 - (1 - lr lambda_j / n)^k) / lambda_j, shape (T, N); k = inf gives 1 / lambda_j.

    For lr lambda / n < 1 the power goes through log1p / expm1 (exact for tiny steps); beyond it
    the factor 1 - u is negative or zero and the power is taken directly (no cancellation there).
    """
    lam = eigenvalues.clamp_min(0)[None, :]
    k = steps.to(eigenvalues)[:, None]
    finite = torch.isfinite(k)
    k_safe = torch.where(finite, k, torch.zeros_like(k))
    u = lr * lam / n
    small = u < 1
    u_small = torch.where(small, u, torch.zeros_like(u))
    done = torch.where(small, -torch.expm1(k_safe * torch.log1p(-u_small)), 1 - (1 - u) ** k_safe)
    positive = lam > 0
    lam_safe = torch.where(positive, lam, torch.ones_like(lam))
    g = torch.where(positive, done / lam_safe, k_safe * lr / n)
    g = torch.where(finite, g, 1 / lam)
    if not bool(torch.isfinite(g[finite.expand_as(g)]).all()):
        raise ValueError(f"gradient descent with lr={lr} diverges (the k-step factor overflows float64): lr must be "
                         f"below 2 N / lambda_max = {max_learning_rate_from(eigenvalues, n):.6g}.")
    return g


def max_learning_rate_from(eigenvalues: Tensor, n: int) -> float:
    """2 N / lambda_max: gradient descent on the least-squares cost converges iff lr is below it."""
    top = float(eigenvalues.max())
    return float("inf") if top <= 0 else 2 * n / top


def check_stable(eigenvalues: Tensor, lr: float, n: int, steps: Tensor) -> None:
    """Infinite steps need a convergent iteration; finite steps above the limit only warn."""
    limit = max_learning_rate_from(eigenvalues, n)
    if lr < limit:
        return
    message = (f"lr={lr:.6g} is not below 2 N / lambda_max = {limit:.6g}: the component along the top "
               "eigenvector does not decay (it oscillates or grows).")
    if bool(torch.isinf(steps).any()):
        raise ValueError(message + " The k = inf limit does not exist; use a smaller lr.")
    warnings.warn(message, RuntimeWarning, stacklevel=3)
