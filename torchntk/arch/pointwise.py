"""Layers that act at each position: Dense (on vectors), nonlinearities, LayerNorm.

Dense and the nonlinearities are torchntk's own `Dense` and `Activation` objects; `as_layer`
wraps them into the architecture protocol, so one object serves the fully-connected fast path
and every architecture.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..activations import Activation, PiecewiseLinear
from ..layers import Dense
from ..networks import NTKDense
from . import modules, ops
from .base import BuildContext, Layer
from .signal import Signal, fail, law_checks
from .spatial import _check_scales, dense_kernel
from .state import ArchState

_ODD = {"erf", "sin", "tanh", "identity", "softsign", "atan", "asinh"}


def is_linear(act: Activation) -> bool:
    """Whether the activation is the linear map x -> a x (a `PiecewiseLinear` with equal slopes a = b)."""
    return isinstance(act, PiecewiseLinear) and act.a == act.b


def is_odd(act: Activation) -> bool:
    """Whether sigma(-x) = -sigma(x), so that sigma of a centred Gaussian has mean zero."""
    if isinstance(act, PiecewiseLinear):
        return act.a == act.b
    return bool(getattr(act, "odd", False)) or act.name in _ODD


class DenseLayer(Layer):
    """`Dense` in an architecture: on vectors, or after Flatten (fan-in C * positions)."""

    weighted = True

    def __init__(self, dense: Dense) -> None:
        self.dense = dense

    def __repr__(self) -> str:
        return repr(self.dense)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "Dense", "bias_std": _num(self.dense.bias_std), "weight_std": _num(self.dense.weight_std)}

    def signal(self, sig: Signal, where: str) -> Signal:
        _check_scales(self.dense, where)
        if sig.spatial and not sig.flat:
            raise fail(where, f"Dense takes vectors, but its input is {sig.describe()}; put Flatten() or "
                              "GlobalAvgPool() before it.")
        return sig.after_weights(())

    def kernel(self, state: ArchState, full_out) -> ArchState:
        return dense_kernel(self.dense, state)

    def build(self, sig: Signal, channels, ctx: BuildContext) -> tuple[nn.Module, int]:
        width, index = ctx.next_layer()
        module = NTKDense(channels, width, weight_std=_num(self.dense.weight_std), bias_std=_num(self.dense.bias_std),
                          parameterization=ctx.parameterization, seed=ctx.seed, index=index, dtype=ctx.dtype,
                          device=ctx.device)
        return module, width


class ActivationLayer(Layer):
    """A nonlinearity at every position: K' = E[s(u) s(v)], Theta' = Theta E[s'(u) s'(v)]."""

    def __init__(self, activation: Activation) -> None:
        self.activation = activation

    def __repr__(self) -> str:
        return repr(self.activation)

    def to_dict(self) -> dict[str, Any]:
        from .serialize import activation_to_dict
        return activation_to_dict(self.activation)

    def signal(self, sig: Signal, where: str) -> Signal:
        if is_linear(self.activation):
            return sig
        if not sig.gaussian and law_checks():
            source = "the raw input (the data, before any weights)" if sig.raw else \
                "the output of a layer that is not Gaussian in the limit (a nonlinearity, MaxPool, or a pooling " \
                "or sum involving one)"
            raise fail(where, f"a nonlinearity needs a Gaussian input in the infinite-width limit, but its input is "
                              f"{source}; put a Dense or Conv layer before it (or estimate such kernels with "
                              "torchntk.monte_carlo_kernels).")
        odd = is_odd(self.activation)
        return Signal(sig.shape, sig.channels, False, odd and sig.centred, False, sig.flat)

    def kernel(self, state: ArchState, full_out) -> ArchState:
        if state.full and not full_out:
            state = state.to_diagonal()
        if is_linear(self.activation):
            return state if self.activation.a == 1 else ops.linear(state, lambda t, prefix: t * self.activation.a ** 2)
        return ops.nonlinearity(state, self.activation)

    def build(self, sig: Signal, channels, ctx: BuildContext) -> tuple[nn.Module, Any]:
        return modules.Elementwise(self.activation), channels


class LayerNorm(Layer):
    """Normalise each input's features to zero mean and unit variance: the channels at each
    position (images, sequences), all features for vectors and after Flatten. No affine part.

    In the limit the mean over channels of a centred signal vanishes and the mean square
    concentrates on the variance, so K'(x, x') = K(x, x') / sqrt(K(x, x) K(x', x')) at each
    position (and the NTK likewise). The input must be centred: the output of Dense/Conv (or
    sums/pools of them) or of an odd nonlinearity of such.
    """

    def __repr__(self) -> str:
        return "LayerNorm()"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "LayerNorm"}

    def signal(self, sig: Signal, where: str) -> Signal:
        if not sig.centred and law_checks():
            raise fail(where, "LayerNorm needs an input whose channels have mean zero in the infinite-width limit "
                              "(the output of Dense or Conv, or of an odd nonlinearity such as erf after them); its "
                              "input here has a non-zero mean, whose limit this library does not model. Put it "
                              "right after a Dense or Conv layer.")
        return sig

    def kernel(self, state: ArchState, full_out) -> ArchState:
        if state.full and not full_out:
            state = state.to_diagonal()
        return ops.normalise(state)

    def build(self, sig: Signal, channels, ctx: BuildContext) -> tuple[nn.Module, Any]:
        return modules.LayerNorm(), channels


def as_layer(layer: Any, where: str = "") -> Layer:
    """The architecture layer for a description entry (Dense, an activation, or a Layer)."""
    from ..activations import get_activation

    if isinstance(layer, Layer):
        return layer
    if isinstance(layer, Dense):
        return DenseLayer(layer)
    try:
        act = get_activation(layer)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}{layer!r} is not a layer: expected Dense, Conv, a pooling or branching layer, or an "
                        f"activation ({exc})") from None
    act.check()
    return ActivationLayer(act)


def _num(scale):
    return float(scale.item()) if hasattr(scale, "item") else scale
