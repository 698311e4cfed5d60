"""The full Sigma(L) / Theta(L) recursion against a 30-digit reference (tests/mp_reference.py),
at depths 1 to 6, bias_std in {0, 0.1, 1}, on inputs that include a zero vector, a duplicate,
an antipodal pair and norms from 1e-3 to 1e3."""

from __future__ import annotations

import mp_reference as ref
import pytest
import torch

import torchntk as tn

A = [0.3, -1.2, 0.8]
B = [1.1, 0.4, -0.5]
INPUTS = torch.tensor([A, B, [-a for a in A], A, [0.0, 0.0, 0.0], [1e-3 * b for b in B], [1e3 * b for b in B]],
                      dtype=torch.float64)
# (row, column) pairs of INPUTS: generic, antipodal, duplicate, with the zero vector,
# smallest against largest norm.
PAIRS = [(0, 1), (0, 2), (0, 3), (1, 4), (5, 6)]


@pytest.mark.parametrize("bias_std", [0.0, 0.1, 1.0])
def test_relu_recursion_depths_1_to_6(bias_std):
    expected = {pair: ref.kernels("relu", INPUTS[pair[0]].tolist(), INPUTS[pair[1]].tolist(), 6, bias_std)
                for pair in PAIRS}
    for depth in range(1, 7):
        nngp, ntk = tn.mlp(depth, "relu", bias_std=bias_std).kernels(INPUTS)
        for (i, j), levels in expected.items():
            want_nngp, want_ntk = (float(v) for v in levels[depth - 1])
            # ~1e-15 per operation over <= 6 layers, and the arccos of correlations that approach
            # 1 with depth (condition number 1/sqrt(1 - rho^2) <= ~30 here): 1e-12 relative. The
            # absolute floor, round-off at the entry's natural scale sqrt(k(x,x) k(x',x')), covers
            # values that are exactly 0 (antipodal inputs at depth 2 without bias).
            floor = 1e-14 * (nngp[i, i] * nngp[j, j]).sqrt().item()
            assert nngp[i, j].item() == pytest.approx(want_nngp, rel=1e-12, abs=floor), (depth, i, j)
            assert ntk[i, j].item() == pytest.approx(want_ntk, rel=1e-12, abs=floor), (depth, i, j)


@pytest.mark.parametrize("name", ["leaky_relu", "abs", "erf", "sin", "cos", "gelu"])
def test_other_closed_forms_through_three_layers(name):
    bias_std = 0.1
    nngp, ntk = tn.mlp(3, name, bias_std=bias_std).kernels(INPUTS)
    for i, j in [(0, 1), (1, 4)]:
        want = ref.kernels(name, INPUTS[i].tolist(), INPUTS[j].tolist(), 3, bias_std)[-1]
        # As above: float64 closed forms through two nonlinear layers, 1e-12 relative.
        assert nngp[i, j].item() == pytest.approx(float(want[0]), rel=1e-12), (i, j)
        assert ntk[i, j].item() == pytest.approx(float(want[1]), rel=1e-12), (i, j)


def test_weight_std_enters_as_in_design():
    w, b = 1.4, 0.2
    nngp, ntk = tn.mlp(3, "erf", bias_std=b, weight_std=w).kernels(INPUTS[:2])
    want = ref.kernels("erf", A, B, 3, b, weight_std=w)[-1]
    assert nngp[0, 1].item() == pytest.approx(float(want[0]), rel=1e-12)
    assert ntk[0, 1].item() == pytest.approx(float(want[1]), rel=1e-12)


def test_quadrature_path_agrees_with_closed_forms_through_the_recursion():
    """The same network through its closed form and through Gauss-Hermite (64 nodes, accurate
    to ~1e-12 for erf at these scales) agrees to 1e-10 after four layers."""
    x = INPUTS[[0, 1, 2, 5]]
    exact = tn.mlp(4, "erf", bias_std=0.1).kernels(x)
    quad = tn.mlp(4, tn.Activation(torch.erf, nodes=64), bias_std=0.1).kernels(x)
    for a, b in zip(exact, quad, strict=False):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_exact_duplicate_across_x1_and_x2_is_exact():
    """With x2 given, a duplicate's correlation comes from a GEMM entry and a sum of squares that
    may differ in the last bits; without care arccos turns that into a 1e-8 error. Correlations
    within 64 eps of 1 are snapped to 1 (torchntk.numerics.snap_width), so the entries agree
    with x1 against itself to round-off."""
    x = INPUTS[:3]
    cross = tn.mlp(4, "relu", bias_std=0.1).ntk(x, x.clone())
    same = tn.mlp(4, "relu", bias_std=0.1).ntk(x)
    torch.testing.assert_close(cross, same, rtol=1e-13, atol=0)
