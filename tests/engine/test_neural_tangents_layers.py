"""Pooling layers against neural-tangents 0.6.5 on the same networks: SumPool, GlobalSumPool and
AvgPool(normalize_edges=True). The reference values are a fixture made by
tests/fixtures/neural_tangents/make_layers.py (the suite never needs JAX).

Tolerance: both sides are float64 and compute the same finite sums of closed forms (ReLU's arc-cosine
kernel, window sums), so they agree to round-off: 1e-12 relative to the largest entry leaves room
for the different summation orders and no more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import torchntk as tn

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "neural_tangents" / "layers.npz"


def _conv(padding: str = "same"):
    return tn.Conv((3, 3), padding=padding)


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
}


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


@pytest.mark.parametrize("name", sorted(TWINS))
def test_kernels_equal_neural_tangents(name, reference):
    x1, x2 = _nchw(reference["x1"]), _nchw(reference["x2"])
    for tag, second in (("", x2), ("_self", None)):
        nngp, ntk = TWINS[name].kernels(x1, second)
        for kind, ours in (("nngp", nngp), ("ntk", ntk)):
            theirs = torch.from_numpy(reference[f"{name}{tag}_{kind}"])
            scale = theirs.abs().max()
            assert torch.allclose(ours, theirs, rtol=0, atol=1e-12 * scale), f"{name}{tag} {kind}"


def test_the_fixture_covers_every_twin(reference):
    # Guards the parametrisation: a network renamed on one side only would otherwise go untested.
    made = {key.rsplit("_", 1)[0] for key in reference if key.endswith("_nngp") and not key.endswith("_self_nngp")}
    assert made == set(TWINS)
    assert str(reference["version"]) == "0.6.5"
