"""Kernel gradient descent on any cost, integrated by scipy's solve_ivp (torchntk.dynamics.solve_kernel_flow).

Specification: for a cost C that is a mean over the N training points,
d/dt f_t(x) = -Theta(x, X) dC/dF(f_t(X)), the same time t = lr * steps as gradient descent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import torchntk as tn
from torchntk.dynamics import GradientFlow, solve_kernel_flow

N, M, P = 12, 5, 40


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(4)
    phi = torch.randn(N + M, P, generator=g, dtype=torch.float64) / P**0.5
    labels = torch.randint(0, 3, (N,), generator=g)
    return phi, labels


def test_mse_through_the_ode_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N + M, 3, generator=g, dtype=torch.float64)
    y = torch.randn(N, 2, generator=g, dtype=torch.float64)
    f0 = torch.randn(N + M, 2, generator=g, dtype=torch.float64)
    theta = tn.mlp(3, "relu").ntk(x)
    times = [3.0, 0.0, 1.0, 20.0]  # any order
    ode = solve_kernel_flow(theta[:N, :N], y, times, loss="mse", ntk_test_train=theta[N:, :N],
                            f0_train=f0[:N], f0_test=f0[N:], rtol=1e-11, atol=1e-13)
    exact = GradientFlow(theta[:N, :N], y).predict(times, ntk_test_train=theta[N:, :N], f0_train=f0[:N],
                                                   f0_test=f0[N:])
    # The integrator's tolerances (1e-11 relative, 1e-13 absolute on G) bound its error; the
    # accumulated global error stays below ~1e-8 on O(1) outputs.
    np.testing.assert_allclose(ode.train_mean.numpy(), exact.train_mean.numpy(), atol=1e-8)
    np.testing.assert_allclose(ode.mean.numpy(), exact.mean.numpy(), atol=1e-8)


def _train_linear_model(phi, labels, weight0, lr, steps):
    """Gradient descent on a linear model f = phi W^T, whose NTK is exactly phi phi^T (x) Id_k."""
    model = nn.Linear(P, 3, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(weight0)
    run = tn.train(model, phi[:N], labels, lr=lr, steps=steps, x_test=phi[N:], loss="cross_entropy",
                   record_every=steps, record=("outputs",))
    return run.outputs_train[-1], run.outputs_test[-1], run.outputs_train[0], run.outputs_test[0]


def test_cross_entropy_flow_is_the_limit_of_gradient_descent(features):
    """Gradient descent differs from the flow by O(lr): halving lr halves the gap (first order),
    so the ODE is the lr -> 0 limit of real training under the same time and 1/N conventions."""
    phi, labels = features
    weight0 = torch.randn(3, P, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = 4.0
    gaps = []
    for lr in (0.4, 0.2, 0.1):
        f_train, f_test, f0_train, f0_test = _train_linear_model(phi, labels, weight0, lr, round(t / lr))
        theta = phi @ phi[:N].T
        ode = solve_kernel_flow(theta[:N], labels, t, ntk_test_train=theta[N:], f0_train=f0_train, f0_test=f0_test)
        gaps.append(max(np.abs(ode.train_mean[0].numpy() - f_train).max(), np.abs(ode.mean[0].numpy() - f_test).max()))
    moved = np.abs(f_train - f0_train).max()
    assert gaps[-1] < 0.05 * moved
    for a, b in zip(gaps, gaps[1:], strict=False):
        assert 0.4 < b / a < 0.6  # first order, with a small second-order term


def test_implicit_solver_with_exact_jacobian_agrees(features):
    phi, labels = features
    theta = phi[:N] @ phi[:N].T
    a = solve_kernel_flow(theta, labels, [1.0, 5.0], method="RK45")
    b = solve_kernel_flow(theta, labels, [1.0, 5.0], method="Radau")
    assert a.train_mean.shape == (2, N, 3)
    # Both run at rtol 1e-8; their difference is at that level on O(1) logits.
    np.testing.assert_allclose(a.train_mean.numpy(), b.train_mean.numpy(), atol=1e-6)


def test_custom_cost_callable(features):
    phi, _ = features
    theta = phi[:N] @ phi[:N].T
    y = torch.linspace(-1, 1, N, dtype=torch.float64)[:, None]

    def half_mse(f, target):  # C = (1/4N) sum |f - y|^2: the flow runs at half speed
        return 0.25 * (f - target).pow(2).sum(-1).mean()

    slow = solve_kernel_flow(theta, y, 2.0, loss=half_mse, rtol=1e-11, atol=1e-13)
    fast = GradientFlow(theta, y).predict(1.0)
    np.testing.assert_allclose(slow.train_mean.numpy(), fast.train_mean.numpy(), atol=1e-8)


def test_errors(features):
    phi, labels = features
    theta = phi[:N] @ phi[:N].T
    with pytest.raises(ValueError, match="t = inf"):
        solve_kernel_flow(theta, labels, float("inf"))
    with pytest.raises(ValueError, match="outputs"):
        solve_kernel_flow(theta, labels, 1.0, out_features=2)
    with pytest.raises(ValueError, match="unknown loss"):
        solve_kernel_flow(theta, labels, 1.0, loss="hinge")
    with pytest.raises(ValueError, match="scalar"):
        solve_kernel_flow(theta, labels, 1.0, loss=lambda f, y: f.sum(-1))
