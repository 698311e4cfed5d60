"""Kernel gradient descent for any differentiable cost, integrated by scipy's solve_ivp.

For a cost C(F) that is a mean over the N training points (torchntk.dynamics.losses), training
with a fixed kernel moves the outputs as

    d/dt f_t(x) = -Theta(x, X) dC/dF(f_t(X)) = -(1/N) sum_i Theta(x, x_i) dl/df(x_i)

(the paper's kernel gradient, docs/conventions.md; time t = lr * steps). The right side depends on the
training outputs only, so the state is G(t) = int_0^t dC/dF ds, of size N k:

    dG/dt = dC/dF(F_0 - Theta(X, X) G),   f_t(X) = F_0 - Theta(X, X) G,   f_t(x) = f_0(x) - Theta(x, X) G.

For "mse" this reproduces `GradientFlow` (which is exact and faster); it is here for
cross-entropy and user costs, which have no closed form.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ._checks import as_cross_kernel, as_outputs, as_square_kernel, as_times, check_positive
from .losses import Loss, check_targets, get_loss, output_count, prepare_targets
from .prediction import Prediction

_IMPLICIT = ("Radau", "BDF", "LSODA")


def solve_kernel_flow(ntk_train: Any, y_train: Any, t: Any, *, loss: str | Loss = "cross_entropy",
                      ntk_test_train: Any = None, f0_train: Any = None, f0_test: Any = None,
                      out_features: int | None = None, method: str = "RK45", rtol: float = 1e-8,
                      atol: float = 1e-10) -> Prediction:
    r"""Outputs under kernel gradient flow on ``loss`` at times ``t`` (finite, >= 0):

    .. math::

        \frac{d}{dt} f_t(x) = -\sum_{i=1}^N \Theta(x, x_i)\, \nabla_{f(x_i)} C(f_t),

    which for the mean squared error :math:`C = \frac{1}{2N} \sum_i \lVert f(x_i) - y_i \rVert^2`
    is the flow of `GradientFlow`.

    Args:
        ntk_train: :math:`\Theta(X, X)`, shape (N, N); the kernel acts as
            :math:`\Theta \otimes \mathrm{Id}_k` on k outputs.
        y_train: targets; for "cross_entropy" integer classes (N,) or probabilities (N, k).
        t: times (scalar or (T,), any order) in the paper's units, t = lr * steps.
        loss: "cross_entropy", "mse", or a callable (outputs (N, k), targets) -> scalar mean cost.
        ntk_test_train: :math:`\Theta(x, X)`, shape (M, N), for test predictions.
        f0_train: outputs at t = 0 on the training points, (N, k); zero when not given.
        f0_test: outputs at t = 0 on the test points, (M, k); zero when not given.
        out_features: k when neither f0_train nor the targets fix it.
        method: the integrator of scipy.integrate.solve_ivp ("RK45" by default); for the implicit
            ones ("Radau", "BDF", "LSODA") the exact Jacobian
            :math:`-H(F)\, (\Theta \otimes \mathrm{Id}_k)` is supplied, :math:`H` the Hessian of the
            cost in the outputs.
        rtol: solve_ivp's relative tolerance.
        atol: solve_ivp's absolute tolerance.

    Returns:
        A `Prediction` with train_mean (T, N, k) = :math:`f_t(X)` and mean (T, M, k) =
        :math:`f_t(x)` (this one trajectory, from :math:`f_0`), no covariance.
    """
    theta = as_square_kernel(ntk_train, "ntk_train")
    n, device = theta.shape[0], theta.device
    times = as_times(t)
    if bool(torch.isinf(times).any()):
        raise ValueError("t = inf has no closed form for a general cost (cross-entropy has no minimiser on "
                         "separable data); give finite times, or use GradientFlow for the least-squares limit.")
    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    cost = get_loss(loss)
    targets = prepare_targets(loss, y_train, n, torch.float64, device)
    k = _output_count(loss, targets, f0_train, out_features)
    check_targets(loss, targets, k)
    f0 = torch.zeros(n, k, dtype=torch.float64, device=device) if f0_train is None else \
        as_outputs(f0_train, n, k, device, "f0_train")

    def outputs(g: torch.Tensor) -> torch.Tensor:
        return f0 - theta @ g.reshape(n, k)

    def gradient(g_flat: np.ndarray) -> torch.Tensor:
        f = outputs(torch.from_numpy(g_flat).to(device)).requires_grad_(True)
        value = cost(f, targets)
        if value.dim() != 0:
            raise ValueError(f"the cost must return a scalar (a mean over points); got shape {tuple(value.shape)}.")
        (grad,) = torch.autograd.grad(value, f)
        return grad

    def rhs(_s: float, g_flat: np.ndarray) -> np.ndarray:
        return gradient(g_flat).reshape(-1).cpu().numpy()

    def jacobian(_s: float, g_flat: np.ndarray) -> np.ndarray:
        f = outputs(torch.from_numpy(g_flat).to(device)).reshape(-1)
        hessian = torch.autograd.functional.hessian(lambda v: cost(v.reshape(n, k), targets), f)
        # F = F_0 - (Theta (x) Id_k) G in row-major (point, output) order.
        return (-hessian @ torch.kron(theta, torch.eye(k, dtype=theta.dtype, device=device))).cpu().numpy()

    order = torch.argsort(times)
    sorted_times = times[order].numpy()
    state = np.zeros((n * k, len(sorted_times)))
    if sorted_times[-1] > 0:
        solution = solve_ivp(rhs, (0.0, float(sorted_times[-1])), np.zeros(n * k), method=method,
                             t_eval=sorted_times, rtol=rtol, atol=atol,
                             **({"jac": jacobian} if method in _IMPLICIT else {}))
        if not solution.success:
            raise RuntimeError(f"solve_ivp ({method}) failed: {solution.message}. Try method='Radau' for stiff "
                               "kernels (a large lambda_max / N times a long horizon) or looser rtol/atol.")
        state = solution.y
    g = torch.from_numpy(state).to(device)[:, torch.argsort(order)].T.reshape(-1, n, k)  # (T, N, k), caller's order
    pred = Prediction(t=times.to(device), train_mean=f0 - theta @ g)
    if ntk_test_train is not None:
        cross = as_cross_kernel(ntk_test_train, n, device, "ntk_test_train")
        base = torch.zeros(cross.shape[0], k, dtype=torch.float64, device=device) if f0_test is None else \
            as_outputs(f0_test, cross.shape[0], k, device, "f0_test")
        pred.mean = base - cross @ g
    elif f0_test is not None:
        raise ValueError("f0_test was given without ntk_test_train = Theta(x_test, x_train).")
    return pred


def _output_count(loss, targets, f0_train, out_features) -> int:
    if f0_train is not None:
        shape = np.shape(f0_train)
        return 1 if len(shape) == 1 else int(shape[1])
    if out_features is not None:
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive integer; got {out_features!r}.")
        return out_features
    return output_count(loss, targets)
