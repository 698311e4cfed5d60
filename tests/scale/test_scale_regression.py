"""KernelRegression: the t = inf NTK mean and the NNGP posterior mean for large N, against the
dense formula k(x, X) (k(X, X) + ridge I)^-1 y."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.scale import KernelRegression

pytest.importorskip("zarr")

SPEC = tn.mlp(depth=3, activation="relu", bias_std=0.1)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :2] @ torch.tensor([[1.0, 0.5], [-0.3, 1.0]], dtype=torch.float64)) + 0.1 * torch.randn(
        300, 2, generator=g, dtype=torch.float64)
    x_test = torch.randn(57, 6, generator=g, dtype=torch.float64)
    return x, y, x_test


def _dense_mean(kernel, x, y, x_test, ridge):
    a = kernel(x) + ridge * torch.eye(x.shape[0], dtype=torch.float64)
    return kernel(x_test, x) @ torch.linalg.solve(a, y)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_ntk_mean_from_a_store(data, tmp_path, solver):
    x, y, x_test = data
    ridge = 1e-3
    model = KernelRegression(SPEC, ridge=ridge, store=tmp_path / "K.zarr", solver=solver, tol=1e-10, tile=128,
                             dtype=torch.float64, rank=60).fit(x, y)
    expected = _dense_mean(SPEC.ntk, x, y, x_test, ridge)
    # Cholesky: both sides solve the same float64 system, agreement ~ cond * eps64 ~ 1e-12.
    # CG to relative residual 1e-10: forward error <= cond * 1e-10, with cond(K + 1e-3 I) ~ 1e4
    # here, so 1e-6 relative bounds both.
    torch.testing.assert_close(model.predict(x_test), expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    assert (model.solve_ is None) == (solver == "cholesky")
    assert model.kernel_ is not None and model.kernel_.complete


def test_nngp_posterior_mean_without_a_store(data):
    x, y, x_test = data
    ridge = 0.05  # the GP's noise variance
    model = KernelRegression(SPEC, kind="nngp", ridge=ridge, solver="cg", tol=1e-10, tile=100,
                             dtype=torch.float64, rank=40).fit(x, y[:, 0])
    expected = _dense_mean(SPEC.nngp, x, y[:, 0], x_test, ridge)
    prediction = model.predict(x_test)
    assert prediction.shape == (57,)  # vector targets give vector predictions
    # cond(Sigma + 0.05 I) is ~1e3, times the 1e-10 residual: 1e-6 relative is ample.
    torch.testing.assert_close(prediction, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    assert model.solve_.converged and model.kernel_ is None


def test_t_infinity_interpolates_the_training_targets(data, tmp_path):
    """At t = inf without ridge the trained network fits its training set exactly (docs/conventions.md:
    f_t(X) = y + exp(-t Theta / N)(f_0(X) - y) -> y), in the mean over initialisations."""
    x, y, _ = data
    model = KernelRegression(SPEC, store=tmp_path / "I.zarr", solver="cg", tol=1e-10, tile=128,
                             dtype=torch.float64, rank=60).fit(x.numpy(), y.numpy())
    fitted = model.predict(x.numpy())
    assert isinstance(fitted, np.ndarray)  # numpy in, numpy out
    # Residual 1e-10 relative to ||y||: each entry within ~1e-9 of its target up to the spread
    # over entries; 1e-7 absolute on O(1) targets leaves room for predict's own round-off.
    np.testing.assert_allclose(fitted, y.numpy(), rtol=0, atol=1e-7)


def test_bad_use(data, tmp_path):
    x, y, x_test = data
    with pytest.raises(RuntimeError, match="fit"):
        KernelRegression(SPEC).predict(x_test)
    with pytest.raises(ValueError, match="kind"):
        KernelRegression(SPEC, kind="both").fit(x, y)
    with pytest.raises(ValueError, match="solver"):
        KernelRegression(SPEC, solver="lu").fit(x, y)
    with pytest.raises(ValueError, match="y must have shape"):
        KernelRegression(SPEC).fit(x, y[:10])
    model = KernelRegression(SPEC, dtype=torch.float64, ridge=1e-6).fit(x[:50], y[:50])
    with pytest.raises(ValueError, match="features"):
        model.predict(x_test[:, :3])


def test_repr_names_the_options_that_differ_from_their_defaults_and_the_fit():
    model = KernelRegression(SPEC, ridge=1e-4, tile=64)
    assert repr(model) == f"KernelRegression({SPEC!r}, ridge=0.0001, tile=64)"
    x = np.random.default_rng(0).normal(size=(20, 6))
    model.fit(x, x[:, :2])
    assert repr(model).endswith("tile=64; fitted on 20 points, 2 outputs)")


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        KernelRegression(SPEC, "nngp")
