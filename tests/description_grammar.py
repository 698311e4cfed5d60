"""Random network descriptions from a small grammar, for the differential tests: vectors or
images, dense, convolutional and locally connected layers with random strides, paddings and
filters, pooling (average, edge-normalised average, sum; global average or sum), LayerNorm over
the channels, the whole image or each row, residual and concatenated branches, nesting, and
readouts. Every description drawn is one the engine accepts as a whole network (it ends with the
output of a weighted layer), so the tests can compare its exact kernels with other computations
of them."""

from __future__ import annotations

import random

import torchntk as tn

ACTIVATIONS = ("relu", "erf", "tanh", "gelu", "abs")


def _scale(rng: random.Random) -> dict:
    return {"bias_std": round(rng.choice([0.0, 0.1, 0.5]), 2), "weight_std": round(rng.uniform(0.6, 1.6), 3)}


def _act(rng: random.Random):
    name = rng.choice(ACTIVATIONS)
    return tn.Activation(tn.activations.QUADRATURE["tanh"], name="tanh", nodes=16) if name == "tanh" else name


def _dense_block(rng: random.Random) -> list:
    """Layers that take a Gaussian (weighted) input and end with a weighted layer's output."""
    kind = rng.choice(["plain", "residual", "nested", "concat"])
    if kind == "plain":
        return [_act(rng), tn.Dense(**_scale(rng))]
    if kind == "residual":   # pre-activation: x + Dense(act(x))
        branch = tn.serial(_act(rng), tn.Dense(**_scale(rng)))
        return [tn.FanOut(2), tn.parallel(branch, tn.Identity()), tn.FanInSum(), _act(rng), tn.Dense(**_scale(rng))]
    if kind == "nested":
        return [tn.serial(_act(rng), tn.serial(tn.Dense(**_scale(rng))))]
    # the channels of a concatenation follow two covariances: a Dense (which averages them) comes next
    return [tn.FanOut(2), tn.parallel(tn.serial(_act(rng), tn.Dense(**_scale(rng))), tn.Dense(**_scale(rng))),
            tn.FanInConcat(), tn.Dense(**_scale(rng))]


def _conv(rng: random.Random, size: int) -> tuple:
    """A Conv for inputs of ``size`` x ``size`` positions, and its output's size."""
    filter_ = rng.choice([1, 2, 3])
    padding = rng.choice(["valid", "same", "circular"]) if filter_ <= size else "same"
    if padding == "circular" and filter_ - 1 > size:
        padding = "same"
    stride = rng.choice([1, 1, 2])
    kind = rng.choice([tn.Conv, tn.Conv, tn.ConvLocal])   # shared weights, or a filter per position
    conv = kind((filter_, filter_), stride=stride, padding=padding, **_scale(rng))
    out = -(-size // stride) if padding != "valid" else (size - filter_) // stride + 1
    return conv, out


def random_description(seed: int) -> tuple[tn.Serial, tuple[int, ...]]:
    """(a description, the per-example input shape it takes), drawn from ``seed``."""
    rng = random.Random(seed)
    if rng.random() < 0.5:
        layers = [tn.Dense(**_scale(rng))]
        for _ in range(rng.randint(0, 2)):
            layers += _dense_block(rng)
        return tn.serial(*layers), (rng.randint(2, 5),)
    channels, size0 = rng.randint(1, 2), rng.randint(3, 5)
    conv, size = _conv(rng, size0)
    layers = [conv]
    for _ in range(rng.randint(0, 2)):
        step = rng.choice(["conv", "pool", "norm"])
        if step == "conv":
            conv, new = _conv(rng, size)
            if new >= 1:
                layers += [_act(rng), conv]
                size = new
        elif step == "pool" and size >= 2:
            layers += [rng.choice([tn.AvgPool(2, padding="same"), tn.AvgPool(2, padding="same", normalize_edges=True),
                                   tn.SumPool(2, padding="same")])]
            size = -(-size // 2)
        elif step == "norm":
            layers += [rng.choice([tn.LayerNorm(), tn.LayerNorm(axis=(1, 2, 3)), tn.LayerNorm(axis=(1, 3))])]
    readout = rng.choice([tn.Flatten(), tn.GlobalAvgPool(), tn.GlobalSumPool()])
    layers += [_act(rng), readout, tn.Dense(**_scale(rng))]
    return tn.serial(*layers), (channels, size0, size0)
