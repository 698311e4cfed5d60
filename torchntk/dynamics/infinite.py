"""Infinite-width training dynamics of a network description: kernels from the spec, then `GradientFlow`."""

from __future__ import annotations

from typing import Any

import torch

from .._inputs import as_pair_batches as as_pair
from ._checks import check_cov
from .flow import GradientFlow
from .prediction import Prediction

_KERNELS = ("ntk", "nngp")


def predict_gradient_flow(spec: Any, x_train: Any, y_train: Any, x_test: Any = None, t: Any = float("inf"), *,
                          kernel: str = "ntk", ridge: float = 0.0, cov: str | None = "full", f0_train: Any = None,
                          f0_test: Any = None, train_cov: bool = True, method: str = "auto") -> Prediction:
    r"""Outputs of the infinite-width network ``spec`` trained by gradient flow, at times ``t``.

    Time is the paper's (docs/conventions.md): full-batch gradient descent on
    :math:`C = \frac{1}{2N} \sum_i \lVert f(x_i) - y_i \rVert^2` with learning rate :math:`\eta`
    for :math:`s` steps reaches :math:`t = \eta\, s`, and

    .. math::

        \text{mean}_t(x) = T_t(x)\, y, \qquad
        T_t(x) = \Theta(x, X)\, \Theta^{-1} \big(I - e^{-t \Theta / N}\big),

        \text{cov}_t(x, x') = \Sigma(x, x') + T_t(x)\, \Sigma(X, X)\, T_t(x')^\top
            - T_t(x)\, \Sigma(X, x') - \Sigma(x, X)\, T_t(x')^\top,

    with :math:`\Theta = \Theta^{(L)}` and :math:`\Sigma = \Sigma^{(L)}`, shared by all :math:`k`
    outputs (Theorem 1). neural-tangents' ``nt.predict`` time ``t_nt`` (its
    ``exp(-learning_rate * t_nt * K / y_train.size)``) is ``t = learning_rate * t_nt / k``.

    Args:
        spec: a network description (`torchntk.mlp`, `torchntk.serial`).
        x_train: (N, n0) training inputs.
        y_train: (N,) or (N, k) targets.
        x_test: (M, n0) test inputs, or None for training points only.
        t: time or times (T,), >= 0; float("inf") is the exact limit (a solve, not a large t).
        kernel: "ntk" (all layers trained) or "nngp" (only the readout layer trained:
            :math:`\Theta` is replaced by :math:`\Sigma^{(L)}`, and t = inf is exactly the
            Gaussian-process posterior).
        ridge: absolute, added to :math:`\Theta(X, X)` (see `GradientFlow`); neural-tangents'
            relative diag_reg corresponds to ``ridge = diag_reg * trace(Theta(X, X)) / N``.
        cov: "full", "diag" (variances only, never an M x M matrix) or None.
        f0_train: one network's initial outputs on the training points, (N, k): predict its own
            trajectory :math:`f_0 + T_t (y - f_0(X))` instead of the distribution over
            initialisations.
        f0_test: the same network's initial outputs on the test points, (M, k).
        train_cov: also compute the covariance on the training points (:math:`O(N^3)` per time).
        method: "auto", "eigh", "cholesky", "mixed" or "lanczos" (see `GradientFlow.predict`).

    Returns:
        A `Prediction` (numpy arrays if x_train was a numpy array): mean (T, M, k), cov (T, M, M)
        or var (T, M), train_mean (T, N, k), train_cov (T, N, N) or train_var (T, N).
    """
    flow, test, numpy_out = _flow_and_test_kernels(spec, x_train, y_train, x_test, kernel, ridge, cov)
    pred = flow.predict(t, cov=cov, f0_train=f0_train, f0_test=f0_test, train_cov=train_cov, method=method, **test)
    return _maybe_numpy(pred, numpy_out)


def predict_gradient_descent(spec: Any, x_train: Any, y_train: Any, x_test: Any = None, steps: Any = 1, *,
                             lr: float, kernel: str = "ntk", ridge: float = 0.0, cov: str | None = "full",
                             f0_train: Any = None, f0_test: Any = None, train_cov: bool = True) -> Prediction:
    r"""As `predict_gradient_flow` after exactly ``steps`` full-batch gradient-descent steps of
    rate ``lr`` (:math:`\eta`): :math:`e^{-t \Theta / N}` becomes
    :math:`(I - \eta\, \Theta / N)^{\text{steps}}`, and ``pred.t = lr * steps``. Stable iff
    :math:`\eta < 2N / \lambda_{\max}(\Theta(X, X))` (`GradientFlow.max_learning_rate`).

    Args:
        spec: a network description (`torchntk.mlp`, `torchntk.serial`).
        x_train: (N, n0) training inputs.
        y_train: (N,) or (N, k) targets.
        x_test: (M, n0) test inputs, or None for training points only.
        steps: a step count or counts (T,): non-negative integers, or inf for the limit.
        lr: the learning rate :math:`\eta`, by name.
        kernel: "ntk" or "nngp", as for `predict_gradient_flow`.
        ridge: absolute, added to :math:`\Theta(X, X)`, as for `predict_gradient_flow`.
        cov: "full", "diag" or None, as for `predict_gradient_flow`.
        f0_train: one network's initial outputs on the training points, (N, k), to predict its
            own trajectory.
        f0_test: the same network's initial outputs on the test points, (M, k).
        train_cov: also compute the covariance on the training points.

    Returns:
        A `Prediction` as for `predict_gradient_flow`, with ``pred.t = lr * steps``.
    """
    flow, test, numpy_out = _flow_and_test_kernels(spec, x_train, y_train, x_test, kernel, ridge, cov)
    pred = flow.predict_steps(steps, lr, cov=cov, f0_train=f0_train, f0_test=f0_test, train_cov=train_cov, **test)
    return _maybe_numpy(pred, numpy_out)


def _flow_and_test_kernels(spec, x_train, y_train, x_test, kernel, ridge, cov):
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be 'ntk' (all layers trained) or 'nngp' (readout only); got {kernel!r}.")
    if not hasattr(spec, "kernels"):
        raise TypeError(f"spec must be a network description such as torchntk.mlp(...); got {type(spec).__name__}.")
    cov = check_cov(cov)
    train, test, numpy_out = as_pair(x_train, x_test, torch.float64)
    nngp_train, ntk_train = _kernel_pair(spec, kernel, train, None)
    flow = GradientFlow(ntk_train, y_train, nngp_train=nngp_train if cov else None, ridge=ridge)
    if test is None:
        return flow, {}, numpy_out
    # Each kernel is computed once: train-train (symmetric half), test-train, and the test prior
    # only in the form the covariance needs (nothing for cov=None, the diagonal for "diag").
    nngp_cross, ntk_cross = _kernel_pair(spec, kernel, test, train)
    kernels = {"ntk_test_train": ntk_cross}
    if cov is not None:
        kernels["nngp_test_train"] = nngp_cross
        kernels["nngp_test"] = spec.nngp(test, diagonal=cov == "diag")
    return flow, kernels, numpy_out


def _kernel_pair(spec, kernel, x1, x2):
    if kernel == "nngp":
        nngp = spec.nngp(x1, x2)
        return nngp, nngp  # readout-only training: its NTK is Sigma(L)
    return spec.kernels(x1, x2)


def _maybe_numpy(pred: Prediction, numpy_out: bool) -> Prediction:
    return pred.map(lambda a: a.detach().cpu().numpy()) if numpy_out else pred
