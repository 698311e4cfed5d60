"""Layers that act at each position: nonlinearities and LayerNorm.

A nonlinearity of a description is one of torchntk's `Activation` objects (or a name or a
callable that `get_activation` turns into one); `as_layer` wraps it into a `Nonlinearity`, the
layer protocol around its two Gaussian expectations.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from torch import nn

from ..activations import QUADRATURE, Activation, LeakyReLU, PiecewiseLinear, get_activation
from ..networks import modules
from . import maps
from .base import BuildContext, Layer
from .signal import Signal, fail, law_checks
from .state import KernelState

_ODD = {"erf", "sin", "tanh", "identity", "softsign", "atan", "asinh"}


def is_linear(act: Activation) -> bool:
    """Whether the activation is the linear map x -> a x (a `PiecewiseLinear` with equal slopes a = b)."""
    return isinstance(act, PiecewiseLinear) and act.a == act.b


def is_odd(act: Activation) -> bool:
    r"""Whether :math:`\sigma(-x) = -\sigma(x)`, so that :math:`\sigma` of a centred Gaussian has mean zero."""
    if isinstance(act, PiecewiseLinear):
        return act.a == act.b
    return bool(getattr(act, "odd", False)) or act.name in _ODD


class Nonlinearity(Layer):
    r"""A nonlinearity at every position: :math:`K' = \mathbb E[\sigma(u)\, \sigma(v)]`,
    :math:`\Theta' = \Theta\, \mathbb E[\sigma'(u)\, \sigma'(v)]`, with :math:`(u, v)` centred
    Gaussian of covariance :math:`K`."""

    def __init__(self, activation: Activation) -> None:
        self.activation = activation

    def __repr__(self) -> str:
        return repr(self.activation)

    def to_dict(self) -> dict[str, Any]:
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
        if sig.mixed and law_checks():
            raise fail(where, "a nonlinearity acts on each channel, and its input concatenates branches (FanInConcat) "
                              "whose channels have different covariances, so its kernel is not a function of their "
                              "mean; put a Dense or Conv layer after FanInConcat (or use FanInSum).")
        odd = is_odd(self.activation)
        return Signal(sig.shape, sig.channels, False, odd and sig.centred, False, sig.flat, width=sig.width)

    def kernel(self, state: KernelState, full_out) -> KernelState:
        if state.full and not full_out:
            state = state.to_diagonal()
        if is_linear(self.activation):
            return state if self.activation.a == 1 else maps.linear(state, lambda t, prefix: t * self.activation.a ** 2)
        return maps.nonlinearity(state, self.activation)

    def build(self, sig: Signal, channels, ctx: BuildContext) -> tuple[nn.Module, Any]:
        return modules.Elementwise(self.activation), channels


class LayerNorm(Layer):
    r"""Normalise each input's features to zero mean and unit variance over the axes ``axis`` of
    PyTorch's layout, no affine part.

    ``axis=1`` (the default) normalises the channels at each position of an image or sequence
    (all features of a vector, and all :math:`C P` features after Flatten). A tuple of axes
    normalises over the channels and those spatial axes together: ``axis=(1, 2, 3)`` each image
    (N, C, H, W) over all its channels and positions, ``axis=(1, 2)`` each sequence (N, C, L),
    ``axis=(1, 3)`` each row of an image over its channels and columns. The axes must include 1,
    the channels (the limit is taken in them), and never 0, the batch; negative axes count from
    the end of the input's rank.

    In the limit the mean over channels of a centred signal vanishes and the mean square
    concentrates on the variance. With :math:`\bar K(x, x)(p)` the mean of the variances
    :math:`K(x, x)(r, r)` over the positions :math:`r` normalised together with :math:`p` (just
    :math:`p` for ``axis=1``),

    .. math::

        K'(x, x')(p, q) = \frac{K(x, x')(p, q)}{\sqrt{(\bar K(x, x)(p) + \epsilon)(\bar K(x', x')(q) + \epsilon)}},

    and the NTK likewise, with the finite layer's :math:`\epsilon = 10^{-12}` (neural-tangents'
    ``stax.LayerNorm(axis=...)`` too), which keeps an input of zero variance finite. The input
    must be centred: the output of Dense/Conv (or sums/pools of them) or of an odd nonlinearity
    of such.

    Args:
        axis: an int or a tuple of ints, the axes of the input (N, C, *positions) or (N, d) to
            normalise over; they must include 1.
    """

    def __init__(self, *, axis: int | tuple[int, ...] = 1) -> None:
        self.axis = _check_axis(axis)

    def __repr__(self) -> str:
        return "LayerNorm()" if self.axis == 1 else f"LayerNorm(axis={self.axis!r})"

    def to_dict(self) -> dict[str, Any]:
        # the default writes no axis, so descriptions (and kernel stores keyed by them) read as before
        if self.axis == 1:
            return {"layer": "LayerNorm"}
        return {"layer": "LayerNorm", "axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis}

    def axes(self, sig: Signal, where: str) -> tuple[int, ...]:
        """The normalised axes of an input of signal ``sig``, non-negative and sorted (1 first)."""
        rank = 2 if sig.flat or sig.spatial == 0 else 2 + sig.spatial
        given = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        resolved = []
        for a in given:
            if not -rank <= a < rank:
                raise fail(where, f"axis {a} is out of range for inputs of rank {rank} ({sig.describe()}, as "
                                  f"(N, C{', positions' if rank > 2 else ''})); give axes among 1..{rank - 1}.")
            resolved.append(a % rank)
        if len(set(resolved)) != len(resolved):
            raise fail(where, f"axis={self.axis!r} names the same axis twice for inputs of rank {rank}.")
        if 0 in resolved:
            raise fail(where, f"axis={self.axis!r} includes 0, the batch: each input is normalised on its own; "
                              "leave 0 out (e.g. axis=(1, 2, 3) for a whole image).")
        if 1 not in resolved:
            raise fail(where, f"axis={self.axis!r} leaves out 1, the channels, over which the infinite-width "
                              "limit is taken, so the normalisation has no limit kernel; include 1 (axis=1 "
                              "normalises the channels at each position).")
        return tuple(sorted(resolved))

    def signal(self, sig: Signal, where: str) -> Signal:
        self.axes(sig, where)
        if not sig.centred and law_checks():
            raise fail(where, "LayerNorm needs an input whose channels have mean zero in the infinite-width limit "
                              "(the output of Dense or Conv, or of an odd nonlinearity such as erf after them); its "
                              "input here has a non-zero mean, whose limit this library does not model. Put it "
                              "right after a Dense or Conv layer.")
        return sig

    def _spatial_axes(self, spatial: int, flat: bool) -> tuple[int, ...]:
        """The spatial axes (0 for the first position axis) whose positions are normalised together."""
        if flat or spatial == 0:
            return ()
        rank = 2 + spatial
        given = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        return tuple(sorted(a % rank - 2 for a in given if a % rank >= 2))

    def kernel(self, state: KernelState, full_out) -> KernelState:
        if state.full and not full_out:
            state = state.to_diagonal()
        return maps.normalise(state, modules.LAYER_NORM_EPS, axes=self._spatial_axes(state.spatial, state.flat))

    def build(self, sig: Signal, channels, ctx: BuildContext) -> tuple[nn.Module, Any]:
        return modules.LayerNorm(axes=self.axes(sig, repr(self))), channels


def _check_axis(axis: Any) -> int | tuple[int, ...]:
    """``axis`` as an int or a tuple of ints (a one-element tuple or list is its int); TypeError otherwise."""
    def integral(a: Any) -> bool:
        return isinstance(a, numbers.Integral) and not isinstance(a, bool)
    if integral(axis):
        return int(axis)
    if isinstance(axis, (tuple, list)) and axis and all(integral(a) for a in axis):
        return int(axis[0]) if len(axis) == 1 else tuple(int(a) for a in axis)
    raise TypeError(f"LayerNorm: axis must be an int or a non-empty tuple of ints (axes of the input in PyTorch's "
                    f"layout, e.g. 1 or (1, 2, 3)), got {axis!r}.")


def as_layer(layer: Any, where: str = "") -> Layer:
    """The engine layer for a description entry: a `Layer` as it is, an activation (object,
    name or callable) as a `Nonlinearity`."""
    if isinstance(layer, Layer):
        return layer
    try:
        act = get_activation(layer)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}{layer!r} is not a layer: expected Dense, Conv, a pooling or branching layer, or an "
                        f"activation ({exc})") from None
    act.check()
    return Nonlinearity(act)


_NAME_CALLABLES: ContextVar[bool] = ContextVar("name_callables", default=False)


@contextmanager
def naming_callables() -> Iterator[None]:
    """Within this context a user's activation callable is written as a node that names its code,
    ``{"layer": "Activation", "name": ..., "nodes": ..., "fn": "module.qualname"}`` (a record
    that tells descriptions apart, as kernel stores need; `from_dict` cannot rebuild it), with
    a warning that edits to that code under the same name go unnoticed."""
    token = _NAME_CALLABLES.set(True)
    try:
        yield
    finally:
        _NAME_CALLABLES.reset(token)


def _qualname(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def activation_to_dict(act: Activation) -> dict[str, Any]:
    """The plain-data node of an activation: ``{"layer": class name, **config}``, or for the
    quadrature ones ``{"layer": "Activation", "name": ..., "nodes": ...}``. A user's own callable
    cannot be saved as data: ValueError (but see `naming_callables`)."""
    if hasattr(act, "config"):
        return {"layer": type(act).__name__, **act.config()}
    if type(act) is Activation:
        if act.name in QUADRATURE and act.fn is QUADRATURE[act.name] and act.derivative is None:
            return {"layer": "Activation", "name": act.name, "nodes": act.nodes}
        if _NAME_CALLABLES.get():
            node = {"layer": "Activation", "name": act.name, "nodes": act.nodes, "fn": _qualname(act.fn)}
            if act.derivative is not None:
                node["derivative"] = _qualname(act.derivative)
            warnings.warn(f"activation {act.name!r} is user code: the record names only its code ({node['fn']}), "
                          "so a later run cannot detect that the code changed. Use a new store path whenever you "
                          "change it.", UserWarning, stacklevel=6)
            return node
        raise ValueError(f"activation {act.name!r} is a user callable and cannot be saved as data; use a built-in "
                         f"activation or a named one ({', '.join(sorted(QUADRATURE))}).")
    if isinstance(act, LeakyReLU):
        return {"layer": "LeakyReLU", "slope": act.slope}
    if type(act) is PiecewiseLinear:
        return {"layer": "PiecewiseLinear", "a": act.a, "b": act.b}
    if not [p for p in inspect.signature(type(act).__init__).parameters if p != "self"]:
        return {"layer": type(act).__name__}
    raise ValueError(f"activation {act!r} cannot be saved as data (it has no config()).")
