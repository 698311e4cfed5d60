"""Differential test of the empirical NTK: on random architectures the default method ("auto",
which takes the structured dense or convolutional path where it applies and declines to the
Jacobian elsewhere) equals method="jacobian" (per-sample Jacobians by torch.func) in float64.

Architectures come from a small grammar, drawn with a fixed seed per case: torchntk networks
(``tn.serial(...).network(width=, input_shape=)``) and plain torch ``nn.Sequential``, either
dense (tied nn.Linear, in-place activations) or convolutional: Conv1d / Conv2d with filter sizes
1-3, stride 1 or 2, padding "valid" / "same" / "circular" (torchntk) or zeros / circular (torch),
average or max pooling, eval-mode BatchNorm, a tied convolution, in-place ReLU, and a Flatten or
global-average-pooling readout, optionally followed by a hidden dense layer.

Tolerance: max |auto - jacobian| <= 1e-10 max |jacobian| + 1e-13. Both are the same sums of
products (at most a few thousand per entry here) in another order, so in float64 they differ by
~1e-15 relative; the failures this guards against (a padding read for the wrong stride, the cross
terms of a tied weight) were 1e-2 and more.

The default budget (CASES, about 15 s) runs in CI. A longer run by hand, e.g. 500 cases from
another seed::

    TORCHNTK_DIFFERENTIAL_CASES=500 TORCHNTK_DIFFERENTIAL_SEED=1 \
        python -m pytest -q -p no:cacheprovider tests/test_empirical_differential.py
"""

from __future__ import annotations

import math
import os
import random

import pytest
import torch
from torch import nn

import torchntk as tn
from torchntk.empirical import _method
from torchntk.empirical.conv_method import ConvStructuredMethod
from torchntk.empirical.structured import StructuredMethod
from torchntk.engine.windows import out_size

F64 = torch.float64
CASES = int(os.environ.get("TORCHNTK_DIFFERENTIAL_CASES", "40"))
SEED = int(os.environ.get("TORCHNTK_DIFFERENTIAL_SEED", "0"))
RTOL, ATOL = 1e-10, 1e-13


pytestmark = pytest.mark.usefixtures("one_thread")   # small tensors (tests/conftest.py)


# -- the grammar --------------------------------------------------------------------------------


def _torchntk_case(rng: random.Random) -> tuple[nn.Module, tuple[int, ...], str]:
    """A torchntk network: convolutions (any stride and padding), pooling, a readout, dense layers."""
    dims = rng.choice([0, 1, 2, 2])
    width = rng.choice([2, 3, 4])
    k = rng.choice([1, 2])
    act = lambda: rng.choice([tn.ReLU(), tn.Erf(), tn.ReLU()])  # noqa: E731
    if dims == 0:
        layers = []
        for _ in range(rng.randint(0, 2)):
            layers += [tn.Dense(bias_std=rng.choice([0.0, 0.1])), act()]
        shape = (rng.randint(2, 5),)
    else:
        size = rng.randint(4, 7)
        shape = (rng.choice([1, 2]),) + (size,) * dims
        layers = []
        for _ in range(rng.randint(1, 3)):
            f, s, pad = rng.choice([1, 2, 3]), rng.choice([1, 2]), rng.choice(["valid", "same", "circular"])
            if out_size(size, f, s, pad) < 1 or (pad == "circular" and f > size):
                pad = "same"
            layers += [tn.Conv((f,) * dims, stride=s, padding=pad), act()]
            size = out_size(size, f, s, pad)
            if size >= 2 and rng.random() < 0.3:
                pool, stride = rng.choice([tn.AvgPool, tn.MaxPool]), rng.choice([1, 2])
                layers.append(pool((2,) * dims, stride=stride))
                size = out_size(size, 2, stride, "valid")
        layers.append(rng.choice([tn.Flatten(), tn.GlobalAvgPool(), tn.GlobalSumPool()]))
        if rng.random() < 0.3:
            layers += [tn.Dense(), act()]
    layers.append(tn.Dense())
    net = tn.serial(*layers).network(width=width, out_features=k, seed=rng.randrange(1 << 30), dtype=F64,
                                     input_shape=shape)
    return net, shape, repr(net)


def _torch_case(rng: random.Random) -> tuple[nn.Module, tuple[int, ...], str]:
    """An nn.Sequential: dense or convolutional, with tied layers, in-place ReLU, eval BatchNorm."""
    torch.manual_seed(rng.randrange(1 << 30))
    dims = rng.choice([0, 1, 2, 2])
    width, k = rng.choice([2, 3]), rng.choice([1, 2, 3])

    def act():
        return rng.choice([nn.ReLU(inplace=True), nn.ReLU(), nn.Tanh(), nn.GELU()])

    if dims == 0:
        n0 = rng.randint(2, 5)
        shared = nn.Linear(width, width)
        layers = [nn.Linear(n0, width), act()]
        for _ in range(rng.randint(0, 2)):
            layers += [shared if rng.random() < 0.5 else nn.Linear(width, width), act()]
        layers.append(nn.Linear(width, k))
        return _eval(nn.Sequential(*layers)), (n0,), ""
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    size = rng.randint(4, 7)
    c0 = rng.choice([1, 2])
    shape = (c0,) + (size,) * dims
    layers, channels, tied = [], c0, None
    for _ in range(rng.randint(1, 3)):
        f, s = rng.choice([1, 2, 3]), rng.choice([1, 2])
        p = rng.choice([0, f // 2])
        mode = rng.choice(["zeros", "circular"])
        if (size + 2 * p - f) // s + 1 < 1 or (mode == "circular" and p > size):
            f, s, p = 1, 1, 0
        if tied is not None and channels == width and rng.random() < 0.5 and _fits(tied, size):
            layer = tied  # the same convolution again: its gradient sums over both uses
        else:
            layer = conv(channels, width, f, stride=s, padding=p, padding_mode=mode)
            if channels == width:
                tied = layer
        layers += [layer]
        size = (size + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
        channels = width
        if rng.random() < 0.25:
            layers.append(_batchnorm(dims, channels))
        layers.append(act())
        if size >= 2 and rng.random() < 0.3:
            layers.append(rng.choice([nn.AvgPool1d, nn.MaxPool1d] if dims == 1 else [nn.AvgPool2d, nn.MaxPool2d])(2))
            size //= 2
    if rng.random() < 0.5:
        layers += [nn.Flatten()]
        features = channels * size ** dims
    else:
        layers += [nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        features = channels
    if rng.random() < 0.3:
        layers += [nn.Linear(features, width), act()]
        features = width
    layers.append(nn.Linear(features, k))
    return _eval(nn.Sequential(*layers)), shape, ""


def _fits(layer: nn.Module, size: int) -> bool:
    return (size + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1 >= 1 and \
        (layer.padding_mode != "circular" or layer.padding[0] <= size)


def _batchnorm(dims: int, channels: int) -> nn.Module:
    """Eval-mode BatchNorm with running statistics and affine parameters away from 0 and 1."""
    bn = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return bn


def _eval(model: nn.Module) -> nn.Module:
    return model.double().eval()


def _case(index: int) -> tuple[nn.Module, tuple[int, ...], str]:
    rng = random.Random(f"{SEED}-{index}")
    model, shape, text = (_torchntk_case if rng.random() < 0.5 else _torch_case)(rng)
    return model, shape, text or repr(model)


# -- the test -----------------------------------------------------------------------------------

@pytest.mark.parametrize("index", range(CASES))
def test_auto_equals_the_jacobian(index):
    model, shape, text = _case(index)
    g = torch.Generator().manual_seed(index)
    x1 = torch.randn(4, *shape, generator=g, dtype=F64)
    x2 = torch.randn(3, *shape, generator=g, dtype=F64)
    for kwargs in ({}, {"x2": x2, "outputs": "trace"}, {"diagonal": True}):
        auto = tn.empirical_ntk(model, x1, **kwargs)
        jac = tn.empirical_ntk(model, x1, method="jacobian", **kwargs)
        err = float((auto - jac).abs().max())
        bound = RTOL * float(jac.abs().max()) + ATOL
        assert err <= bound, f"case {index} ({kwargs}): |auto - jacobian| = {err:.3g} > {bound:.3g} for\n{text}"


LAYERWISE_KINDS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)


@pytest.mark.parametrize("index", range(CASES))
def test_layerwise_equals_the_jacobian(index):
    """The layer-wise method on the same random models, wherever it has a layer to structure (it
    refuses a model without one): its Grams, per-example gradients and per-part Jacobians must sum
    to the Jacobian's kernel, at the same tolerance."""
    model, shape, text = _case(index)
    if not any(isinstance(m, LAYERWISE_KINDS) for m in model.modules()):
        pytest.skip("no nn.Linear, nn.Conv1d/2d or nn.Embedding for the layer-wise rules")
    g = torch.Generator().manual_seed(index)
    x1 = torch.randn(4, *shape, generator=g, dtype=F64)
    x2 = torch.randn(3, *shape, generator=g, dtype=F64)
    for kwargs in ({}, {"x2": x2, "outputs": "trace"}, {"diagonal": True}):
        ours = tn.empirical_ntk(model, x1, method="layerwise", **kwargs)
        jac = tn.empirical_ntk(model, x1, method="jacobian", **kwargs)
        err = float((ours - jac).abs().max())
        bound = RTOL * float(jac.abs().max()) + ATOL
        assert err <= bound, f"case {index} ({kwargs}): |layerwise - jacobian| = {err:.3g} > {bound:.3g} for\n{text}"


def test_the_cases_exercise_the_structured_paths():
    """Most cases must go through a structured path, or the comparison above proves little."""
    structured = sum(isinstance(_method(m, "auto", _k(m, s), torch.zeros(1, *s, dtype=F64)),
                                (StructuredMethod, ConvStructuredMethod))
                     for m, s, _ in (_case(i) for i in range(min(CASES, 40))))
    assert structured >= math.ceil(0.3 * min(CASES, 40))


def _k(model: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return model(torch.zeros(1, *shape, dtype=F64)).reshape(1, -1).shape[1]
