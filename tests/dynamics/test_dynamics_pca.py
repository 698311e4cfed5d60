"""Kernel principal components: eigenpairs of Theta(X, X) / N and the decay of the residual along them.

Specification (docs/conventions.md): the residual's coordinate along the i-th eigenfunction of Theta / N
decays as exp(-lambda_i t) under gradient flow; eigenfunctions are normalised in the data inner
product (1/N) sum_j f(x_j)^2 = 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import torchntk as tn
from torchntk.dynamics import GradientFlow, principal_components

N = 16


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N, 5, generator=g, dtype=torch.float64)
    y = torch.randn(N, 2, generator=g, dtype=torch.float64)
    f0 = torch.randn(N, 2, generator=g, dtype=torch.float64)
    return tn.mlp(4, "relu", bias_std=0.1).ntk(x), y, f0


def test_eigenpairs_of_the_kernel_over_n_largest_first(setup):
    theta, _, _ = setup
    pcs = principal_components(theta)
    reference = np.sort(np.linalg.eigvalsh(theta.numpy()))[::-1] / N
    # float64 symmetric eigenvalues: backward stable, error ~ N eps lambda_max.
    np.testing.assert_allclose(pcs.eigenvalues.numpy(), reference, rtol=0, atol=1e-12 * reference[0])
    assert bool((pcs.eigenvalues[:-1] >= pcs.eigenvalues[1:]).all())
    f = pcs.eigenfunctions
    np.testing.assert_allclose((f.T @ f / N).numpy(), np.eye(N), atol=1e-12)
    np.testing.assert_allclose((theta / N @ f).numpy(), (f * pcs.eigenvalues).numpy(), atol=1e-12 * reference[0] * N)


def test_coordinates_reconstruct_the_residual(setup):
    theta, y, f0 = setup
    pcs = principal_components(theta)
    residual = f0 - y
    c = pcs.coordinates(residual)
    assert c.shape == (N, 2)
    np.testing.assert_allclose((pcs.eigenfunctions @ c).numpy(), residual.numpy(), atol=1e-12)
    assert pcs.coordinates(residual[:, 0]).shape == (N,)


def test_predicted_decay_is_the_flows_residual(setup):
    """c_i(t) = c_i(0) exp(-lambda_i t) reassembles f_t(X) - y = exp(-t Theta / N) (f_0 - y)."""
    theta, y, f0 = setup
    times = [0.0, 0.7, 5.0, float("inf")]
    flow = GradientFlow(theta, y)
    pcs = flow.principal_components()
    decayed = pcs.decay(times, pcs.coordinates(f0 - y))
    assert decayed.shape == (len(times), N, 2)
    for i, t in enumerate(times):
        expected = np.zeros((N, 2)) if np.isinf(t) else scipy.linalg.expm(-t * theta.numpy() / N) @ (f0 - y).numpy()
        np.testing.assert_allclose((pcs.eigenfunctions @ decayed[i]).numpy(), expected, atol=1e-11)
    pred = flow.predict(times[:-1], f0_train=f0)
    np.testing.assert_allclose((pcs.eigenfunctions @ decayed[:-1]).numpy(), (pred.train_mean - y).numpy(), atol=1e-11)


def test_bad_residual_shape():
    pcs = principal_components(torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="residual"):
        pcs.coordinates(torch.zeros(4))
