"""One engine for every description: a fully-connected stack is the case with no spatial axes.

- dense-only descriptions written in any nesting are the same network as `mlp`: the same
  kernels to round-off and, for a seed, the same finite network;
- nested descriptions (branches, blocks) may start and end with any layer; only a whole network
  must end with the output of a weighted layer;
- the pre-activation residual MLP, refused before the engines were one, has exact kernels that
  Monte Carlo over its own finite networks confirms.
"""

import pytest
import torch

import torchntk as tn

X = torch.randn(9, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

# Round-off: each form runs the same maps in the same order on the same tiles, but a nested
# form may group the in-place updates differently; a few ulps of the kernels' O(1) entries.
ROUND_OFF = dict(rtol=1e-13, atol=1e-14)


def _nestings(depth: int, act) -> list:
    """Dense-only descriptions of mlp(depth, act) in different nestings."""
    d = tn.Dense
    flat = [d()] + [layer for _ in range(depth - 1) for layer in (act, d())]
    blocks = [tn.serial(d(), act) for _ in range(depth - 1)]
    return [
        tn.serial(*flat),
        tn.serial(*blocks, d()),                                   # serial(serial(Dense, act), ..., Dense)
        tn.serial(d(), *[tn.serial(act, d()) for _ in range(depth - 1)]),   # pre-activation blocks
        tn.serial(tn.serial(tn.serial(flat[0], flat[1]), *flat[2:-1]), flat[-1]),  # nested three deep
        tn.serial(flat),                                            # a list
        tn.serial(tn.mlp(depth, act)),                              # mlp inside a serial
    ]


@pytest.mark.parametrize("act", [tn.ReLU(), tn.Erf(), tn.Activation(torch.tanh, name="tanh", nodes=16)],
                         ids=["relu", "erf", "tanh-quadrature"])
@pytest.mark.parametrize("depth", [2, 4])
def test_dense_descriptions_in_any_nesting_equal_mlp(depth, act):
    reference = tn.mlp(depth, act)
    K, T = reference.kernels(X)
    K12, T12 = reference.kernels(X[:4], X[4:])
    diag = reference.ntk(X, diagonal=True)
    for spec in _nestings(depth, act):
        assert spec.depth == depth
        k, t = spec.kernels(X)
        torch.testing.assert_close(k, K, **ROUND_OFF)
        torch.testing.assert_close(t, T, **ROUND_OFF)
        k12, t12 = spec.kernels(X[:4], X[4:])
        torch.testing.assert_close(k12, K12, **ROUND_OFF)
        torch.testing.assert_close(t12, T12, **ROUND_OFF)
        torch.testing.assert_close(spec.ntk(X, diagonal=True), diag, **ROUND_OFF)


def test_dense_descriptions_in_any_nesting_build_the_same_finite_network():
    """Weighted layers are numbered depth-first, so every nesting draws the same parameters."""
    x = X.float()
    reference = tn.mlp(4, "relu").network(width=32, out_features=3, seed=7)
    y = reference(x)
    for spec in _nestings(4, tn.ReLU()):
        net = spec.network(width=32, out_features=3, seed=7)
        assert net.widths == (None, 32, 32, 32, 3)            # the first layer is drawn at the first call
        assert torch.equal(net(x), y) and net.widths == reference.widths == (4, 32, 32, 32, 3)
        _, hidden = net(x, return_hidden=True)
        _, hidden_ref = reference(x, return_hidden=True)
        for key in ("preactivations", "activations"):
            assert len(hidden[key]) == 3 and all(torch.equal(a, b) for a, b in zip(hidden[key], hidden_ref[key],
                                                                                   strict=True))


def test_consecutive_dense_layers_compose():
    """Two affine maps in a row are allowed: Sigma' = w2^2 (w1^2 x.x'/n0 + b1^2) + b2^2, and the NTK
    adds the first layer's kernel carried through the second, Theta' = w2^2 Sigma_1 + Sigma'."""
    w1, b1, w2, b2 = 1.3, 0.2, 0.7, 0.5
    K, T = tn.serial(tn.Dense(bias_std=b1, weight_std=w1), tn.Dense(bias_std=b2, weight_std=w2)).kernels(X)
    gram = X @ X.T / X.shape[1]
    sigma1 = w1 ** 2 * gram + b1 ** 2
    expected_k = w2 ** 2 * sigma1 + b2 ** 2
    torch.testing.assert_close(K, expected_k, **ROUND_OFF)
    torch.testing.assert_close(T, w2 ** 2 * sigma1 + expected_k, **ROUND_OFF)


def test_nested_descriptions_may_start_and_end_with_any_layer():
    """A block may end with an activation and a branch may start with one; only the whole
    network is held to the paper's convention f = a~(L)."""
    block = tn.serial(tn.Dense(), tn.ReLU())
    spec = tn.serial(block, block, tn.Dense())
    torch.testing.assert_close(spec.ntk(X), tn.mlp(3).ntk(X), **ROUND_OFF)
    with pytest.raises(tn.ArchitectureError, match="ends with the output of a weighted layer.*add Dense"):
        block.kernels(X)
    with pytest.raises(tn.ArchitectureError, match="ends with the output of a weighted layer"):
        block.network(width=8, in_features=4)
    with pytest.raises(tn.ArchitectureError, match="Gaussian input"):   # an activation on the raw data
        tn.serial(tn.ReLU(), tn.Dense()).kernels(X)


def _pre_activation_residual_mlp():
    """Dense, then two residual blocks x + Dense(ReLU(x)), then ReLU and the readout."""
    block = tn.serial(tn.FanOut(2), tn.parallel(tn.serial(tn.ReLU(), tn.Dense()), tn.Identity()), tn.FanInSum())
    return tn.serial(tn.Dense(), block, block, tn.ReLU(), tn.Dense())


def test_pre_activation_residual_mlp_has_the_closed_form_kernels():
    """Each block adds an uncorrelated Gaussian branch: Sigma_out = Sigma_in + (E[relu relu] + b^2) and
    the NTK likewise (the cross terms between the branches vanish in the limit)."""
    spec = _pre_activation_residual_mlp()
    relu = tn.ReLU()

    def relu_step(k, t, v1, v2):
        ess, edd = relu.expectations(v1, v2, k.clone(), derivative=True)
        return ess, t * edd

    b2 = 0.1 ** 2
    k = X @ X.T / X.shape[1] + b2
    t = k.clone()
    for _ in range(2):
        v = k.diagonal()
        ess, tdd = relu_step(k, t, v[:, None], v[None, :])
        branch_k = ess + b2
        k, t = k + branch_k, t + tdd + branch_k
    v = k.diagonal()
    ess, tdd = relu_step(k, t, v[:, None], v[None, :])
    K, T = ess + b2, tdd + ess + b2
    k_spec, t_spec = spec.kernels(X)
    torch.testing.assert_close(k_spec, K, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(t_spec, T, rtol=1e-12, atol=1e-14)


def test_pre_activation_residual_mlp_agrees_with_monte_carlo_over_its_finite_networks():
    """Proposition 1 and Theorem 1 on the residual network: the mean of the empirical kernels over
    48 networks of width 512 (16 outputs each) is within 4.5 standard errors of the exact ones at
    every one of the 15 distinct entries (a 4.5-sigma band is crossed by chance with probability
    about 1e-4 over them; the finite-width bias, O(1/width), is below one standard error here)."""
    spec = _pre_activation_residual_mlp()
    x = X[:5]
    mc = tn.monte_carlo_kernels(spec, x, width=512, n_samples=48, seed=3, out_features=16, method="jacobian")
    for name in ("nngp", "ntk"):
        exact = getattr(spec, name)(x)
        estimate, stderr = torch.as_tensor(getattr(mc, name)), torch.as_tensor(getattr(mc, f"{name}_stderr"))
        z = (estimate - exact) / stderr
        assert z.abs().max() < 4.5, (name, z)
        # and the test has power: the standard errors are under a tenth of the kernel's scale
        # sqrt(K(x, x) K(x', x')) (NNGP about 6 %, NTK about 1 %), so a missing or doubled
        # branch, tens of per cent, would be far outside the band
        scale = torch.sqrt(exact.diagonal()[:, None] * exact.diagonal()[None, :])
        assert float((stderr / scale).max()) < 0.1, (name, stderr / scale)


@pytest.mark.parametrize("full", [False, True])
def test_the_vector_input_state_equals_the_general_one_on_a_single_position(full):
    """Vectors take a GEMM of their own (state._vector_input); the general Gram over positions,
    given the same data as sequences of one position, must give the same state to round-off."""
    from torchntk.engine.state import input_state

    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(n, 7, generator=g, dtype=torch.float64) for n in (6, 4))
    for a, b in ((x1, x2), (x1, None)):
        vec = input_state(a, b, need_ntk=True, full=full)
        seq = input_state(a[:, :, None], None if b is None else b[:, :, None], need_ntk=True, full=full)
        torch.testing.assert_close(vec.nngp, seq.nngp.reshape(vec.nngp.shape), **ROUND_OFF)
        assert vec.same == seq.same and vec.spatial == 0
        for s_vec, s_seq in ((vec.self1, seq.self1), (vec.self2, seq.self2)):
            assert (s_vec is None) == (s_seq is None)
            if s_vec is not None:
                torch.testing.assert_close(s_vec, s_seq.reshape(s_vec.shape), **ROUND_OFF)
    diag_vec = input_state(x1, None, need_ntk=False, full=full, diagonal=True)
    diag_seq = input_state(x1[:, :, None], None, need_ntk=False, full=full, diagonal=True)
    torch.testing.assert_close(diag_vec.nngp, diag_seq.nngp.reshape(-1), **ROUND_OFF)
