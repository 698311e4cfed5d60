"""Layers against neural-tangents 0.6.5 on the same networks: SumPool, GlobalSumPool,
AvgPool(normalize_edges=True), FanInProd, Hermite, Rbf, LayerNorm over chosen axes and ConvLocal.
The reference values are a fixture made by tests/fixtures/neural_tangents/make_layers.py (the
suite never needs JAX).

Tolerance: both sides are float64 and compute the same finite sums and products of closed forms
(ReLU's arc-cosine kernel, erf's arcsine, window sums, polynomials, exponentials), so they agree to
round-off: 1e-12 relative to the largest entry leaves room for the different summation orders and
no more. One exception: neural-tangents' ReLU takes the angle arctan2(sqrt(q q' - c^2), c), and on
the diagonal of a kernel of x against itself q q' - c^2 is round-off, ~1e-16 q^2, whose square root
moves the angle by up to ~1e-8; where a network passes that value on unaveraged (a product at each
position, read out by Flatten), the diagonal of the self NTK is compared at 1e-8 (torchntk takes
c = sqrt(q q') there exactly; Monte Carlo in test_arch_networks.py checks the kernels).
"""

from __future__ import annotations

import pytest
import torch
from nt_reference import assert_matches, channels_first, load

import torchntk as tn


def _conv(padding: str = "same"):
    return tn.Conv((3, 3), padding=padding)


def _local(window=(3, 3), padding: str = "same", stride=1):
    return tn.ConvLocal(window, padding=padding, stride=stride)


TWINS = {
    "sum_pool_valid": tn.serial(_conv(), tn.ReLU(), tn.SumPool((2, 2), stride=2), tn.Flatten(), tn.Dense()),
    "sum_pool_same": tn.serial(_conv(), tn.ReLU(), tn.SumPool((3, 3), stride=1, padding="same"), tn.Flatten(),
                               tn.Dense()),
    "avg_pool_edges": tn.serial(_conv(), tn.ReLU(), tn.AvgPool((3, 3), stride=2, padding="same", normalize_edges=True),
                                tn.Flatten(), tn.Dense()),
    "avg_pool_edges_stride1": tn.serial(_conv(), tn.ReLU(),
                                        tn.AvgPool((3, 2), stride=1, padding="same", normalize_edges=True),
                                        _conv("valid"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()),
    "global_sum_pool": tn.serial(_conv(), tn.ReLU(), tn.GlobalSumPool(), tn.Dense()),
    "prod_images": tn.serial(_conv(), tn.ReLU(), tn.FanOut(2), tn.parallel(_conv(), tn.Identity()), tn.FanInProd(),
                             tn.Flatten(), tn.Dense()),
    # neural-tangents' LayerNorm axes (1, 2, 3), (2, 3) and (1, 3) on (N, H, W, C)
    "layer_norm_image": tn.serial(_conv(), tn.LayerNorm(axis=(1, 2, 3)), tn.ReLU(), _conv(), tn.LayerNorm(axis=(1, 3)),
                                  tn.ReLU(), tn.Flatten(), tn.Dense()),
    "layer_norm_pool": tn.serial(_conv(), tn.LayerNorm(axis=(1, 2)), tn.Erf(), tn.AvgPool((2, 2), stride=1), _conv(),
                                 tn.LayerNorm(axis=(1, 2, 3)), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()),
    "conv_local_flatten": tn.serial(_local(), tn.ReLU(), _local((2, 2), "valid", stride=(2, 1)), tn.ReLU(),
                                    tn.Flatten(), tn.Dense()),
    "conv_local_pool": tn.serial(_local(), tn.ReLU(), _conv(), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()),
    "conv_local_circular": tn.serial(_conv(), tn.Erf(), _local((3, 3), "circular", stride=2), tn.ReLU(),
                                     tn.AvgPool((2, 2), stride=1), _local((2, 2), "valid"), tn.GlobalAvgPool(),
                                     tn.Dense()),
    "conv_transpose_valid": tn.serial(tn.ConvTranspose((3, 3), stride=2), tn.ReLU(), tn.Flatten(), tn.Dense()),
    "conv_transpose_same": tn.serial(_conv(), tn.ReLU(), tn.ConvTranspose((3, 2), stride=(2, 1), padding="same"),
                                     tn.ReLU(), tn.GlobalAvgPool(), tn.Dense()),
    "conv_transpose_wide_stride": tn.serial(tn.ConvTranspose((2, 1), stride=(3, 2)), tn.Erf(), tn.AvgPool(2),
                                            tn.Flatten(), tn.Dense()),
}

SEQUENCE_TWINS = {
    # neural-tangents' axis (1, 2) on (N, L, C): each sequence over its positions and channels
    "layer_norm_sequence": tn.serial(tn.Conv(3, padding="same"), tn.LayerNorm(axis=(1, 2)), tn.ReLU(),
                                     tn.GlobalAvgPool(), tn.Dense()),
}

VECTOR_TWINS = {
    "prod_vectors": tn.serial(tn.Dense(), tn.FanOut(2), tn.parallel(tn.serial(tn.ReLU(), tn.Dense()),
                                                                     tn.serial(tn.Erf(), tn.Dense())),
                              tn.FanInProd(), tn.Dense()),
    "prod_three": tn.serial(tn.Dense(), tn.ReLU(), tn.FanOut(3), tn.parallel(tn.Dense(), tn.Dense(), tn.Identity()),
                            tn.FanInProd(), tn.Dense()),
    "hermite": tn.serial(tn.Dense(), tn.LayerNorm(), tn.Hermite(3), tn.Dense(), tn.LayerNorm(), tn.Hermite(2),
                         tn.Dense()),
    "hermite_zero_one": tn.serial(tn.Dense(), tn.LayerNorm(), tn.Hermite(1), tn.Dense(), tn.LayerNorm(),
                                  tn.Hermite(0), tn.Dense()),
    "rbf": tn.serial(tn.Dense(), tn.Rbf(0.7), tn.Dense(), tn.Rbf(1.3), tn.Dense()),
}


@pytest.fixture(scope="module")
def reference():
    return load()


@pytest.mark.parametrize("name", sorted(TWINS) + sorted(VECTOR_TWINS) + sorted(SEQUENCE_TWINS))
def test_kernels_equal_neural_tangents(name, reference):
    if name in TWINS:
        spec, x1, x2 = TWINS[name], channels_first(reference["x1"]), channels_first(reference["x2"])
    elif name in SEQUENCE_TWINS:
        spec = SEQUENCE_TWINS[name]
        x1, x2 = channels_first(reference["s1"]), channels_first(reference["s2"])
    else:
        spec, x1, x2 = VECTOR_TWINS[name], torch.from_numpy(reference["v1"]), torch.from_numpy(reference["v2"])
    for tag, second in (("", x2), ("_self", None)):
        nngp, ntk = spec.kernels(x1, second)
        assert_matches(reference, name, tag, nngp, ntk)


def test_the_fixture_covers_every_twin(reference):
    # Guards the parametrisation: a network renamed on one side only would otherwise go untested.
    made = {key.rsplit("_", 1)[0] for key in reference if key.endswith("_nngp") and not key.endswith("_self_nngp")}
    # the standard parameterisation's networks ("std_...") are test_standard_parameterization.py's,
    # the self-attention ones ("attention_...") test_attention.py's, the graph ones ("graph_...")
    # test_graphs.py's
    others = {name for name in made if name.startswith(("std_", "attention_", "graph_"))}
    assert made - others == set(TWINS) | set(VECTOR_TWINS) | set(SEQUENCE_TWINS)
    assert str(reference["version"]) == "0.6.5"
