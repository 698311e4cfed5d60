"""Branching: FanOut copies a signal, parallel runs branches side by side, FanInSum and
FanInConcat merge them. With `serial` (which nests) they build residual and multi-branch
networks, e.g. a residual block

    serial(FanOut(2), parallel(serial(ReLU(), Conv((3, 3), padding="same")), Identity()), FanInSum())

Kernels. Branches of one FanOut see the same input. Their outputs are uncorrelated when at most
one of them is not *fresh* (freshly weighted: the output of a Dense/Conv of its own, applied
after the split, through linear maps), because such weights are independent of everything else
and have mean zero; then

    FanInSum:     K' = sum_b K_b,     Theta' = sum_b Theta_b
    FanInConcat:  K' = mean_b K_b,    Theta' = mean_b Theta_b     (equal widths: channels concatenated)
    FanInProd:    K' = prod_b K_b,    Theta' = sum_b Theta_b prod_(b' != b) K_b'    (elementwise product)

and the same for the NTK's cross terms, which vanish with the correlations. FanInSum refuses
branches that could be correlated (two Identity shortcuts, or ReLU beside Identity: both
functions of the same input), whose kernel is not the sum; FanInProd, whose kernel is the product
only for independent factors, refuses them too. FanInConcat needs no such rule: the
features of a concatenation are each one branch's, so its kernel is the mean whatever the
correlations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..networks import modules
from .base import BuildContext, Layer, check_nesting
from .mask import MASK, remask
from .pointwise import as_layer
from .signal import Signal, fail, law_checks, side_shape
from .state import KernelState

MAX_BRANCHES = 64
"""Most branches of one FanOut: each holds its own copy of a tile's kernels while the branches run."""


def _tuple_in(value, where: str, what: str) -> tuple:
    if not isinstance(value, tuple):
        raise fail(where, f"{what} takes the branches of a FanOut; put FanOut(n) (and parallel(...)) before it.")
    return value


class FanOut(Layer):
    """``n`` copies of the input, for the branches of a following `parallel`.

    Args:
        n: the number of branches, 1 to 64.
    """

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"FanOut({self.n})"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "FanOut", "n": self.n}

    def signal(self, sig, where: str):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= MAX_BRANCHES:
            raise fail(where, f"FanOut needs an integer number of branches from 1 to {MAX_BRANCHES} (each branch "
                              f"holds its own copy of every tile's kernels), got {self.n!r}.")
        if isinstance(sig, tuple):
            raise fail(where, "FanOut got branches; merge them first with FanInSum() or FanInConcat().")
        return (replace(sig, fresh=False),) * self.n     # n copies of one signal: none has weights of its own

    def need(self, full_out):
        return any(full_out) if isinstance(full_out, tuple) else full_out

    def kernel(self, state: KernelState, full_out):
        # Each branch owns its state: layers overwrite kernels in place.
        return tuple(state if i == 0 else state.copy() for i in range(self.n))

    def build(self, sig, channels, ctx: BuildContext):
        return modules.FanOut(self.n), (channels,) * self.n


class Parallel(Layer):
    """Branch i applied to element i of the incoming branches."""

    def __init__(self, branches: Sequence[Any]) -> None:
        self.branches = tuple(as_layer(b) for b in branches)
        self._nesting = check_nesting(self.branches, "parallel")

    def __repr__(self) -> str:
        return "parallel(" + ", ".join(map(repr, self.branches)) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "parallel", "branches": [b.node() for b in self.branches]}

    def weighted_layers(self) -> list[Layer]:
        return [w for b in self.branches for w in b.weighted_layers()]

    def sublayers(self) -> tuple[Layer, ...]:
        return self.branches

    def takes_branches(self) -> bool:
        return True

    def signal(self, sig, where: str):
        sig = _tuple_in(sig, where, "parallel")
        if len(sig) != len(self.branches):
            raise fail(where, f"parallel has {len(self.branches)} branches but receives {len(sig)}; "
                              f"use FanOut({len(self.branches)}).")
        pairs = enumerate(zip(self.branches, sig, strict=True))
        return tuple(b.signal(s, f"{where} > branch {i}") for i, (b, s) in pairs)

    def need(self, full_out):
        if not isinstance(full_out, tuple):
            full_out = (full_out,) * len(self.branches)
        return tuple(b.need(f) for b, f in zip(self.branches, full_out, strict=True))

    def kernel(self, states, full_out):
        return self.compile(full_out)(states)

    def compile(self, full_out, sig=None):
        if not isinstance(full_out, tuple):
            full_out = (full_out,) * len(self.branches)
        signals = sig if sig is not None else (None,) * len(self.branches)
        steps = tuple(b.compile(f, s) for b, f, s in zip(self.branches, full_out, signals, strict=True))

        def run(states):
            return tuple(step(s) for step, s in zip(steps, states, strict=True))
        return run

    def build(self, sig, channels, ctx: BuildContext):
        built = [b.build(s, c, ctx) for b, s, c in zip(self.branches, sig, channels, strict=True)]
        return modules.Parallel([m for m, _ in built]), tuple(c for _, c in built)


class _FanIn(Layer):
    op = "merge"

    def takes_branches(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": type(self).__name__}

    def _merge_signal(self, sig, where: str) -> Signal:
        sig = _tuple_in(sig, where, type(self).__name__)
        first = sig[0]
        for i, s in enumerate(sig[1:], start=1):
            if s.shape != first.shape or s.flat != first.flat:
                raise fail(where, f"cannot {self.op} branches of different shapes: branch 0 is {first.describe()}, "
                                  f"branch {i} is {s.describe()}.")
        return first

    def kernel(self, states, full_out):
        if not full_out or not all(s.full for s in states):
            states = tuple(s.to_diagonal() for s in states)
        return self._combine(states)

    def _sum(self, states, scale: float = 1.0) -> KernelState:
        in_place = not torch.is_grad_enabled()

        def total(get):
            parts = [get(s) for s in states]
            if parts[0] is None:
                return None
            out = parts[0]
            for p in parts[1:]:
                # each branch owns its tensors (FanOut copies): the first may take the sum
                out = out.add_(p) if in_place and out.shape == p.shape else out + p
            if scale == 1.0:
                return out
            return out.mul_(scale) if in_place and out.dim() > 0 else out * scale
        first = states[0]
        selves = None if first.self1 is None else (total(lambda s: s.self1), total(lambda s: s.self2))
        return replace(first, nngp=total(lambda s: s.nngp), ntk=total(lambda s: s.ntk),
                       self1=None if selves is None else selves[0], self2=None if selves is None else selves[1])


class FanInSum(_FanIn):
    r"""Sum of the branches (a residual connection): :math:`K' = \sum_b K_b` and
    :math:`\Theta' = \sum_b \Theta_b` for uncorrelated branches (all but at most one freshly
    weighted after the split; others are refused)."""

    op = "sum"

    def _check_independent(self, sig, where: str) -> Signal:
        """The merged branches' common signal, after refusing branches of different channels and
        more than one branch without weights of its own since the split (correlated)."""
        first = self._merge_signal(sig, where)
        channels = {s.channels for s in sig}
        if len(channels) > 1:
            raise fail(where, f"cannot {self.op} branches with different channel counts: "
                              + ", ".join(f"branch {i} has {'the hidden width' if s.channels is None else s.channels}"
                                          for i, s in enumerate(sig))
                              + "; give the shortcut its own Conv/Dense, or start the block after a hidden layer.")
        widths = {s.width for s in sig if s.width is not None}
        if len(widths) > 1:
            raise fail(where, f"cannot {self.op} branches of different widths: "
                              + ", ".join(f"branch {i} has width {s.width}" for i, s in enumerate(sig))
                              + "; give the weighted layers that end the branches the same width=.")
        stale = [i for i, s in enumerate(sig) if not s.fresh]
        if len(stale) > 1 and law_checks():
            raise fail(where, f"branches {stale} carry no weights of their own since they split (FanOut), so they "
                              f"are functions of the same input, correlated, and the kernel of their {self.op} is not "
                              f"the {self.op} of their kernels; give all but one of them a Dense or Conv layer after "
                              "the split.")
        return first

    def signal(self, sig, where: str) -> Signal:
        first = self._check_independent(sig, where)
        return Signal(first.shape, first.channels, all(s.gaussian for s in sig), all(s.centred for s in sig),
                      all(s.fresh for s in sig), first.flat, all(s.raw for s in sig), any(s.mixed for s in sig),
                      _common_width(sig))

    def _combine(self, states) -> KernelState:
        return self._sum(states)

    def build(self, sig, channels, ctx: BuildContext):
        return modules.FanInSum(), channels[0]


class FanInProd(FanInSum):
    r"""Elementwise product of the branches (neural-tangents' ``stax.FanInProd``). For independent
    branches (all but at most one freshly weighted since the split, as for `FanInSum`):

    .. math::

        K' = \prod_b K_b, \qquad \Theta' = \sum_b \Theta_b \prod_{b' \ne b} K_{b'}

    at every pair of positions (the product rule; the cross terms vanish with the correlations).
    A product of Gaussians is not Gaussian: a nonlinearity cannot follow it directly.
    """

    op = "product"

    def signal(self, sig, where: str) -> Signal:
        first = self._check_independent(sig, where)
        if any(s.mixed for s in sig) and law_checks():
            raise fail(where, "a branch concatenates branches (FanInConcat) whose channels have different "
                              "covariances, and the channels of a product pair them one by one; put a Dense or Conv "
                              "layer after FanInConcat.")
        # Independent factors: the product has mean zero as soon as one factor does, and it is
        # uncorrelated with the other branches of an enclosing FanOut only through its factors'
        # weights, which this signal does not track: not fresh.
        return Signal(first.shape, first.channels, False, any(s.centred for s in sig), False, first.flat,
                      all(s.raw for s in sig), False, _common_width(sig))

    def _combine(self, states) -> KernelState:
        def product(get, skip: int | None = None):
            parts = [get(s) for i, s in enumerate(states) if i != skip]
            out = parts[0]
            for p in parts[1:]:
                out = out * p
            return out
        first = states[0]
        nngp = product(lambda s: s.nngp)
        ntk = None
        if first.ntk is not None:
            ntk = sum(s.ntk * product(lambda t: t.nngp, skip=i) for i, s in enumerate(states))
        selves = None if first.self1 is None else (product(lambda s: s.self1), product(lambda s: s.self2))
        return replace(first, nngp=nngp, ntk=ntk, self1=None if selves is None else selves[0],
                       self2=None if selves is None else selves[1])

    def build(self, sig, channels, ctx: BuildContext):
        return modules.FanInProd(), channels[0]


class FanInConcat(_FanIn):
    r"""Concatenation of the branches' channels: :math:`K' = \frac{1}{B} \sum_b K_b` and
    :math:`\Theta' = \frac{1}{B} \sum_b \Theta_b` over the :math:`B` branches (of equal width),
    whatever their correlations."""

    op = "concatenate"

    def signal(self, sig, where: str) -> Signal:
        first = self._merge_signal(sig, where)
        if any(s.channels is not None for s in sig):
            raise fail(where, "FanInConcat concatenates hidden layers of equal width; a branch here still has the "
                              "input's channels. Give every branch a Dense or Conv layer.")
        widths = {s.width for s in sig if s.width is not None}
        if len(widths) > 1 and law_checks():
            raise fail(where, "FanInConcat's kernel is the plain mean of the branches', which holds for branches of "
                              "equal width; here " + ", ".join(f"branch {i} has width {s.width}" for i, s in
                                                               enumerate(sig)) + ". Give them the same width=.")
        width = None if any(s.width is None for s in sig) else sum(s.width for s in sig)
        return Signal(first.shape, None, all(s.gaussian for s in sig), all(s.centred for s in sig),
                      all(s.fresh for s in sig), first.flat, mixed=len(sig) > 1 or first.mixed, width=width)

    def _combine(self, states) -> KernelState:
        return self._sum(states, 1.0 / len(states))

    def build(self, sig, channels, ctx: BuildContext):
        return modules.FanInConcat(), sum(channels)


def _common_width(sig) -> int | None:
    """The width of summed (or multiplied) branches: theirs when every branch knows it (the
    signal check has refused different ones), else unknown."""
    return None if any(s.width is None for s in sig) else sig[0].width


def compile_serial(layers: Sequence[Layer], full_out, sig=None):
    """The kernel map of ``layers`` applied in order, each compiled for whether its output must be
    in the full layout (walking back from ``full_out`` through each layer's `Layer.need`) and,
    when ``sig`` (the input's signal) is given, for its own input signal."""
    needs = [full_out]
    for layer in reversed(layers[1:]):
        needs.append(layer.need(needs[-1]))
    signals = serial_signals(layers, sig, "")[0] if sig is not None else [None] * len(layers)
    steps = tuple(layer.compile(need, s) for layer, need, s in zip(layers, reversed(needs), signals, strict=True))

    def run(state):
        for step in steps:
            state = step(state)
            if not isinstance(state, tuple) and state.side.get(MASK) is not None:
                state = remask(state)   # padding stays zero after every layer (torchntk.engine.mask)
        return state
    return run


def serial_need(layers: Sequence[Layer], full_out):
    """Whether the input of ``layers`` (in order) must be in the full layout, given whether their
    output must be: each layer's `Layer.need`, walking back from the output."""
    need = full_out
    for layer in reversed(layers):
        need = layer.need(need)
    return need


def serial_signal(layers: Sequence[Layer], sig, where: str):
    """The output signal of ``layers`` applied in order to ``sig`` (see `serial_signals`)."""
    return serial_signals(layers, sig, where)[1]


def serial_signals(layers: Sequence[Layer], sig, where: str) -> tuple[list, Any]:
    """(each layer's input signal, the output signal) of ``layers`` applied in order to ``sig``,
    each checked by its `Layer.signal` and named in errors as "layer i (its repr)", after
    "``where`` > " when nested."""
    prefix = f"{where} > " if where else ""
    inputs = []
    for i, layer in enumerate(layers):
        here = f"{prefix}layer {i} ({_short(layer)})"
        if isinstance(sig, tuple) and not layer.takes_branches():
            raise fail(here, f"its input is the {len(sig)} branches of a FanOut; merge them first with FanInSum() "
                             "or FanInConcat(), or give each its own layers with parallel(...).")
        inputs.append(sig)
        sig = layer.signal(sig, here)
        _check_positions_kept(sig, here)
    return inputs, sig


def _check_positions_kept(out, where: str) -> None:
    """With a mask (`torchntk.engine.mask`), every output with positions (each branch's, between a
    FanOut and its merge) must have the input's positions, until a readout (a global pooling,
    Flatten) leaves none: ArchitectureError naming the layer otherwise."""
    positions = side_shape(MASK)
    if positions is None:
        return
    for sig in out if isinstance(out, tuple) else (out,):
        if sig.spatial and not sig.flat and sig.shape != tuple(positions):
            raise fail(where, f"changes the positions ({'x'.join(map(str, positions))} -> "
                              f"{'x'.join(map(str, sig.shape))}), but a mask of positions was given, which must "
                              "stay over the same positions through every layer before the readout. Use stride 1 "
                              "and padding='same' (or 'circular'), or leave out the mask.")


def serial_build(layers: Sequence[Layer], signals: Sequence, channels, ctx: BuildContext):
    """(nn.Sequential of the layers' finite modules, the output's channel count).

    Args:
        layers: the layers in order.
        signals: each layer's input signal (as `serial_signal` computes them), one per layer.
        channels: the first layer's input channel count (a tuple between FanOut and FanIn).
        ctx: the build context, shared so that weighted layers are numbered depth-first.
    """
    built = []
    for layer, sig in zip(layers, signals, strict=True):
        module, channels = layer.build(sig, channels, ctx)
        built.append(module)
    return nn.Sequential(*built), channels


def _short(layer: Layer) -> str:
    text = repr(layer)
    return text if len(text) <= 60 else text[:57] + "..."
