"""Monte Carlo kernels with side inputs (``adjacency=``, ``mask=``): random finite networks fed the
side inputs agree with ``spec.kernels`` given the same, within their standard errors.

Graphs: a network with one hidden layer (depth 2) whose read-out is linear in independent N(0, 1)
weights has E[f f'] = Sigma and E[Theta] = Theta exactly at every width; Aggregate and the pooling
are linear maps without parameters, so this holds with them too, and only the Monte Carlo error
remains. Masked attention: the finite networks differ from the limit by the Monte Carlo error
and by a bias of order query_key_std^2 / d from the logits' fluctuations plus the key weights'
share of the NTK, O(1 / d), with d = 16 channels per head at width 256. Measured with 300
networks (seed 1): the NTK within 1.1% of its largest entry (2.5 of that run's standard errors),
the NNGP within 1.5 standard errors (no bias seen under its larger spread); so the bound is 4
standard errors plus 2% of the largest entry. Z_MAX per entry: for a t statistic with 29 degrees
of freedom or more, P(|t| > 4.5) < 2e-4.
"""

import numpy as np
import pytest
import torch

import torchntk as tn
from torchntk.empirical import StructuredFallbackWarning
from torchntk.monte_carlo import monte_carlo_kernels, sample_seed

F64 = torch.float64
Z_MAX = 4.5
BIAS = 0.02
"""Allowance for the finite-width bias of masked attention at width 256, of the largest entry (module doc)."""

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings(
    "ignore::torchntk.empirical.StructuredFallbackWarning")]   # side inputs: "auto" is the Jacobian, as it says

GRAPH = tn.serial(tn.Conv(1), tn.Aggregate(), tn.ReLU(), tn.Aggregate(), tn.GlobalAvgPool(), tn.Dense(bias_std=0.1))
ATTENTION = tn.serial(tn.SelfAttention(query_key_std=0.5, bias_std=0.1), tn.GlobalAvgPool(), tn.Dense())


def _graphs(n: int, seed: int, v: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """n graphs (n, 3, v) and weighted adjacencies (n, v, v), each column summing to 1 (a mean over
    the predecessors), without symmetry, so that reversed arcs give other kernels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, v, dtype=F64, generator=g)
    a = (torch.rand(n, v, v, generator=g) < 0.5) * torch.rand(n, v, v, dtype=F64, generator=g) + torch.eye(v,
                                                                                                          dtype=F64)
    return x, a / a.sum(dim=1, keepdim=True)


def _sequences(n: int, seed: int, length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences (n, 3, length) with other data at padding, and masks of lengths length, length - 1, ..."""
    x = torch.randn(n, 3, length, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(length)[None] < (length - torch.arange(n) % length)[:, None]


def _within(mc, exact, allowance: float = 0.0) -> bool:
    """Whether every entry of the estimate is within Z_MAX standard errors (plus ``allowance`` of
    the largest entry) of ``exact``: for the NNGP and the NTK."""
    nngp, ntk = exact
    return bool(((mc.nngp - nngp).abs() <= Z_MAX * mc.nngp_stderr + allowance * nngp.abs().max()).all()
                and ((mc.ntk - ntk).abs() <= Z_MAX * mc.ntk_stderr + allowance * ntk.abs().max()).all())


def test_graph_networks_estimate_the_kernels_of_their_adjacencies():
    (x1, a1), (x2, a2) = _graphs(4, seed=0), _graphs(3, seed=1)
    mc = monte_carlo_kernels(GRAPH, x1, x2, width=64, n_samples=40, seed=0, out_features=2, adjacency=(a1, a2))
    assert mc.nngp.shape == mc.ntk.shape == (4, 3)
    assert _within(mc, GRAPH.kernels(x1, x2, adjacency=(a1, a2)))
    # power: the kernels of the reversed arcs lie outside
    assert not _within(mc, GRAPH.kernels(x1, x2, adjacency=(a1.transpose(1, 2), a2.transpose(1, 2))))
    # x1 alone takes one adjacency
    alone = monte_carlo_kernels(GRAPH, x1, width=64, n_samples=40, seed=0, out_features=2, adjacency=a1)
    assert _within(alone, GRAPH.kernels(x1, adjacency=a1))


def test_an_edge_list_in_numpy_gives_the_estimates_of_its_dense_adjacency():
    x, a = _graphs(3, seed=2)
    arcs = a > 0
    lists = [np.argwhere(m.numpy()) for m in arcs]
    size = max(len(e) for e in lists)
    edges = np.stack([np.concatenate([e, -np.ones((size - len(e), 2), dtype=e.dtype)]) for e in lists])
    dense = monte_carlo_kernels(GRAPH, x, width=16, n_samples=4, seed=3, adjacency=arcs.to(F64))
    sparse = monte_carlo_kernels(GRAPH, x.numpy(), width=16, n_samples=4, seed=3, adjacency=edges)
    assert isinstance(sparse.ntk, np.ndarray)
    # the same networks and the same sums in another order (gather and scatter against a matrix
    # product): agreement to round-off, 1e-12 of the largest entry
    for name in ("nngp", "ntk"):
        want = getattr(dense, name)
        assert np.abs(getattr(sparse, name) - want.numpy()).max() <= 1e-12 * float(want.abs().max())


def test_masked_attention_estimates_the_kernels_of_the_unpadded_sequences():
    x, m = _sequences(3, seed=5)
    mc = monte_carlo_kernels(ATTENTION, x, width=256, n_samples=30, seed=0, out_features=4, mask=m)
    assert _within(mc, ATTENTION.kernels(x, mask=m), BIAS)
    # power: without the mask the padding is data, and those kernels lie outside
    assert not _within(mc, ATTENTION.kernels(x), BIAS)


def test_a_factory_takes_the_side_inputs_in_its_forward():
    x, a = _graphs(3, seed=4)

    def factory():
        return GRAPH.network(width=8, seed=int(torch.randint(0, 2**31 - 1, ())), dtype=F64)

    mc = monte_carlo_kernels(factory, x, n_samples=3, seed=0, adjacency=a, method="jacobian")
    seeds = []
    for s in range(3):   # the factory's networks, drawn again as Monte Carlo draws them
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(0, s))
            seeds.append(factory())
    outputs = [net(x, adjacency=a).detach() for net in seeds]
    nngp = torch.stack([f @ f.T for f in outputs]).mean(0)
    # the same products, averaged by Welford's running mean instead of a sum: 1e-12 of the largest entry
    assert (mc.nngp - nngp).abs().max() <= 1e-12 * nngp.abs().max()


def test_side_inputs_take_the_forms_of_spec_kernels():
    (x1, a1), (x2, a2) = _graphs(3, seed=0), _graphs(2, seed=1)
    with pytest.raises(ValueError, match="x2 is None, so give one adjacency for x1"):
        monte_carlo_kernels(GRAPH, x1, width=4, n_samples=2, adjacency=(a1, a1))
    with pytest.raises(ValueError, match=r"with x1 and x2, give one adjacency for each, a tuple"):
        monte_carlo_kernels(GRAPH, x1, x2, width=4, n_samples=2, adjacency=a1)
    with pytest.raises(ValueError, match="which need the graphs' adjacency"):
        monte_carlo_kernels(GRAPH, x1, width=4, n_samples=2)
    with pytest.raises(ValueError, match=r"adjacency \(of x1\) has shape \(2, 4, 4\), but x1 holds 3 inputs"):
        monte_carlo_kernels(GRAPH, x1, width=4, n_samples=2, adjacency=a2)
    with pytest.raises(ValueError, match=r"mask must have shape \(3, 4\), one flag per input and position"):
        monte_carlo_kernels(GRAPH, x1, width=4, n_samples=2, adjacency=a1, mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"adjacency \(of x2\) must be a torch tensor or numpy array, got list"):
        monte_carlo_kernels(GRAPH, x1, x2, width=4, n_samples=2, adjacency=(a1, [[0.0]]))
    with pytest.warns(StructuredFallbackWarning, match="forward_kwargs"):
        monte_carlo_kernels(GRAPH, x1, width=4, n_samples=2, adjacency=a1, kernels="ntk")
