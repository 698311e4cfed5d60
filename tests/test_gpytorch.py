"""torchntk.gpytorch: NTK and NNGP kernels as GPyTorch kernels.

GPyTorch's own reusable suite (BaseKernelTestCase) checks batches, active dimensions, diagonals,
indexing, dtype and pickling; the tests below it check the values against the network
description's recursion, the raw-parameter pattern, the gradients and a marginal-likelihood fit.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import unittest

import pytest
import torch

gpytorch = pytest.importorskip("gpytorch")
from gpytorch.test.base_kernel_test_case import BaseKernelTestCase  # noqa: E402

import torchntk as tn  # noqa: E402
from torchntk.gpytorch import NNGPKernel, NTKKernel  # noqa: E402


class TestNTKKernelSuite(BaseKernelTestCase, unittest.TestCase):
    def create_kernel_no_ard(self, **kwargs):
        return NTKKernel(depth=3, activation="relu", bias_std=0.3, **kwargs)


class TestNNGPKernelSuite(BaseKernelTestCase, unittest.TestCase):
    # erf (closed form) keeps the suite fast; quadrature activations are checked below on small inputs.
    def create_kernel_no_ard(self, **kwargs):
        return NNGPKernel(depth=2, activation="erf", weight_std=1.5, **kwargs)


def _x(n: int = 7, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("cls, kind", [(NTKKernel, "ntk"), (NNGPKernel, "nngp")])
def test_values_are_the_network_descriptions_kernels(cls, kind):
    # Same recursion in float64: agreement to rounding (1e-12 relative).
    x, z = _x(), _x(5, seed=1)
    kernel = cls(depth=3, activation="tanh").double()
    kernel.bias_std, kernel.weight_std = 0.4, 1.3  # set in float64 (the float32 defaults round 0.4)
    spec = tn.mlp(3, "tanh", bias_std=0.4, weight_std=1.3)
    ref = getattr(spec, kind)
    torch.testing.assert_close(kernel(x).to_dense(), ref(x), rtol=1e-12, atol=0)
    torch.testing.assert_close(kernel(x, z).to_dense(), ref(x, z), rtol=1e-12, atol=0)
    torch.testing.assert_close(kernel(x, diag=True), ref(x, diagonal=True), rtol=1e-12, atol=0)
    # diag with x2 != x1 (same row count): k(x_i, z_i).
    torch.testing.assert_close(kernel(x[:5], z, diag=True), ref(x[:5], z).diagonal(), rtol=1e-12, atol=0)


def test_spec_gives_the_same_kernel_as_depth_and_activation():
    x = _x()
    by_spec = NTKKernel(spec=tn.mlp(4, "silu", bias_std=0.2, weight_std=0.9)).double()
    by_args = NTKKernel(depth=4, activation="silu", bias_std=0.2, weight_std=0.9).double()
    torch.testing.assert_close(by_spec(x).to_dense(), by_args(x).to_dense(), rtol=1e-12, atol=0)
    assert by_spec.bias_std.item() == pytest.approx(0.2) and by_spec.weight_std.item() == pytest.approx(0.9)
    block = tn.serial(tn.Dense(bias_std=0.2, weight_std=0.9), "silu")
    nested = NTKKernel(spec=tn.serial(tn.serial(block, block), block, tn.Dense(bias_std=0.2, weight_std=0.9)))
    torch.testing.assert_close(nested.double()(x).to_dense(), by_args(x).to_dense(), rtol=1e-12, atol=0)


def test_scales_follow_the_raw_parameter_pattern():
    kernel = NTKKernel(depth=2, bias_std=0.25, weight_std=2.0, batch_shape=torch.Size([3]))
    names = dict(kernel.named_parameters())
    assert set(names) == {"raw_bias_std", "raw_weight_std"}
    assert names["raw_bias_std"].shape == (3, 1)
    assert isinstance(kernel.raw_bias_std_constraint, gpytorch.constraints.Positive)
    torch.testing.assert_close(kernel.bias_std, torch.full((3, 1), 0.25))
    # Any raw value maps to a positive scale.
    with torch.no_grad():
        kernel.raw_bias_std.fill_(-30.0)
    assert (kernel.bias_std > 0).all()
    kernel.weight_std = 0.5
    torch.testing.assert_close(kernel.weight_std, torch.full((3, 1), 0.5))


def test_each_batch_member_uses_its_own_scales():
    x = _x()
    kernel = NNGPKernel(depth=3, batch_shape=torch.Size([2])).double()
    kernel.bias_std = torch.tensor([[0.1], [0.7]], dtype=torch.float64)
    kernel.weight_std = 1.0  # again in float64: the float32 default's raw value rounds
    out = kernel(x).to_dense()
    assert out.shape == (2, 7, 7)
    for b, beta in enumerate((0.1, 0.7)):
        torch.testing.assert_close(out[b], tn.mlp(3, bias_std=beta).nngp(x), rtol=1e-12, atol=0)


def test_gradients_in_the_raw_parameters_match_finite_differences():
    # gradcheck compares autograd with central differences in float64 (its default tolerances).
    x = _x(5)
    kernel = NTKKernel(depth=3, activation="erf").double()

    def matrix(raw_bias, raw_weight):
        kernel.raw_bias_std.data, kernel.raw_weight_std.data = raw_bias.detach(), raw_weight.detach()
        bias = kernel.raw_bias_std_constraint.transform(raw_bias)
        weight = kernel.raw_weight_std_constraint.transform(raw_weight)
        return kernel._spec(bias[0], weight[0]).ntk(x)

    raw = (torch.tensor([0.3], dtype=torch.float64, requires_grad=True),
           torch.tensor([0.8], dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(matrix, raw)
    # And through the kernel's own forward: the gradient reaches both raw parameters.
    kernel(x).to_dense().sum().backward()
    assert kernel.raw_bias_std.grad.abs().item() > 0 and kernel.raw_weight_std.grad.abs().item() > 0


def test_marginal_likelihood_fit_improves_the_likelihood():
    # A few Adam steps of an ExactGP on a smooth target must raise the marginal likelihood and
    # move both scales: the hyperparameters are really learned through the kernel.
    x = torch.linspace(-2, 2, 30, dtype=torch.float64)[:, None]
    y = torch.sin(2 * x[:, 0])

    class GP(gpytorch.models.ExactGP):
        def __init__(self, likelihood):
            super().__init__(x, y, likelihood)
            self.mean = gpytorch.means.ZeroMean()
            self.covar = NTKKernel(depth=3, bias_std=0.1)

        def forward(self, inputs):
            return gpytorch.distributions.MultivariateNormal(self.mean(inputs), self.covar(inputs))

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = GP(likelihood).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    model.train()
    start = (model.covar.bias_std.item(), model.covar.weight_std.item())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert model.covar.bias_std.item() != pytest.approx(start[0], rel=1e-3)
    assert model.covar.weight_std.item() != pytest.approx(start[1], rel=1e-3)
    model.eval()
    with torch.no_grad():
        pred = likelihood(model(torch.tensor([[0.3]], dtype=torch.float64)))
    assert pred.mean.shape == (1,) and pred.variance.item() > 0


def test_kernels_with_priors_pickle():
    kernel = NTKKernel(depth=2, bias_std_prior=gpytorch.priors.GammaPrior(2.0, 4.0))
    copy = pickle.loads(pickle.dumps(kernel))
    x = _x().float()
    torch.testing.assert_close(copy(x).to_dense(), kernel(x).to_dense())
    assert [name for name, *_ in copy.named_priors()] == ["bias_std_prior"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"spec": tn.mlp(2), "depth": 3}, ValueError, "either spec"),
    ({"spec": tn.serial(tn.Dense(bias_std=0.1), "relu", tn.Dense(bias_std=0.2))}, ValueError, "different bias_std"),
    ({"spec": "mlp"}, TypeError, "network description"),
    ({"spec": tn.serial(tn.Conv(2), tn.ReLU(), tn.Flatten(), tn.Dense())}, TypeError, "fully-connected"),
    ({"bias_std": -1.0}, ValueError, "outside its constraint"),
    ({"weight_std": "big"}, TypeError, "positive number"),
    ({"depth": 0}, ValueError, "depth must be >= 1"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, error, match):
    with pytest.raises(error, match=match):
        NTKKernel(**kwargs)


def test_import_torchntk_does_not_import_gpytorch():
    code = "import sys, torchntk; sys.exit('gpytorch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
