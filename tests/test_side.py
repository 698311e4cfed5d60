"""The side-input registry's helpers (torchntk/_side.py) that every edge shares: what a
description reads, the pairing of each input's side inputs for spec.kernels (an optional one
filled with its neutral value), and each side input's dense row form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from side_specs import graph_spec

import torchntk as tn
from torchntk import _side


def test_what_a_description_reads():
    assert _side.read_by(graph_spec()) == ("adjacency",)
    nested = tn.serial(tn.Conv((1,)), tn.serial(tn.ReLU(), tn.Aggregate()), tn.GlobalAvgPool(), tn.Dense())
    assert _side.read_by(nested) == ("adjacency",)
    assert _side.read_by(tn.mlp(3)) == ()
    assert _side.problems(graph_spec(), ["mask"]) == (["adjacency"], [])
    assert _side.problems(tn.mlp(3), ["adjacency", "mask"]) == ([], ["adjacency"])   # a mask is optional


def test_keywords_pair_each_inputs_side_inputs():
    x1, x2 = torch.zeros(3, 2, 4), torch.zeros(2, 2, 4)
    m1 = torch.tensor([[1, 1, 0, 0]] * 3, dtype=torch.bool)
    assert _side.keywords({"mask": m1}, None, x1) == {"mask": m1}
    both = _side.keywords({"mask": m1}, {}, x1, x2)
    assert both["mask"][0] is m1 and both["mask"][1].dtype == torch.bool
    assert torch.equal(both["mask"][1], torch.ones(2, 4, dtype=torch.bool))   # every position of x2 real
    with pytest.raises(ValueError, match="adjacency was given for x1 but not for x2"):
        _side.keywords({"adjacency": torch.zeros(3, 4, 4)}, {}, x1, x2)
    with pytest.raises(ValueError, match="x2 is None"):
        _side.keywords({}, {"mask": m1}, x1)


def test_a_masked_input_against_an_unmasked_one_has_the_kernels_of_an_all_true_mask():
    rng = np.random.default_rng(0)
    spec = tn.serial(tn.Conv((3,), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    x1, x2 = torch.from_numpy(rng.normal(size=(3, 2, 5))), torch.from_numpy(rng.normal(size=(2, 2, 5)))
    m1 = torch.from_numpy(np.arange(5) < np.array([[5], [3], [2]]))
    got = spec.ntk(x1, x2, **_side.keywords({"mask": m1}, {}, x1, x2))
    # The same call with the all-True mask written out: equal to the bit.
    torch.testing.assert_close(got, spec.ntk(x1, x2, mask=(m1, torch.ones(2, 5, dtype=torch.bool))), rtol=0, atol=0)


def test_dense_row_forms():
    assert _side.packed_width("adjacency", (2, 5)) == 25 and _side.packed_width("mask", (3, 4, 6)) == 24
    with pytest.raises(ValueError, match="an adjacency goes with graphs"):
        _side.packed_width("adjacency", (1, 4, 4))
    with pytest.raises(ValueError, match="a mask marks positions"):
        _side.packed_width("mask", (7,))
    edges = torch.tensor([[[0, 2], [0, 2], [1, 0], [-1, 2]]])
    dense = _side.BY_NAME["adjacency"].to_dense(edges, (1, 3))
    want = torch.zeros(1, 3, 3, dtype=torch.float64)
    want[0, 0, 2], want[0, 1, 0] = 2.0, 1.0    # an arc listed twice weighs 2; a negative end is padding
    torch.testing.assert_close(dense, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        _side.BY_NAME["mask"].from_dense(torch.tensor([[0.0, 0.5]]))
