"""The network description and its kernels: API contract, structure, and conformance.

Every activation runs through the same conformance checks (as GPyTorch does for its kernels):
symmetry, diagonal = diagonal of the full matrix, blocks of K([X; Z]) = K(X, Z), tiling
invariance, positive semi-definiteness, dtype handling, numpy in / numpy out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchntk as tn

ALL_ACTIVATIONS = ["relu", "leaky_relu", "abs", "identity", "erf", "sin", "cos", "gelu",
                   "tanh", "sigmoid", "softplus", "silu", "elu"]


def _activation(name):
    """Quadrature activations at a low order: these tests check structure, not accuracy
    (tests/activations/ does that), and the low order keeps them fast."""
    if name in tn.activations.QUADRATURE:
        return tn.Activation(tn.activations.QUADRATURE[name], name=name, nodes=8)
    return name


def _inputs(n=9, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


# -- structure ------------------------------------------------------------------------

def test_mlp_depth_counts_dense_layers():
    spec = tn.mlp(depth=4, activation="relu", bias_std=0.1)
    assert spec.depth == 4
    assert len(spec.activations) == 3
    assert isinstance(spec.layers[0], tn.Dense) and isinstance(spec.layers[-1], tn.Dense)
    assert len(tn.mlp(depth=1).layers) == 1 and tn.mlp(depth=1).depth == 1


def test_serial_accepts_names_objects_and_callables():
    spec = tn.serial(tn.Dense(bias_std=0.1), tn.ReLU(), tn.Dense(bias_std=0.1),
                     tn.Activation(torch.tanh), tn.Dense(bias_std=0.1))
    assert spec.depth == 3
    spec2 = tn.serial(tn.Dense(), "relu", tn.Dense(), torch.tanh, tn.Dense())
    x = _inputs()
    # The same description given two ways gives the same kernels.
    torch.testing.assert_close(spec.ntk(x), tn.serial(tn.Dense(bias_std=0.1), "relu", tn.Dense(bias_std=0.1),
                                                      "tanh", tn.Dense(bias_std=0.1)).ntk(x), rtol=0, atol=0)
    assert spec2.depth == 3


def test_activation_objects_work_in_mlp():
    x = _inputs()
    a = tn.mlp(3, activation=tn.LeakyReLU(0.1)).ntk(x)
    b = tn.mlp(3, activation=tn.PiecewiseLinear(1.0, 0.1)).ntk(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- known cases --------------------------------------------------------------------------

@pytest.mark.parametrize("w, b", [(1.0, 0.0), (1.3, 0.1), (0.5, 1.0)])
def test_depth_one_is_the_affine_kernel(w, b):
    """Depth 1: Sigma = Theta = w^2 x.x'/n0 + b^2 (paper, proof of Proposition 1)."""
    x1, x2 = _inputs(7, 4, 1), _inputs(5, 4, 2)
    nngp, ntk = tn.mlp(1, bias_std=b, weight_std=w).kernels(x1, x2)
    expected = w**2 * x1 @ x2.T / 4 + b**2
    # Same arithmetic up to summation order: float64 round-off.
    torch.testing.assert_close(nngp, expected, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(ntk, expected, rtol=1e-14, atol=1e-14)


def test_identity_activation_gives_the_linear_recursion():
    """sigma(x) = x: Sigma(l+1) = w^2 Sigma(l) + b^2, Theta(l+1) = w^2 Theta(l) + Sigma(l+1)."""
    w, b, depth = 0.9, 0.3, 5
    x1, x2 = _inputs(6, 3, 3), _inputs(4, 3, 4)
    sigma = w**2 * x1 @ x2.T / 3 + b**2
    theta = sigma.clone()
    for _ in range(depth - 1):
        sigma = w**2 * sigma + b**2
        theta = w**2 * theta + sigma
    nngp, ntk = tn.mlp(depth, "identity", bias_std=b, weight_std=w).kernels(x1, x2)
    torch.testing.assert_close(nngp, sigma, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(ntk, theta, rtol=1e-13, atol=1e-14)


# -- conformance over every activation ----------------------------------------------------------

@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_conformance(activation):
    spec = tn.mlp(3, _activation(activation), bias_std=0.2)
    x, z = _inputs(8, 4, 5), _inputs(5, 4, 6)
    nngp, ntk = spec.kernels(x)
    # x2=None is exactly symmetric.
    assert torch.equal(nngp, nngp.T) and torch.equal(ntk, ntk.T)
    # diagonal=True is the diagonal of the full matrix (same arithmetic on the diagonal: exact up
    # to the order of a few float64 operations).
    kd, td = spec.kernels(x, diagonal=True)
    torch.testing.assert_close(kd, nngp.diagonal(), rtol=1e-13, atol=0)
    torch.testing.assert_close(td, ntk.diagonal(), rtol=1e-13, atol=0)
    # Blocks of K([X; Z]) equal K(X, Z): 1e-12 allows the GEMM's blocking to round differently.
    both = torch.cat([x, z])
    full_nngp, full_ntk = spec.kernels(both)
    cross_nngp, cross_ntk = spec.kernels(x, z)
    torch.testing.assert_close(full_nngp[:8, 8:], cross_nngp, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(full_ntk[:8, 8:], cross_ntk, rtol=1e-12, atol=1e-13)
    # nngp() and ntk() agree with kernels().
    torch.testing.assert_close(spec.nngp(x, z), cross_nngp, rtol=0, atol=0)
    torch.testing.assert_close(spec.ntk(x, z), cross_ntk, rtol=0, atol=0)


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu", "tanh"])
def test_tiling_does_not_change_the_result(activation):
    spec = tn.mlp(3, _activation(activation), bias_std=0.1)
    x, z = _inputs(13, 3, 7), _inputs(9, 3, 8)
    for x2 in (None, z):
        ref = spec.kernels(x, x2, tile=1000)
        for tile in (4, 5):
            got = spec.kernels(x, x2, tile=tile)
            for a, b in zip(got, ref, strict=False):
                # Tiles change only which rows share a GEMM call: float64 round-off.
                torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_kernels_are_positive_semidefinite(activation):
    # Default quadrature order: positive semi-definiteness holds only up to the quadrature's
    # error, so this checks the accuracy users get, on fewer points to stay fast.
    spec = tn.mlp(4, activation, bias_std=0.1)
    x = _inputs(24, 6, 9)
    for k in spec.kernels(x):
        eig = torch.linalg.eigvalsh(k)
        # Smallest eigenvalue >= -(round-off of an eigensolver on this matrix); for quadrature
        # activations also the entries' error (~1e-7 relative, times N): 1e-12 and 1e-6.
        tolerance = 1e-6 if activation in tn.activations.QUADRATURE else 1e-12
        assert eig.min() >= -tolerance * eig.max()


def test_zero_vector_duplicates_antipodes_and_extreme_norms_are_finite():
    base = _inputs(3, 4, 10)
    x = torch.cat([base, base[:1], -base[:1], torch.zeros(1, 4), 1e-3 * base[1:2], 1e3 * base[2:3]])
    for activation in ["relu", "abs", "erf", "sin", "cos", "gelu", "tanh"]:
        for b in (0.0, 0.1):
            nngp, ntk = tn.mlp(4, _activation(activation), bias_std=b).kernels(x)
            assert torch.isfinite(nngp).all() and torch.isfinite(ntk).all(), (activation, b)
            # A duplicate row has exactly the same kernel row.
            torch.testing.assert_close(ntk[3], ntk[0], rtol=1e-7, atol=1e-12)


# -- outputs, dtypes, numpy ---------------------------------------------------------------

def test_multiple_outputs_have_the_identity_structure():
    spec = tn.mlp(3)
    x = _inputs(4, 3)
    full = spec.ntk(x, out_features=3)
    scalar = spec.ntk(x)
    assert full.shape == (4, 4, 3, 3)
    torch.testing.assert_close(full, scalar[:, :, None, None] * torch.eye(3, dtype=torch.float64), rtol=0, atol=0)
    assert tn.expand_outputs(scalar, 2).shape == (4, 4, 2, 2)


def test_numpy_in_numpy_out_and_float32_on_request():
    spec = tn.mlp(3)
    x = np.random.default_rng(0).standard_normal((6, 3))
    k = spec.ntk(x)
    assert isinstance(k, np.ndarray) and k.dtype == np.float64 and k.shape == (6, 6)
    k32 = spec.ntk(torch.as_tensor(x), dtype=torch.float32)
    assert k32.dtype == torch.float32
    # float32 carries ~1e-7 relative round-off through a few layers.
    np.testing.assert_allclose(k32.numpy(), k, rtol=1e-5, atol=1e-6)
    # float32 input still gives float64 by default.
    assert spec.ntk(torch.as_tensor(x, dtype=torch.float32)).dtype == torch.float64


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("x, message", [
    (torch.tensor([[1.0, float("nan")]]), "NaN or infinite"),
    (torch.tensor([[1.0, float("inf")]]), "NaN or infinite"),
    (torch.ones(3), "shape \\(N, d\\)"),
    (torch.ones(2, 3, 4), "Dense takes vectors"),
    (torch.ones(0, 3), "empty"),
    (np.array([["a", "b"]]), "real numbers"),
])
def test_bad_inputs_raise_clear_errors(x, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tn.mlp(2).ntk(x)


def test_mismatched_features_raise():
    with pytest.raises(ValueError, match="same number of features"):
        tn.mlp(2).ntk(torch.ones(2, 3), torch.ones(2, 4))


def test_bad_descriptions_raise():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        tn.mlp(0)
    with pytest.raises(ValueError, match="bias_std must be finite and >= 0"):
        tn.mlp(2, bias_std=-0.1)
    with pytest.raises(ValueError, match="weight_std must be finite and >= 0"):
        tn.serial(tn.Dense(weight_std=-1.0))
    with pytest.raises(ValueError, match="unknown activation 'rleu'.*relu"):
        tn.mlp(2, activation="rleu")
    with pytest.raises(TypeError, match="same shape"):
        tn.mlp(2, activation=lambda x: x.sum())
    with pytest.raises(TypeError, match="must map a torch.Tensor"):
        tn.mlp(2, activation=lambda x: 3.0)
    with pytest.raises(tn.ArchitectureError, match="ends with the output of a weighted layer"):
        tn.serial(tn.Dense(), tn.ReLU()).kernels(torch.ones(2, 3))   # as a whole network; nested it may
    with pytest.raises(tn.ArchitectureError, match="nonlinearity needs a Gaussian input"):
        tn.serial(tn.ReLU(), tn.Dense()).kernels(torch.ones(2, 3))
    with pytest.raises(ValueError, match="diagonal=True"):
        tn.mlp(2).ntk(torch.ones(2, 3), torch.ones(2, 3), diagonal=True)
    with pytest.raises(TypeError, match="dtype must be"):
        tn.mlp(2).ntk(torch.ones(2, 3), dtype=torch.int64)


def test_scales_are_given_by_name_and_a_ported_width_says_where_it_goes():
    """neural-tangents' stax.Dense(512) sets the width; read positionally here it would have been
    bias_std=512 (NTK diagonals near 458,854 instead of about 2), so a positional argument is an
    error that says what it would have meant and where the width goes."""
    with pytest.raises(TypeError, match=r"would have meant bias_std=512.*spec.network\(width=512\)"):
        tn.Dense(512)
    with pytest.raises(TypeError, match=r"number of channels.*spec.network\(width=...\)"):
        tn.Conv(64, (3, 3))
    with pytest.raises(TypeError):
        tn.mlp(3, "relu", 0.1)
    assert tn.Dense(bias_std=0.0, weight_std=2.0).to_dict() == {"layer": "Dense", "bias_std": 0.0, "weight_std": 2.0}
