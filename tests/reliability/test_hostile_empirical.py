"""Class 7: the empirical NTK one layer in. Every default (method "auto") kernel equals the
per-sample-Jacobian contraction to round-off whatever the strides, paddings, tied weights and
in-place activations; no call changes the model (its nn.Parameter objects, requires_grad,
buffers) or the caller's inputs; train-mode BatchNorm/Dropout and lazily built networks get one
clear error or a correct result."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchntk as tn

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)  # float64: both sides are sums of O(P) products of O(1) terms


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _auto_equals_jacobian(net, x):
    auto, jac = tn.empirical_ntk(net, x, method="auto"), tn.empirical_ntk(net, x, method="jacobian")
    torch.testing.assert_close(auto, jac, **TOL)


@pytest.mark.parametrize("padding", ["same", "circular"])
def test_torchntk_conv_with_stride_two_is_exact(padding):
    """Pins: "same"/"circular" padding at stride 2 pads (ceil(n/s)-1)s+f-n, not f-1 (was 10-20 % off)."""
    spec = tn.serial(tn.Conv((3, 3), stride=2, padding=padding), tn.ReLU(), tn.Flatten(), tn.Dense())
    net = spec.network(width=8, input_shape=(1, 6, 6), dtype=F64)
    _auto_equals_jacobian(net, _x(5, 1, 6, 6))


def test_monte_carlo_ntk_of_strided_conv_equals_the_jacobian_one():
    """Pins: monte_carlo_kernels' NTK (method auto) inherits the exact strided-conv kernel."""
    spec = tn.serial(tn.Conv((3, 3), stride=2, padding="same"), tn.ReLU(), tn.Flatten(), tn.Dense())
    x = _x(4, 1, 6, 6)
    auto = tn.monte_carlo_kernels(spec, x, width=4, n_samples=2, kernels="ntk")
    jac = tn.monte_carlo_kernels(spec, x, width=4, n_samples=2, kernels="ntk", method="jacobian")
    torch.testing.assert_close(auto.ntk, jac.ntk, **TOL)


def test_torch_conv_with_stride_and_padding_is_exact():
    """Guards: nn.Conv2d with stride 2, zero and circular padding, stacked, against the Jacobian
    (torch's paddings do not depend on the stride; this passed before the fix too)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(3, 2, 2, stride=2, padding=1, padding_mode="circular"), nn.Tanh(),
                        nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).double()
    _auto_equals_jacobian(net, _x(4, 1, 7, 7))


def test_tied_linear_declines_to_the_jacobian():
    """Pins: one nn.Linear used twice sums its two gradients (was 4-6 % off: cross terms missing)."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    net = nn.Sequential(lin, nn.Tanh(), lin, nn.Tanh(), nn.Linear(4, 2)).double()
    _auto_equals_jacobian(net, _x(5, 4))
    with pytest.raises(ValueError, match="tied"):
        tn.empirical_ntk(net, _x(5, 4), method="structured")


def test_tied_conv_declines_to_the_jacobian():
    """Pins: a Conv2d used twice, and one Parameter shared by two modules, are read as tied."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 2, 3, padding=1)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), conv, nn.ReLU(), conv, nn.Flatten(),
                        nn.Linear(2 * 36, 2)).double()
    _auto_equals_jacobian(net, _x(4, 1, 6, 6))
    other = nn.Conv2d(2, 2, 3, padding=1).double()
    other.weight = net[2].weight
    shared = nn.Sequential(net[0], nn.ReLU(), net[2], nn.ReLU(), other, nn.Flatten(), net[6])
    _auto_equals_jacobian(shared, _x(4, 1, 6, 6))


@pytest.mark.parametrize("method", ["jacobian", "ntk_vp", "auto"])
def test_tied_weights_stay_parameters_and_train(method):
    """Pins: the module's nn.Parameters survive empirical_ntk (torch.func's weight tying left plain
    tensors in a module used twice, so the next optimiser step left that layer unchanged)."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    net = nn.Sequential(lin, nn.Tanh(), lin, nn.Linear(4, 2)).double()
    before = list(net.parameters())
    tn.empirical_ntk(net, _x(3, 4), method=method)
    assert all(isinstance(m.weight, nn.Parameter) for m in (net[0], net[2], net[3]))
    assert all(a is b for a, b in zip(before, net.parameters(), strict=True))
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    start = lin.weight.detach().clone()
    net(_x(3, 4)).square().sum().backward()
    optimiser.step()
    assert not torch.equal(lin.weight.detach(), start)


def test_requires_grad_and_buffers_are_untouched():
    """Guards: frozen flags and eval-mode BatchNorm statistics are the same after every method."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net(_x(16, 4, seed=3))
    net.eval()
    net[0].bias.requires_grad_(False)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    for method in ("auto", "jacobian", "ntk_vp"):
        tn.empirical_ntk(net, _x(3, 4), method=method)
    tn.empirical_nngp(net, _x(3, 4))
    assert [p.requires_grad for p in net.parameters()] == flags
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("call", ["ntk", "nngp"])
def test_train_mode_batchnorm_is_a_clear_error_and_keeps_its_statistics(call):
    """Pins: a train-mode BatchNorm says "call model.eval()" (was raw functorch text) and its
    running statistics are unchanged (a failed empirical_ntk and any empirical_nngp moved them)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double().train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    fn = tn.empirical_ntk if call == "ntk" else tn.empirical_nngp
    with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
        fn(net, _x(5, 4))
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_train_mode_dropout_is_a_clear_error():
    """Pins: a train-mode Dropout says "call model.eval()" (was vmap's randomness error)."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match=r"Dropout.*model\.eval\(\)"):
        tn.empirical_ntk(net, _x(5, 4))
    assert net.training


def test_a_forward_that_writes_a_buffer_is_a_clear_error():
    """Pins: any module whose forward changes a buffer gets the eval() error, the buffer put back."""

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", torch.zeros((), dtype=F64))
            self.lin = nn.Linear(4, 2, dtype=F64)

        def forward(self, x):
            self.calls += 1
            return self.lin(x)

    net = Counting()
    for method in ("auto", "jacobian"):
        with pytest.raises(ValueError, match="changes its buffers"):
            tn.empirical_ntk(net, _x(3, 4), method=method)
    assert float(net.calls) == 0


@pytest.mark.parametrize("kind", ["dense", "conv", "first"])
def test_inplace_relu_works_and_leaves_the_inputs(kind):
    """Pins: nn.ReLU(inplace=True) no longer breaks method auto (autograd on a leaf written in
    place), and a model whose first op is in place does not write into the caller's x."""
    torch.manual_seed(0)
    if kind == "conv":
        net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(32, 2))
        x = _x(4, 1, 6, 6)
    elif kind == "dense":
        net, x = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)), _x(4, 4)
    else:
        net, x = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)), _x(4, 4)
    net = net.double()
    original = x.clone()
    _auto_equals_jacobian(net, x)
    tn.empirical_ntk(net, x, method="ntk_vp")
    tn.empirical_nngp(net, x)
    assert torch.equal(x, original)


@pytest.mark.parametrize("spec, shape", [
    (tn.serial(tn.Conv((3, 3)), tn.ReLU(), tn.Flatten(), tn.Dense()), (1, 6, 6)),
    (tn.serial(tn.Conv((2,), stride=2), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()), (2, 8)),
], ids=["conv2d", "conv1d"])
def test_a_fresh_architecture_network_is_built_from_the_inputs(spec, shape):
    """Pins: a network built at its first forward (body None) is built from x1's per-example
    shape instead of failing with "no trainable parameters"; the same weights as a built one."""
    x = _x(3, *shape)
    fresh = spec.network(width=4, seed=3, dtype=F64)
    assert fresh.body is None
    built = spec.network(width=4, seed=3, dtype=F64, input_shape=shape)
    torch.testing.assert_close(tn.empirical_ntk(fresh, x), tn.empirical_ntk(built, x), **TOL)
    fresh = spec.network(width=4, seed=3, dtype=F64)
    tn.empirical_nngp(fresh, x)
    assert fresh.body is not None
