"""What each layer of an architecture sees, known before any kernel is computed.

A `Signal` describes a layer's output for one input (not its values): its spatial shape, its
channels, and what the infinite-width limit knows about its law. Layers check their input
signal (wrong rank, a filter larger than the input, a nonlinearity whose input is not Gaussian,
branches that cannot be summed) and raise `ArchitectureError` naming themselves, so a bad
description fails at once with a message that says which layer and why.

Law, in the limit of infinite channels:
- gaussian: every channel is a centred Gaussian process (outputs of Dense/Conv, and linear
  maps or sums of such). Only then do a nonlinearity's two expectations follow from the
  covariance.
- centred: every channel has mean zero (Gaussian, or an odd nonlinearity of a Gaussian).
  LayerNorm's mean subtraction vanishes in the limit only then.
- fresh: the output of a weighted layer applied since the last FanOut (or since the input),
  through linear maps only. FanOut hands its branches signals that are not fresh: they are
  the same signal. Two branches of one FanOut are uncorrelated when at least one of them is
  fresh (its own weights are independent of the other branch and have mean zero), which is
  what makes FanInSum's kernel the sum of the branches'. A whole network's output must be fresh.

Widths. The NTK parameterisation's kernels never depend on finite widths; the standard
parameterisation's do (its NTK adds the input width times the input covariance). So a signal
also carries ``width``, the finite number of channels the description fixes at that point: the
data's channels (times the positions after Flatten), then each weighted layer's own ``width=``
(None where a layer has none), kept by linear maps, nonlinearities and FanOut, checked equal by
FanInSum / FanInProd and added by FanInConcat. It is a static fact of the description, like the
shapes, so it lives here rather than in the kernel state of each tile: `Layer.signal` checks it
(a standard layer whose input width is unknown is an error that names the layer), and
``compile(full_out, sig)`` hands each layer its input signal once per call, so a standard
layer's compiled kernel map holds its fan-in as a number (serial and parallel pass each of
their layers its own input signal).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

_LAW_CHECKS: ContextVar[bool] = ContextVar("law_checks", default=True)
_SIDE_SHAPES: ContextVar[dict[str, tuple[int, ...]] | None] = ContextVar("side_shapes", default=None)


@contextmanager
def side_shapes(shapes: dict[str, tuple[int, ...]]) -> Iterator[None]:
    """While checking signals, the per-input shapes of the side inputs a call was given (e.g.
    {"adjacency": (V, V)}), so that a layer reading one can check it against its own input and
    name itself in the error (`Aggregate`: the graph's V against its input's positions)."""
    token = _SIDE_SHAPES.set(dict(shapes))
    try:
        yield
    finally:
        _SIDE_SHAPES.reset(token)


def side_shape(name: str) -> tuple[int, ...] | None:
    """The per-input shape of side input ``name`` in the current `side_shapes`, None if not given."""
    return (_SIDE_SHAPES.get() or {}).get(name)


@contextmanager
def shapes_only() -> Iterator[None]:
    """Check shapes but not the limit's laws (Gaussian inputs, uncorrelated branches): finite
    networks of any description run, even where the infinite-width kernels are not exact."""
    token = _LAW_CHECKS.set(False)
    try:
        yield
    finally:
        _LAW_CHECKS.reset(token)


def law_checks() -> bool:
    """Whether layers should refuse inputs whose infinite-width law they cannot handle."""
    return _LAW_CHECKS.get()


class ArchitectureError(ValueError):
    """A network description that cannot be evaluated as given (the message names the layer)."""


@dataclass(frozen=True)
class Signal:
    """One layer's output, per input.

    shape: spatial shape, () for vectors.
    channels: the number of channels (features) if finite (the raw input), None once it is a
        hidden layer's width (infinite in the limit).
    gaussian, centred, fresh: see the module docstring.
    flat: after Flatten (positions are features; only Dense-like layers may follow).
    raw: the data itself (or a pooling / flattening of it), before any weights.
    mixed: the channels are those of several concatenated branches (FanInConcat), each Gaussian
        but with its branch's own covariance; the kernel then is their mean, which a layer that
        averages over channels (Dense, Conv, LayerNorm) sees, but a nonlinearity does not.
    width: the number of channels (features) the finite network has here, when the description
        fixes it: the raw input's channels (times the positions after Flatten), or the ``width``
        of the last weighted layer (kept by pooling, nonlinearities and FanOut; summed by
        FanInConcat). None when unknown (a weighted layer without ``width=``). It is what a
        layer in the standard parameterisation reads as its fan-in, whose NTK depends on it.
    """

    shape: tuple[int, ...]
    channels: int | None
    gaussian: bool
    centred: bool
    fresh: bool
    flat: bool = False
    raw: bool = False
    mixed: bool = False
    width: int | None = None

    @property
    def spatial(self) -> int:
        """The number of spatial axes d: 0 for vectors, 1 for sequences, 2 for images."""
        return len(self.shape)

    def describe(self) -> str:
        """A short phrase for error messages, e.g. "8x8 positions with 3 channels" or "vectors with hidden width"."""
        what = "vectors" if not self.shape else f"{'x'.join(map(str, self.shape))} positions"
        width = f"{self.channels} channels" if self.channels is not None else "hidden width"
        return f"{what} with {width}" + (" (flattened)" if self.flat else "")

    def after_weights(self, shape: tuple[int, ...] | None = None, flat: bool = False,
                      width: int | None = None) -> Signal:
        """The signal of a weighted layer's (Dense, Conv) output: hidden width, Gaussian, centred, fresh.

        Args:
            shape: the output's spatial shape (default: the input's).
            flat: whether the output is still flattened (a Dense after Flatten).
            width: the layer's own ``width`` (its output channels), None if it has none.
        """
        return Signal(self.shape if shape is None else shape, None, True, True, True, flat, False, width=width)

    def after_linear(self, **changes) -> Signal:
        """The signal after a linear, weight-free map (pooling, Flatten): the law is kept, the
        fields in ``changes`` (e.g. ``shape``, ``flat``) are replaced."""
        return replace(self, **changes)


def input_signal(shape: tuple[int, ...]) -> Signal:
    """The signal of raw inputs of per-example shape (d,), (C, L) or (C, H, W)."""
    if len(shape) == 1:
        return Signal((), shape[0], False, False, False, raw=True, width=shape[0])
    return Signal(tuple(shape[1:]), shape[0], False, False, False, raw=True, width=shape[0])


def fail(where: str, message: str) -> ArchitectureError:
    """The `ArchitectureError` "``where``: ``message``" (returned, for the caller to raise)."""
    return ArchitectureError(f"{where}: {message}")
