"""Means of gradient flow without an eigendecomposition: block Lanczos at finite times and a refined
float32 Cholesky solve at t = inf (see `methods` for when each runs, `krylov` and `refined` for how).

Both return the mean parts of a `Prediction` (mean, train_mean) for the times they were given and
the a-posteriori checks; a time whose check failed is reported so that the caller recomputes it by
the exact path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .krylov import lanczos_gain
from .prediction import Prediction
from .refined import refined_solve
from .request import Request

LANCZOS_TOL = 1e-11
"""Estimated relative error accepted for u_t = g_t(Theta) Y: two orders of magnitude inside the
1e-9 agreement the means are held to, for the estimate's own uncertainty."""


def lanczos_means(apply: Callable[[Tensor], Tensor], times: Tensor, request: Request, n: int, ridge: float,
                  max_steps: int, tol: float = LANCZOS_TOL,
                  progress: Callable[[int, float], None] | None = None) -> tuple[Prediction, Tensor, dict]:
    """Means at finite ``times`` by block Lanczos on the k residual columns.

    Args:
        apply: v -> Theta_r v (Theta_r = Theta(X, X) + ridge I) on (N, k) blocks.
        times: (T,) finite times; request: the checked request (means only are used).
        n: N; ridge: as in `GradientFlow`; max_steps: Lanczos step cap; tol: see `LANCZOS_TOL`.

    Returns:
        (prediction for these times, converged (T,) bool, diagnostics).
    """
    result = lanczos_gain(apply, request.residual, times, n, tol=tol, max_steps=max_steps, progress=progress)
    # On X: Theta u = Theta_r u - ridge u (the flow runs on Theta_r; the function is Theta(x, X) u).
    train_mean = result.fitted - ridge * result.gain_y
    if request.base_train is not None:
        train_mean = train_mean + request.base_train
    pred = Prediction(t=times, train_mean=train_mean)
    if request.cross is not None:
        pred.mean = torch.einsum("mn,tnk->tmk", request.cross, result.gain_y)
        if request.base_test is not None:
            pred.mean = pred.mean + request.base_test
    diagnostics = {"lanczos_steps": result.steps, "lanczos_error": [float(e) for e in result.error],
                   "lanczos_tol": tol}
    return pred, result.converged, diagnostics


def mixed_limit_means(kernel: Tensor, count: int, request: Request, ridge: float) -> tuple[Prediction | None, dict]:
    """The t = inf means through `refined.refined_solve`; (None, diagnostics) when it failed."""
    solve = refined_solve(kernel, request.residual)
    diagnostics = {"refinement_steps": solve.steps, "backward_error": solve.backward_error}
    if solve.solution is None:
        return None, diagnostics
    alpha = solve.solution
    train_mean = request.residual - ridge * alpha
    if request.base_train is not None:
        train_mean = train_mean + request.base_train
    pred = Prediction(t=torch.full((count,), float("inf"), dtype=alpha.dtype, device=alpha.device),
                      train_mean=train_mean.unsqueeze(0).expand(count, *train_mean.shape).clone())
    if request.cross is not None:
        mean = request.cross @ alpha
        if request.base_test is not None:
            mean = mean + request.base_test
        pred.mean = mean.unsqueeze(0).expand(count, *mean.shape).clone()
    return pred, diagnostics


def merge(times: Tensor, parts: list[tuple[Tensor, Prediction]]) -> Prediction:
    """One prediction at ``times`` from predictions at disjoint subsets (index tensors) of them."""
    out = Prediction(t=times)
    names = ("mean", "cov", "var", "train_mean", "train_cov", "train_var")
    for name in names:
        present = [(index, getattr(p, name)) for index, p in parts if getattr(p, name) is not None]
        if not present or len(present) != len(parts):
            continue  # a field only some parts have (e.g. covariance) is left out, as it would be asked of all
        first = present[0][1]
        full = torch.empty((times.shape[0], *first.shape[1:]), dtype=first.dtype, device=first.device)
        for index, value in present:
            full[index] = value
        setattr(out, name, full)
    return out
