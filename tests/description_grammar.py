"""Random network descriptions from a small grammar, for the differential tests: vectors, images,
sequences and graphs; dense, convolutional, transposed and locally connected layers with random
strides, paddings and filters, in the NTK or the standard parameterization; pooling (average,
edge-normalised average, sum; global average or sum); LayerNorm over the channels, the whole
input or each row; self-attention with every mechanism, with and without positional embeddings;
message passing on graphs; residual, concatenated and multiplied branches, nesting; Hermite and
RBF activations beside the elementwise ones; and readouts. Every description drawn is one the
engine accepts as a whole network (it ends with the output of a weighted layer), so the tests can
compare its exact kernels with other computations of them. `side_inputs` gives the adjacencies a
graph description reads."""

from __future__ import annotations

import random

import torch

import torchntk as tn

ACTIVATIONS = ("relu", "erf", "tanh", "gelu", "abs", "hermite", "rbf")
MECHANISMS = ("softmax", "identity", "abs", "relu")


class _Draw(random.Random):
    """The random source of one description; ``standard``: its weighted layers are all in the
    standard parameterization (whose NTK needs every layer's input width, so none is left out)."""

    standard = False
    width = 0


def _scale(rng: _Draw) -> dict:
    """A weighted layer's scales, with a width in the standard parameterization (wide enough that
    Monte Carlo at the layers' own widths stays near the limit)."""
    scale = {"bias_std": round(rng.choice([0.0, 0.1, 0.5]), 2), "weight_std": round(rng.uniform(0.6, 1.6), 3)}
    if rng.standard:
        scale.update(parameterization="standard", width=rng.width)
    return scale


def _act(rng: random.Random):
    name = rng.choice(ACTIVATIONS)
    if name == "tanh":
        return tn.Activation(tn.activations.QUADRATURE["tanh"], name="tanh", nodes=16)
    if name == "hermite":
        return tn.Hermite(rng.randint(1, 3))
    if name == "rbf":
        return tn.Rbf(round(rng.uniform(0.2, 1.5), 2))
    return name


def _attention(rng: _Draw) -> list:
    """A SelfAttention layer; none in the standard parameterization, where the layers after it
    would need its width, which is the network's."""
    if rng.standard:
        return []
    return [tn.SelfAttention(mechanism=rng.choice(MECHANISMS), query_key_std=round(rng.uniform(0.2, 1.0), 2),
                            value_std=round(rng.uniform(0.6, 1.4), 2), bias_std=rng.choice([0.0, 0.1]),
                            positional=rng.choice([None, "sum"]), positional_std=round(rng.uniform(0.3, 1.0), 2))]


def _dense_block(rng: random.Random) -> list:
    """Layers that take a Gaussian (weighted) input and end with a weighted layer's output."""
    kind = rng.choice(["plain", "residual", "nested", "concat", "product"])
    if kind == "plain":
        return [_act(rng), tn.Dense(**_scale(rng))]
    if kind == "residual":   # pre-activation: x + Dense(act(x))
        branch = tn.serial(_act(rng), tn.Dense(**_scale(rng)))
        return [tn.FanOut(2), tn.parallel(branch, tn.Identity()), tn.FanInSum(), _act(rng), tn.Dense(**_scale(rng))]
    if kind == "nested":
        return [tn.serial(_act(rng), tn.serial(tn.Dense(**_scale(rng))))]
    if kind == "product":   # a product is not Gaussian: a weighted layer comes next, not a nonlinearity
        return [tn.FanOut(2), tn.parallel(tn.serial(_act(rng), tn.Dense(**_scale(rng))), tn.Dense(**_scale(rng))),
                tn.FanInProd(), tn.Dense(**_scale(rng))]
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
    if rng.random() < 0.15:   # a transposed convolution grows the image ("valid" or "same" only)
        padding = rng.choice(["valid", "same"])
        conv = tn.ConvTranspose((filter_, filter_), stride=stride, padding=padding, **_scale(rng))
        return conv, size * stride if padding == "same" else (size - 1) * stride + filter_
    kind = rng.choice([tn.Conv, tn.Conv, tn.ConvLocal])   # shared weights, or a filter per position
    conv = kind((filter_, filter_), stride=stride, padding=padding, **_scale(rng))
    out = -(-size // stride) if padding != "valid" else (size - filter_) // stride + 1
    return conv, out


def _sequence(rng: random.Random) -> tuple[tn.Serial, tuple[int, ...]]:
    """Sequences (C, L): 1-d convolutions at stride 1, attention, LayerNorm, a readout."""
    length = rng.randint(2, 5)
    layers = [tn.Conv((rng.choice([1, 2]),), padding="same", **_scale(rng))]
    for _ in range(rng.randint(1, 2)):
        step = rng.choice(["attention", "attention", "conv", "norm"])
        if step == "attention":
            layers += _attention(rng)
        elif step == "conv":
            layers += [_act(rng), tn.Conv((rng.choice([1, 3]),), padding=rng.choice(["same", "circular"]),
                                          **_scale(rng))]
        else:
            layers += [rng.choice([tn.LayerNorm(), tn.LayerNorm(axis=(1, 2))])]
    layers += [_act(rng), rng.choice([tn.Flatten(), tn.GlobalAvgPool(), tn.GlobalSumPool()]), tn.Dense(**_scale(rng))]
    return tn.serial(*layers), (rng.randint(1, 3), length)


def _graph(rng: random.Random) -> tuple[tn.Serial, tuple[int, ...]]:
    """Graphs (C, V): node-wise Conv((1,)) and Aggregate steps, then a readout."""
    layers = [tn.Conv((1,), **_scale(rng))]
    for _ in range(rng.randint(1, 2)):
        layers += [tn.Aggregate()] + ([_act(rng), tn.Conv((1,), **_scale(rng))] if rng.random() < 0.7 else [])
    layers += [_act(rng), rng.choice([tn.Flatten(), tn.GlobalAvgPool(), tn.GlobalSumPool()]), tn.Dense(**_scale(rng))]
    return tn.serial(*layers), (rng.randint(1, 3), rng.randint(2, 5))


def has_aggregate(spec: tn.Serial) -> bool:
    """Whether a drawn description passes graphs (it reads an adjacency)."""
    return any(isinstance(layer, tn.Aggregate) for layer in spec.layers)


def side_inputs(spec: tn.Serial, x: torch.Tensor, seed: int) -> dict:
    """The keyword arguments a description needs beside x (N, C, V): for a graph description a
    random weighted adjacency with self-loops, columns normalised, drawn from ``seed``; else none."""
    if not has_aggregate(spec):
        return {}
    n, v = x.shape[0], x.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    arcs = (torch.rand(n, v, v, generator=gen) < 0.5).to(x.dtype) * torch.rand(n, v, v, generator=gen, dtype=x.dtype)
    arcs = arcs + torch.eye(v, dtype=x.dtype)
    return {"adjacency": arcs / arcs.sum(dim=1, keepdim=True)}


def random_description(seed: int) -> tuple[tn.Serial, tuple[int, ...]]:
    """(a description, the per-example input shape it takes), drawn from ``seed``."""
    rng = _Draw(seed)
    rng.standard, rng.width = rng.random() < 0.2, rng.choice([128, 256])
    kind = rng.random()
    if kind < 0.15:
        return _sequence(rng)
    if kind < 0.25:
        return _graph(rng)
    if kind < 0.6:
        layers = [tn.Dense(**_scale(rng))]
        for _ in range(rng.randint(0, 2)):
            layers += _dense_block(rng)
        return tn.serial(*layers), (rng.randint(2, 5),)
    channels, size0 = rng.randint(1, 2), rng.randint(3, 5)
    conv, size = _conv(rng, size0)
    layers = [conv]
    for _ in range(rng.randint(0, 2)):
        step = rng.choice(["conv", "conv", "pool", "norm", "attention"])
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
        elif step == "attention":
            layers += _attention(rng)
    readout = rng.choice([tn.Flatten(), tn.GlobalAvgPool(), tn.GlobalSumPool()])
    layers += [_act(rng), readout, tn.Dense(**_scale(rng))]
    return tn.serial(*layers), (channels, size0, size0)
