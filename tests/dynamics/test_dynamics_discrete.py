"""Gradient descent in discrete steps: (I - lr Theta / N)^k instead of exp(-t Theta / N).

Specification: after k full-batch steps of rate lr on C = (1/2N) sum |f - y|^2 with a fixed kernel,
f_k(X) = y + (I - lr Theta / N)^k (f_0(X) - y), and at test points
f_k(x) = f_0(x) + Theta(x, X) Theta^-1 (I - (I - lr Theta / N)^k) (y - f_0(X)). The flow is its
lr -> 0 limit at t = lr k, and the iteration converges iff lr < 2 N / lambda_max.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp

import torchntk as tn
from torchntk.dynamics import GradientFlow, max_learning_rate, predict_gradient_descent

N, M = 10, 4


@pytest.fixture(scope="module")
def kernels():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N + M, 3, generator=g, dtype=torch.float64)
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    nngp, ntk = tn.mlp(3, "erf", bias_std=0.2).kernels(x)
    return ntk[:N, :N], ntk[N:, :N], y, x


def test_k_steps_equal_the_matrix_power(kernels):
    tt, st, y, _ = kernels
    flow = GradientFlow(tt, y)
    lr = 0.9 * flow.max_learning_rate
    steps = [0, 1, 7, 50]
    pred = flow.predict_steps(steps, lr, ntk_test_train=st)
    for i, k in enumerate(steps):
        step = torch.eye(N, dtype=torch.float64) - lr * tt / N
        power = torch.linalg.matrix_power(step, k)
        # Round-off: k products of a matrix of norm <= 1 lose ~k * eps; 1e-11 leaves margin.
        assert torch.allclose(pred.train_mean[i], y - power @ y, rtol=0, atol=1e-11)
        assert torch.allclose(pred.mean[i], st @ torch.linalg.solve(tt, y - power @ y), rtol=0, atol=1e-9)
    assert torch.equal(pred.t, torch.tensor(steps, dtype=torch.float64) * lr)


def test_discrete_tends_to_continuous_at_first_order(kernels):
    """At fixed t = lr k the difference is O(lr): halving lr halves it (ratio in [0.45, 0.55],
    the second-order term being ~lr / 2 relative to the first here)."""
    tt, st, y, _ = kernels
    flow = GradientFlow(tt, y)
    t = 5.0
    exact = flow.predict(t, ntk_test_train=st).mean[0]
    errors = []
    for lr in (0.1, 0.05, 0.025):
        approx = flow.predict_steps(round(t / lr), lr, ntk_test_train=st).mean[0]
        errors.append(float((approx - exact).abs().max()))
    assert errors[-1] < 1e-2 * float(exact.abs().max())
    for a, b in zip(errors, errors[1:], strict=False):
        assert 0.45 < b / a < 0.55


def test_infinitely_many_steps_equal_the_flows_limit(kernels):
    tt, st, y, _ = kernels
    flow = GradientFlow(tt, y)
    a = flow.predict_steps(float("inf"), 0.5 * flow.max_learning_rate, ntk_test_train=st)
    b = flow.predict(float("inf"), ntk_test_train=st)
    assert torch.allclose(a.mean, b.mean, rtol=0, atol=1e-12)


def test_largest_stable_learning_rate(kernels):
    tt, st, y, _ = kernels
    limit = max_learning_rate(tt)
    assert limit == pytest.approx(2 * N / float(torch.linalg.eigvalsh(tt)[-1]), rel=1e-12)
    flow = GradientFlow(tt, y)
    assert flow.max_learning_rate == pytest.approx(limit, rel=1e-12)
    # Just below: the top component still shrinks; just above: it grows, and k = inf has no limit.
    below = flow.predict_steps([0, 2000], 0.999 * limit).train_mean
    assert float((below[1] - y).norm()) < float((below[0] - y).norm())
    with pytest.warns(RuntimeWarning, match="2 N / lambda_max"):
        above = flow.predict_steps([0, 2000], 1.01 * limit).train_mean
    assert float((above[1] - y).norm()) > 1e3 * float((above[0] - y).norm())
    with pytest.raises(ValueError, match="does not exist"):
        flow.predict_steps(float("inf"), 1.01 * limit)
    with pytest.raises(ValueError, match="whole numbers"):
        flow.predict_steps(2.5, 0.1)
    with pytest.raises(ValueError, match="lr"):
        flow.predict_steps(2, -0.1)


def test_predict_gradient_descent_from_a_spec(kernels):
    _, _, y, x = kernels
    spec = tn.mlp(3, "erf", bias_std=0.2)
    pred = predict_gradient_descent(spec, x[:N], y, x[N:], steps=[0, 3], lr=1.0)
    flow = GradientFlow(spec.ntk(x[:N]), y, nngp_train=spec.nngp(x[:N]))
    nngp, ntk = spec.kernels(x[N:], x[:N])
    ref = flow.predict_steps([0, 3], 1.0, ntk_test_train=ntk, nngp_test_train=nngp, nngp_test=spec.nngp(x[N:]))
    assert torch.allclose(pred.mean, ref.mean, rtol=0, atol=1e-14)
    assert torch.allclose(pred.cov, ref.cov, rtol=0, atol=1e-14)


class _Linearized(nn.Module):
    """f(x) = f_0(x) + J(x) delta: a network linearised at its initialisation (a forward-mode jvp).

    Gradient descent on delta is exactly kernel gradient descent with the fixed empirical NTK
    Theta = J J^T, so `predict_steps` must reproduce its training to round-off.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.params0 = {name: p.detach().clone() for name, p in net.named_parameters()}
        self.delta = nn.ParameterList(nn.Parameter(torch.zeros_like(p)) for p in self.params0.values())

    def _f(self, params, x):
        return functional_call(self.net, params, (x,))

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """The explicit Jacobian (N, P), to build the kernel independently of the training path."""
        jac = jacrev(self._f)(self.params0, x)
        return torch.cat([j.reshape(x.shape[0], -1) for j in jac.values()], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tangents = dict(zip(self.params0, self.delta, strict=True))
        f0, df = jvp(lambda p: self._f(p, x), (self.params0,), (tangents,))
        return f0 + df


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # inside torch.func
def test_k_step_prediction_matches_training_a_linearised_network():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N + M, 3, generator=g, dtype=torch.float64)
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    net = tn.mlp(3, "tanh", bias_std=0.3).network(width=32, out_features=1, seed=7, dtype=torch.float64)
    net(x)
    model = _Linearized(net)
    for p in net.parameters():
        p.requires_grad_(False)  # only delta trains
    jac_train, jac_test = model.jacobian(x[:N]), model.jacobian(x[N:])
    theta, cross = jac_train @ jac_train.T, jac_test @ jac_train.T  # the empirical NTK, fixed
    lr = 0.5 * max_learning_rate(theta)
    run = tn.train(model, x[:N], y, lr=lr, steps=60, x_test=x[N:], record_every=20, record=("outputs",))
    pred = GradientFlow(theta, y).predict_steps(run.steps, lr, ntk_test_train=cross, f0_train=run.outputs_train[0],
                                               f0_test=run.outputs_test[0])
    # Round-off only: 60 steps of float64 updates of O(1) outputs, ~60 * 1e-16 * cond(theta).
    bound = 1e-9
    assert np.abs(pred.train_mean.numpy() - run.outputs_train).max() < bound
    assert np.abs(pred.mean.numpy() - run.outputs_test).max() < bound
    assert float(np.abs(run.outputs_train[-1] - run.outputs_train[0]).max()) > 0.1  # it really trained
