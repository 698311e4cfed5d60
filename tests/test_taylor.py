"""Taylor expansions in the parameters (torchntk.linearize), as a specification.

g_d(x; theta) = sum_{j <= d} (1/j!) D^j f(x; theta0)[theta - theta0]^j, trainable from theta0.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import torchntk as tn
from torchntk.empirical import empirical_ntk
from torchntk.studies.rates import BORNE_OUT, fit_loglog
from torchntk.taylor import linearize, taylor_expand

F64 = torch.float64


def _x(n, d=3, seed=0):
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _net(width=16, k=2, depth=3, activation="tanh", seed=0):
    spec = tn.mlp(depth, activation, bias_std=0.3)
    return spec.network(width=width, out_features=k, seed=seed, dtype=F64, in_features=3)


class Scalar(nn.Module):
    """A model with 1-D outputs (N,), a buffer and dropout (in eval mode)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 1))
        self.register_buffer("shift", torch.tensor(0.25))

    def forward(self, x):
        return self.body(x)[:, 0] + self.shift


def _scalar_model():
    model = Scalar().double()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(_x(16, seed=5))  # BatchNorm running statistics away from their initial values
    return model.eval()


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_expansion_starts_at_the_model(degree):
    net = _net()
    g = taylor_expand(net, degree)
    x = _x(5)
    # At theta = theta0 every term but the first vanishes: equal to round-off (exactly, in practice).
    torch.testing.assert_close(g(x), net(x), rtol=0, atol=1e-14)
    trainable = [p for p in g.parameters() if p.requires_grad]
    assert len(trainable) == len(list(net.parameters()))
    assert all(torch.equal(g.named_theta()[name], p) for name, p in net.named_parameters())


def test_buffers_eval_mode_and_one_dimensional_outputs():
    model = _scalar_model()
    lin = linearize(model)
    x = _x(6)
    out = lin(x)
    assert out.shape == (6,)
    torch.testing.assert_close(out, model(x), rtol=0, atol=1e-14)  # eval: BatchNorm's buffers, no dropout
    assert not lin.training


def test_training_the_expansion_leaves_the_model_alone():
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    lin = linearize(net)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    x, y = _x(5), _x(5, d=2, seed=1)
    for _ in range(5):
        opt.zero_grad()
        ((lin(x) - y) ** 2).mean().backward()
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))
    assert (lin(x) - net(x)).abs().max() > 1e-3  # it did move


def test_the_linearisation_is_affine_in_theta_with_the_models_jacobian():
    """g_1(theta0 + v) - g_1(theta0) = J(theta0) v, and the NTK of g_1 is the model's at theta0."""
    net = _net()
    lin = linearize(net)
    x = _x(4)
    ntk0 = empirical_ntk(net, x)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in lin.theta.values():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    # Round-off of sums of products in float64 (kernel entries ~1).
    torch.testing.assert_close(empirical_ntk(lin, x), ntk0, rtol=1e-12, atol=1e-12)
    twice = {name: 2 * (t - t0) + t0 for (name, t), t0 in zip(lin.named_theta().items(), lin.theta0().values(),
                                                             strict=True)}
    step1 = lin(x) - net(x)
    with torch.no_grad():
        for key, name in zip(lin._keys, lin.names, strict=True):
            lin.theta[key].copy_(twice[name])
    torch.testing.assert_close(lin(x) - net(x), 2 * step1, rtol=1e-12, atol=1e-13)


# -- the statements --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_gradient_descent_on_the_linearisation_is_kernel_gradient_descent(k):
    """Full-batch GD on C = (1/2N)|g - y|^2 gives g_s(X) - y = (I - lr Theta / N)^s (g_0(X) - y),
    Theta the (N k, N k) empirical NTK of the model at theta0: exactly, for a linear model."""
    net = _net(width=32, k=k)
    lin = linearize(net)
    n, lr, steps = 6, 0.5, 20
    x, y = _x(n), _x(n, d=k, seed=1)
    run = tn.train(lin, x, y, lr=lr, steps=steps, record_every=5, record=("outputs",))
    theta = empirical_ntk(net, x).permute(0, 2, 1, 3).reshape(n * k, n * k)
    step = torch.eye(n * k, dtype=F64) - lr * theta / n
    residual = (net(x).detach() - y).reshape(-1)
    for s, outputs in zip(run.steps, run.outputs_train, strict=True):
        want = y.reshape(-1) + torch.linalg.matrix_power(step, int(s)) @ residual
        # float64 round-off accumulated over 20 steps of O(1) products: ~1e-14; 1e-11 leaves room.
        np.testing.assert_allclose(outputs.reshape(-1), want.numpy(), rtol=0, atol=1e-11)


def test_tn_train_records_a_constant_kernel_for_the_linearisation():
    """With tn.train's default records, the linearised network's NTK stays the model's NTK at theta0."""
    net = _net(width=8, k=2)
    lin = linearize(net)
    x, y = _x(4), _x(4, d=2, seed=1)
    run = tn.train(lin, x, y, lr=0.5, steps=6, record_every=3)
    want = empirical_ntk(net, x).numpy()
    for ntk in run.ntk:
        np.testing.assert_allclose(ntk, want, rtol=0, atol=1e-12)  # float64 round-off of O(1) entries
    assert run.weight_change[-1].max() > 0  # the parameters did move


def test_a_torch_optimiser_on_a_one_dimensional_model_follows_the_kernel_too():
    model = _scalar_model()
    lin = linearize(model)
    n, lr = 8, 0.3
    x, y = _x(n, seed=2), _x(n, d=1, seed=3)[:, 0]
    opt = torch.optim.SGD(lin.parameters(), lr=lr)
    for _ in range(10):
        opt.zero_grad()
        (0.5 * ((lin(x) - y) ** 2).mean()).backward()
        opt.step()

    class Column(nn.Module):  # the empirical NTK takes (N, k) outputs
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)[:, None]

    theta = empirical_ntk(Column(model), x)[:, :, 0, 0]
    want = y + torch.linalg.matrix_power(torch.eye(n, dtype=F64) - lr * theta / n, 10) @ (model(x) - y)
    torch.testing.assert_close(lin(x), want.detach(), rtol=0, atol=1e-12)  # float64 round-off


def test_second_order_error_shrinks_as_the_cube_of_the_step():
    """|f(theta0 + t v) - g_2(theta0 + t v)| = O(t^3) (and O(t^2) for g_1): fitted slopes."""
    net = _net(width=8)
    x = _x(5)
    theta0 = {name: p.detach() for name, p in net.named_parameters()}
    g = torch.Generator().manual_seed(4)
    direction = {name: torch.randn(p.shape, generator=g, dtype=F64) for name, p in theta0.items()}
    steps = np.array([0.08, 0.04, 0.02, 0.01, 0.005])
    errors = {1: [], 2: []}
    for degree in (1, 2):
        expansion = taylor_expand(net, degree)
        for t in steps:
            moved = {name: theta0[name] + t * direction[name] for name in theta0}
            with torch.no_grad():
                for key, name in zip(expansion._keys, expansion.names, strict=True):
                    expansion.theta[key].copy_(moved[name])
                exact = functional_call(net, moved, (x,))
                errors[degree].append(float((expansion(x) - exact).abs().max()))
    for degree, want in ((1, 2.0), (2, 3.0)):
        slope = np.polyfit(np.log(steps), np.log(errors[degree]), 1)[0]
        # The next Taylor term contributes O(t) relative: over t <= 0.08 the slope is within 0.15 of
        # the order (the smallest error, ~1e-8, is far above float64 round-off ~1e-15).
        assert abs(slope - want) < 0.15, (degree, slope, errors[degree])




def test_the_gap_between_a_trained_network_and_its_linearisation_shrinks_with_width(one_thread):
    """Lee et al. (2019): sup_t |f_t - g_t| = O(width^-1/2). Fitted slope, judged as a bound."""
    from torchntk.studies.linearization import linearization_gap

    widths = [32, 64, 128, 256, 512]
    x, y = _x(6, seed=7).float(), torch.sin(_x(6, seed=7)[:, :1]).float()
    gaps = np.zeros((len(widths), 2))
    for wi, width in enumerate(widths):
        for s in range(2):
            net = tn.mlp(3, "tanh", bias_std=0.3).network(width=width, out_features=1, seed=s, in_features=3)
            gaps[wi, s], moved = linearization_gap(net, x, y, lr=1.0, steps=40, record_every=20)
            assert gaps[wi, s] < moved  # the functions did move, and the gap is a part of that
    fit = fit_loglog(np.array(widths), gaps, -0.5, 0.95, "bound")
    # Borne out: the slope's 95% interval lies below 0 and not entirely above -1/2.
    assert fit.verdict == BORNE_OUT, fit.describe()
    assert fit.slope < -0.4, fit.describe()


# -- bad input -------------------------------------------------------------------------------


def test_bad_input_gives_clear_errors():
    net = _net()
    with pytest.raises(ValueError, match="degree"):
        taylor_expand(net, 0)
    with pytest.raises(TypeError, match="nn.Module"):
        linearize(lambda x: x)
    frozen = _net()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        linearize(frozen)
    lazy = tn.mlp(2, "relu").network(width=4, out_features=1, seed=0)
    with pytest.raises(ValueError, match="not built"):
        linearize(lazy)
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double().train()
    with pytest.raises(RuntimeError, match="eval"):
        linearize(bn)(_x(4))


def test_is_exported():
    assert tn.linearize is linearize and tn.taylor_expand is taylor_expand
