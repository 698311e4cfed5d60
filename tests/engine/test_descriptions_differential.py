"""Differential tests of descriptions drawn at random from a small grammar (tests/description_grammar.py):

- to_dict -> JSON text -> from_dict gives the same description, with bit-identical kernels;
- hand-written JSON, keys in any order and default arguments left out, gives the description it
  names (arguments are read by name, never by position);
- the exact kernels agree with Monte Carlo over the description's own finite networks.

A fixed seed and a small budget run in CI. For a longer run by hand set
TORCHNTK_DIFFERENTIAL_CASES (round trips; Monte Carlo runs a tenth as many):

    TORCHNTK_DIFFERENTIAL_CASES=2000 .venv/bin/python -m pytest -q tests/engine/test_descriptions_differential.py
"""

import inspect
import json
import os
import random

import pytest
import torch
from description_grammar import random_description, side_inputs

import torchntk as tn
from torchntk.engine import serialize

CASES = int(os.environ.get("TORCHNTK_DIFFERENTIAL_CASES", "120"))
MONTE_CARLO_CASES = max(3, CASES // 40)


def _inputs(shape, seed, n=4):
    return torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", range(CASES))
def test_to_dict_json_from_dict_is_the_same_description(seed):
    spec, shape = random_description(seed)
    again = tn.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.to_dict() == spec.to_dict() and repr(again) == repr(spec)
    x = _inputs(shape, seed)
    side = side_inputs(spec, x, seed)
    for a, b in zip(spec.kernels(x, **side), again.kernels(x, **side), strict=True):
        assert torch.equal(a, b)


def _hand_written(node: dict, rng: random.Random) -> dict:
    """The node as a person might write it: default arguments left out, keys in another order."""
    kind = node["layer"]
    cls = serialize._LAYERS.get(kind) or serialize._ACTIVATIONS.get(kind)
    defaults = {} if cls is None else {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                                       if p.default is not inspect.Parameter.empty}
    out = {}
    for key, value in node.items():
        if key in ("layers", "branches"):
            value = [_hand_written(child, rng) for child in value]
        elif key in defaults and _same(value, defaults[key]) and rng.random() < 0.7:
            continue
        out[key] = value
    keys = list(out)
    rng.shuffle(keys)
    return {key: out[key] for key in keys}


def _same(value, default) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    return value == default


@pytest.mark.parametrize("seed", range(CASES))
def test_hand_written_json_names_arguments_in_any_order(seed):
    spec, _ = random_description(seed)
    data = spec.to_dict()
    written = {"version": data["version"], "network": _hand_written(data["network"], random.Random(seed)),
               "format": data["format"]}
    assert tn.from_dict(json.loads(json.dumps(written))).to_dict() == data


def test_a_named_argument_is_never_taken_for_another():
    """The reviewer's case: weight_std alone was read into bias_std's slot (and a, b of the
    piecewise-linear, exponential and Gaussian activations likewise)."""
    spec = tn.from_dict({"format": "torchntk.spec", "version": 1, "network": {"layer": "serial", "layers": [
        {"layer": "Dense", "weight_std": 2}, {"layer": "PiecewiseLinear", "b": 0.3}, {"layer": "Dense"}]}})
    first, act = spec.layers[0], spec.layers[1]
    assert (first.bias_std, first.weight_std) == (0.1, 2) and (act.a, act.b) == (1.0, 0.3)
    assert (tn.from_dict({"layer": "serial", "layers": [{"layer": "Dense"}, {"layer": "Exp", "b": 2.0},
                                                         {"layer": "Dense"}]}).layers[1].a) == 1.0
    gaussian = tn.from_dict({"layer": "serial", "layers": [{"layer": "Dense"}, {"layer": "Gaussian", "b": -2.0},
                                                           {"layer": "Dense"}]}).layers[1]
    assert (gaussian.a, gaussian.b) == (1.0, -2.0)


def _monte_carlo_seeds(count: int) -> list[int]:
    """The first ``count`` seeds from 1000 on whose descriptions hold no SelfAttention: finite
    attention converges slowly (its heads have sqrt(width) channels, and the keys' share of the NTK
    is O(1 / sqrt(width))): with the identity mechanism the NNGP of a drawn network was measured 38 %
    off the limit at width 256 and 9 % at width 1024, so a width-256 Monte Carlo cannot test it.
    tests/engine/test_attention.py checks finite attention against the limit where it can be
    checked (small query_key_std, the keys' share apart)."""
    seeds, seed = [], 1000
    while len(seeds) < count:
        if "SelfAttention" not in repr(random_description(seed)[0]):
            seeds.append(seed)
        seed += 1
    return seeds


@pytest.mark.parametrize("seed", _monte_carlo_seeds(MONTE_CARLO_CASES))
def test_exact_kernels_agree_with_monte_carlo_over_finite_networks(seed):
    """Proposition 1 and Theorem 1 on each drawn architecture: the mean of the empirical kernels of
    24 networks of width 256 (8 outputs each) is within 5 standard errors of the exact kernels at
    every entry (the O(1/width) finite-width bias stays below a standard error at this width;
    5 sigma over the 10 distinct entries of each kernel is crossed by chance with probability
    ~1e-5). Entries that do not vary over networks (the NTK of a single Dense layer is x.x'/n0 +
    beta^2 for every draw) must agree to round-off instead. The Jacobian method is used so that
    this checks the exact kernels alone. In the standard parameterization the last layer's own
    width (128 or 256) is the number of outputs."""
    spec, shape = random_description(seed)
    x = _inputs(shape, seed, n=4)
    side = side_inputs(spec, x, seed)
    outputs = spec.weighted_layers()[-1].width or 8
    mc = tn.monte_carlo_kernels(spec, x, width=256, n_samples=24, seed=seed, out_features=outputs,
                                method="jacobian", **side)
    for name in ("nngp", "ntk"):
        exact = getattr(spec, name)(x, **side)
        stderr = torch.as_tensor(getattr(mc, f"{name}_stderr"))
        floor = 1e-9 * exact.abs().max()
        z = (torch.as_tensor(getattr(mc, name)) - exact) / torch.where(stderr > floor, stderr, floor)
        assert z.abs().max() < 5, (seed, spec, name, z)
