"""The in-place fast paths of the kernel maps (residual sums, affine scales, nonlinearities,
LayerNorm), which run only when nothing is differentiated, against the out-of-place paths that
run when something is: on random descriptions from tests/description_grammar.py, the kernels of
x with requires_grad (the engine then never writes in place) must equal those of plain x, for x
against itself, against another x2, on the diagonal, and in tiles.

Tolerance: 1e-12 relative to the largest entry. Both paths compute the same sums in the same
order (in place or into a new tensor), so they agree to round-off; a tensor written twice
through an alias (a self-pair that is also the kernel, a branch that shares storage) is off by
O(1)."""

import pytest
import torch
from description_grammar import random_description, side_inputs

pytestmark = pytest.mark.usefixtures("one_thread")   # small tensors (tests/conftest.py)

CASES = 60


def _close(got, want):
    scale = want.abs().max().clamp_min(1e-300)
    assert ((got - want).abs() <= 1e-12 * scale).all(), ((got - want).abs().max() / scale).item()


@pytest.mark.parametrize("seed", range(CASES))
def test_in_place_paths_equal_the_out_of_place_ones(seed):
    spec, shape = random_description(5000 + seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, *shape, dtype=torch.float64, generator=gen)
    x2 = torch.randn(3, *shape, dtype=torch.float64, generator=gen)
    side1, side2 = side_inputs(spec, x, seed), side_inputs(spec, x2, seed + 1)
    pair = {k: (side1[k], side2[k]) for k in side1}
    traced = x.clone().requires_grad_(True)
    calls = [
        lambda t: spec.kernels(t, **side1),
        lambda t: spec.kernels(t, x2, **pair),
        lambda t: spec.kernels(t, diagonal=True, **side1),
        lambda t: spec.kernels(t, tile=2, **side1),
    ]
    for call in calls:
        with torch.no_grad():
            fast = call(x)
        slow = call(traced)
        for a, b in zip(fast, slow, strict=True):
            _close(a, b.detach())
