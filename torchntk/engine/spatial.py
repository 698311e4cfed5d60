"""Spatial layers: convolution, pooling and the readouts from images or sequences to vectors.

Inputs are PyTorch's layout, (N, C, L) sequences and (N, C, H, W) images (3-D volumes too).
Kernel maps (windows.py gives the padding):

    Conv(F, stride s):    Sigma'(p, q) = weight_std^2 (1/|F|) sum_{a in F} K(s p + a, s q + a) + bias_std^2
    AvgPool(F, s):        K'(p, q) = (1/|F|^2) sum_{a, b in F} K(s p + a, s q + b)
    AvgPool(normalize_edges=True), "same" padding: K'(p, q) = (1/(n_p n_q)) sum_{a, b} K(s p + a, s q + b),
                          n_p the number of real (non-padding) positions in window p
    SumPool(F, s):        K'(p, q) = sum_{a, b in F} K(s p + a, s q + b)
    GlobalAvgPool:        K' = mean over all (p, q) of K(p, q)
    GlobalSumPool:        K' = sum over all (p, q) of K(p, q) = |positions|^2 GlobalAvgPool
    Flatten:              positions become features; a following Dense sees mean_p K(p, p)

Conv and nonlinearities map the diagonal layout (p = q only) to itself, so a network read out by
Flatten never computes covariances between positions; pooling needs them below it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch import nn

from ..networks import modules
from ..networks.weighted import NTKConv
from . import layout, maps
from .base import (
    BuildContext,
    Layer,
    check_int_tuple,
    check_layer_scales,
    check_weighted_options,
    known_fan_in,
    number,
    options_dict,
    show_options,
    square,
    standard_fan_in,
)
from .mask import MASK, real_counts
from .signal import ArchitectureError, Signal, fail, side_shape
from .state import KernelState
from .windows import PADDINGS, out_size, window_sum


def _check_padding(padding: Any, where: str) -> str:
    if padding not in PADDINGS:
        raise fail(where, f"padding must be one of {PADDINGS}, got {padding!r}.")
    return padding


def _identity(t, prefix):
    return t


def _window_map(window: tuple[int, ...], stride: tuple[int, ...], padding: str, sizes: tuple[int, ...],
                full: bool, diagonal_shift: bool):
    """The linear map of a Conv (``diagonal_shift``) or an AvgPool on kernel tensors, without
    the division by the window size (Conv folds it into weight_std^2; AvgPool applies it once).
    A window of 1 with stride 1 is the identity and returns its argument itself: the layers own
    the tensors of the state they replace (state.py), so the copy `window_sum` makes is not needed."""
    if all(k == 1 and s == 1 for k, s in zip(window, stride, strict=True)):
        return _identity

    def f(t, prefix):
        for axis, (k, s, size) in enumerate(zip(window, stride, sizes, strict=True)):
            if not full:
                t = window_sum(t, (prefix + axis,), size, k, s, padding)
            elif diagonal_shift:
                t = window_sum(t, (prefix + 2 * axis, prefix + 2 * axis + 1), size, k, s, padding)
            else:
                t = window_sum(t, (prefix + 2 * axis,), size, k, s, padding)
                t = window_sum(t, (prefix + 2 * axis + 1,), size, k, s, padding)
        return t
    return f


class _Windowed(Layer):
    """Shared checks of windowed layers (Conv, AvgPool, MaxPool)."""

    kind = "window"

    def _output_shape(self, sig: Signal, where: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if sig.spatial == 0 or sig.flat:
            raise fail(where, f"needs inputs with positions, (N, C, L) or (N, C, H, W); it got {sig.describe()}.")
        window = check_int_tuple(self._window, self.kind, sig.spatial, where)
        stride = check_int_tuple(window if self._stride is None else self._stride, "stride", sig.spatial, where)
        for size, k in zip(sig.shape, window, strict=True):
            if self.padding == "valid" and k > size:
                raise fail(where, f"the {self.kind} {window} is larger than the input {sig.shape} under "
                                  "padding='valid'; use a smaller window or padding='same'.")
            if self.padding == "circular" and k - 1 > size:
                raise fail(where, f"circular padding wraps at most once: the {self.kind} {window} is too large "
                                  f"for the input {sig.shape}.")
        shape = tuple(out_size(n, k, s, self.padding) for n, k, s in zip(sig.shape, window, stride, strict=True))
        return shape, stride

    def _resolve(self, spatial: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(window, stride) as tuples of ``spatial`` ints (validated by ``signal`` already)."""
        def spread(v):
            return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * spatial
        window = spread(self._window)
        return window, spread(window if self._stride is None else self._stride)

    def _map(self, state: KernelState, full: bool, diagonal_shift: bool):
        window, stride = self._resolve(state.spatial)
        shape = state.nngp.shape[state.prefix:]
        sizes = tuple(shape[::2]) if state.full else tuple(shape)
        return _window_map(window, stride, self.padding, sizes, full, diagonal_shift)


class Conv(_Windowed):
    r"""Convolution with ``filter_shape`` :math:`F` (1-D, 2-D or 3-D), in the NTK parameterisation:

    .. math::

        \tilde a = \frac{\sigma_w}{\sqrt{C_\text{in}\, |F|}}\, W * a + \beta\, b,
        \qquad W, b \text{ iid } \mathcal N(0, 1),

    with :math:`|F|` the number of positions in the filter (neural-tangents'
    ``stax.Conv(..., parameterization="ntk")``). On kernels, for positions :math:`p, q` and
    stride :math:`s`,

    .. math::

        \Sigma'(p, q) = \sigma_w^2\, \frac{1}{|F|} \sum_{a \in F} K(s p + a, s q + a) + \beta^2,

    and the NTK takes the same window mean of the incoming NTK, plus :math:`\Sigma'`.

    With ``parameterization="standard"`` (neural-tangents' ``stax.Conv(width, filter_shape,
    parameterization="standard")``) the finite layer computes :math:`W * a + b` with
    :math:`W \sim \mathcal N(0, \sigma_w^2 / (C_\text{in} |F|))`, :math:`b \sim \mathcal N(0,
    \beta^2)`; the NNGP is the same, and with :math:`\mathcal L` the window mean above,

    .. math::

        \Theta' = C_\text{in} |F|\, \mathcal L(K) + \sigma_w^2\, \mathcal L(\Theta) + 1,

    the 1 from the bias (always present in the finite layer). :math:`C_\text{in}` is the data's
    channels for a first layer, else the previous weighted layer's ``width``.

    Args:
        filter_shape: the window, e.g. (3, 3); an int means that size in every axis.
        stride: :math:`s`, an int (the same in every axis) or a tuple, one per axis.
        padding: "valid" (none), "same" (zeros, ceil(size / stride) outputs) or "circular"
            (wrap-around).
        bias_std: :math:`\beta`, the scale of the bias (0.1 by default), by name.
        weight_std: :math:`\sigma_w`, the scale of the weights (1 by default), by name.
        parameterization: "ntk" (the default, the paper's) or "standard".
        width: the number of output channels in its finite networks, or None (then
            ``spec.network(width=...)`` sets it, and for the last layer ``out_features``). A
            layer in the standard parameterisation reads it as its input channels when it
            follows this one.
        *positional: not accepted after ``filter_shape``: a TypeError that says what was meant
            (neural-tangents' ``stax.Conv(out_chan, filter_shape)`` puts the width first, which
            is ``width=out_chan`` here).
    """

    weighted = True
    kind = "filter"

    def __init__(self, filter_shape: int | tuple[int, ...], *positional: Any, stride: int | tuple[int, ...] = 1,
                 padding: str = "valid", bias_std: float = 0.1, weight_std: float = 1.0,
                 parameterization: str = "ntk", width: int | None = None) -> None:
        if positional:   # neural-tangents' stax.Conv(out_chan, filter_shape): the width comes first there
            raise TypeError(f"Conv takes the filter shape, then options by name: Conv(filter_shape, stride=..., "
                            f"padding=..., bias_std=..., weight_std=...); got Conv({filter_shape!r}, "
                            f"{', '.join(map(repr, positional))}). If {filter_shape!r} is the number of channels, "
                            "as in neural-tangents' stax.Conv(out_chan, filter_shape), give it by name: "
                            f"Conv(filter_shape, width={filter_shape!r}), or for every hidden layer at once "
                            "spec.network(width=...).")
        check_weighted_options("Conv", parameterization, width)
        self.filter_shape, self.stride, self.padding = filter_shape, stride, padding
        self.bias_std, self.weight_std = bias_std, weight_std
        self.parameterization, self.width = parameterization, None if width is None else int(width)

    @property
    def _window(self):
        return self.filter_shape

    @property
    def _stride(self):
        return self.stride

    def __repr__(self) -> str:
        return (f"Conv({_show(self.filter_shape)}, stride={_show(self.stride)}, padding={self.padding!r}, "
                f"bias_std={_num(self.bias_std)}, weight_std={_num(self.weight_std)}{show_options(self)})")

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "Conv", "filter_shape": _listed(self.filter_shape), "stride": _listed(self.stride),
                "padding": self.padding, "bias_std": _num(self.bias_std), "weight_std": _num(self.weight_std),
                **options_dict(self)}

    def signal(self, sig: Signal, where: str) -> Signal:
        _check_padding(self.padding, where)
        check_layer_scales(self, where)
        if self._stride is None:
            raise fail(where, "stride must be an int or a tuple of ints, got None.")
        shape, _ = self._output_shape(sig, where)
        standard_fan_in(self, sig, where)
        return sig.after_weights(shape, width=self.width)

    def compile(self, full_out, sig: Signal | None = None):
        channels = known_fan_in(self, sig) if self.parameterization == "standard" else None
        return partial(self.kernel, full_out=full_out, in_channels=channels)

    def kernel(self, state: KernelState, full_out, in_channels: int | None = None) -> KernelState:
        r"""The kernel map (see the class docstring); ``in_channels`` is :math:`C_\text{in}`, which
        the standard parameterisation needs (`compile` reads it from the input signal)."""
        if self.parameterization == "standard" and in_channels is None:
            raise ArchitectureError(f"{self!r}: the standard parameterisation's kernel needs the input channels; "
                                    "compute kernels through a description (spec.kernels), which knows them.")
        if state.full and not full_out:
            state = state.to_diagonal()
        f = self._map(state, state.full, diagonal_shift=True)
        window, _ = self._resolve(state.spatial)
        # f sums over the window: C_in |F| times its mean is C_in times the sum.
        return maps.affine(state, square(self.weight_std) / math.prod(window), square(self.bias_std), f,
                           fan_in=in_channels)

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        window, stride = self._resolve(sig.spatial)
        width, index = ctx.next_layer()
        return NTKConv(channels, width, window, stride=stride, padding=self.padding,
                               weight_std=number(self.weight_std), bias_std=number(self.bias_std),
                               parameterization=self.parameterization, seed=ctx.seed, index=index,
                               dtype=ctx.dtype, device=ctx.device), width


class _Pool(_Windowed):
    """Shared arguments of the pooling layers: a window, a stride (None: the window), padding."""

    def __init__(self, window_shape: int | tuple[int, ...], *, stride: int | tuple[int, ...] | None = None,
                 padding: str = "valid") -> None:
        self.window_shape, self.stride, self.padding = window_shape, stride, padding

    @property
    def _window(self):
        return self.window_shape

    @property
    def _stride(self):
        return self.stride

    def _options(self) -> dict[str, Any]:
        """Arguments beyond the window, stride and padding (for repr and to_dict)."""
        return {}

    def __repr__(self) -> str:
        extra = "".join(f", {name}={value!r}" for name, value in self._options().items())
        return (f"{type(self).__name__}({_show(self.window_shape)}, stride={_show(self.stride)}, "
                f"padding={self.padding!r}{extra})")

    def to_dict(self) -> dict[str, Any]:
        return {"layer": type(self).__name__, "window_shape": _listed(self.window_shape),
                "stride": None if self.stride is None else _listed(self.stride), "padding": self.padding,
                **self._options()}


class _LinearPool(_Pool):
    """A window sum, divided by a per-window count (AvgPool) or not (SumPool): a linear map, so
    Gaussian in, Gaussian out, and it needs the covariances between positions below it."""

    def signal(self, sig: Signal, where: str) -> Signal:
        _check_padding(self.padding, where)
        shape, _ = self._output_shape(sig, where)
        return sig.after_linear(shape=shape)

    def need(self, full_out):
        return True

    def _divide(self, t: torch.Tensor, prefix: int, window: tuple[int, ...], stride: tuple[int, ...],
                sizes: tuple[int, ...]) -> torch.Tensor:
        """The window sums t (full form) divided by what the layer averages over."""
        return t

    def kernel(self, state: KernelState, full_out) -> KernelState:
        window, stride = self._resolve(state.spatial)
        sizes = tuple(state.nngp.shape[state.prefix:][::2])
        pooled = self._map(state, True, diagonal_shift=False)
        state = maps.linear(state, lambda t, prefix: self._divide(pooled(t, prefix), prefix, window, stride, sizes))
        return state if full_out else state.to_diagonal()


class AvgPool(_LinearPool):
    r"""Average over windows :math:`F` of ``window_shape``, no parameters:
    :math:`K'(p, q) = \frac{1}{|F|^2} \sum_{a, b \in F} K(s p + a, s q + b)`, padded zeros counted.

    With ``normalize_edges=True`` and "same" padding, each window is divided by the number
    :math:`n_p` of its real (non-padding) positions instead, as torch's ``count_include_pad=False``:
    :math:`K'(p, q) = \frac{1}{n_p n_q} \sum_{a, b \in F} K(s p + a, s q + b)` (neural-tangents'
    option of that name; it changes nothing under "valid" or "circular" padding).

    Args:
        window_shape: the window, e.g. (2, 2); an int means that size in every axis.
        stride: :math:`s`, an int or a tuple; None (the default) is the window.
        padding: "valid", "same" or "circular", as for `Conv`.
        normalize_edges: divide each window by its real positions (under "same" padding).
    """

    def __init__(self, window_shape: int | tuple[int, ...], *, stride: int | tuple[int, ...] | None = None,
                 padding: str = "valid", normalize_edges: bool = False) -> None:
        super().__init__(window_shape, stride=stride, padding=padding)
        self.normalize_edges = normalize_edges

    def _options(self) -> dict[str, Any]:
        return {"normalize_edges": self.normalize_edges} if self.normalize_edges else {}

    def signal(self, sig: Signal, where: str) -> Signal:
        if not isinstance(self.normalize_edges, bool):
            raise fail(where, f"normalize_edges must be True or False, got {self.normalize_edges!r}.")
        if self.normalize_edges and side_shape(MASK) is not None:
            raise fail(where, "normalize_edges=True divides each window by its positions inside the input, padding "
                              "included, but a mask of positions was given; leave out one of them (padding holds "
                              "zeros, so the plain window mean treats it as 'same' padding).")
        return super().signal(sig, where)

    def _divide(self, t, prefix, window, stride, sizes):
        if not (self.normalize_edges and self.padding == "same"):
            scale = 1.0 / math.prod(window) ** 2   # the window sums are a fresh tensor: scale it in place
            return t.mul_(scale) if not torch.is_grad_enabled() else t * scale
        for axis, counts in enumerate(_real_counts(window, stride, sizes, t)):
            for dim in (prefix + 2 * axis, prefix + 2 * axis + 1):
                shape = [1] * t.dim()
                shape[dim] = counts.numel()
                t = t / counts.view(shape)
        return t

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        window, stride = self._resolve(sig.spatial)
        return modules.AvgPool(window, stride, self.padding, normalize_edges=self.normalize_edges), channels


class SumPool(_LinearPool):
    r"""Sum over windows :math:`F` of ``window_shape``, no parameters:
    :math:`K'(p, q) = \sum_{a, b \in F} K(s p + a, s q + b)` (neural-tangents' ``stax.SumPool``).

    Args:
        window_shape: the window, e.g. (2, 2); an int means that size in every axis.
        stride: :math:`s`, an int or a tuple; None (the default) is the window.
        padding: "valid", "same" or "circular", as for `Conv`.
    """

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        window, stride = self._resolve(sig.spatial)
        return modules.SumPool(window, stride, self.padding), channels


def _real_counts(window, stride, sizes, like: torch.Tensor) -> list[torch.Tensor]:
    """Per axis, the number of real (non-padding) positions in each output window: (out_size,)."""
    ones = [torch.ones(size, dtype=like.dtype, device=like.device) for size in sizes]
    return [window_sum(one, (0,), size, k, s, "same") for one, size, k, s in zip(ones, sizes, window, stride,
                                                                                    strict=True)]


class MaxPool(_Pool):
    """Maximum over windows (arguments as for `AvgPool`). Its infinite-width kernels have no
    closed form (the maximum of
    correlated Gaussians): finite networks work, and `torchntk.monte_carlo_kernels` estimates
    the kernels; ``spec.kernels`` raises."""

    def signal(self, sig: Signal, where: str) -> Signal:
        _check_padding(self.padding, where)
        shape, _ = self._output_shape(sig, where)
        return Signal(shape, sig.channels, False, False, False, width=sig.width)

    def kernel(self, state: KernelState, full_out) -> KernelState:
        """Always raises `ArchitectureError`: MaxPool has no closed-form kernel (see the class docstring)."""
        raise ArchitectureError(f"{self!r}: {self.why_not}")

    analytic = False
    why_not = ("MaxPool has no closed-form infinite-width kernel (the maximum of correlated Gaussians); "
               "estimate it with torchntk.monte_carlo_kernels(spec, x1, x2) over finite networks, or use AvgPool.")

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        window, stride = self._resolve(sig.spatial)
        return modules.MaxPool(window, stride, self.padding), channels


class GlobalAvgPool(Layer):
    r"""Mean over all positions, (N, C, *positions) -> (N, C):
    :math:`K' = \frac{1}{P^2} \sum_{p, q} K(p, q)` over the :math:`P` positions; under a mask
    (`torchntk.engine.mask`) the mean over each input's real positions,
    :math:`K'(x, x') = \frac{1}{c\, c'} \sum_{p, q} K(x, x')(p, q)` with padding at zero and
    :math:`c, c'` the two inputs' numbers of real positions."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": type(self).__name__}

    def signal(self, sig: Signal, where: str) -> Signal:
        if sig.spatial == 0 or sig.flat:
            raise fail(where, f"needs inputs with positions, (N, C, L) or (N, C, H, W); it got {sig.describe()}.")
        return sig.after_linear(shape=())

    def need(self, full_out):
        return True

    averages = True   # over the real positions, under a mask (GlobalSumPool sums, padding adds zeros)

    def _scale(self, positions: int) -> float:
        return 1.0

    def kernel(self, state: KernelState, full_out) -> KernelState:
        spatial = state.spatial
        positions = math.prod(state.nngp.shape[state.prefix:][::2])
        scale = self._scale(positions)
        masks = state.side.get(MASK)
        if masks is None or not self.averages:
            return maps.readout(state, lambda t, prefix: layout.mean_all(t, spatial, prefix) * scale)
        # the mean over each input's real positions: the sum over all of them (padding holds
        # zeros) over c c', the two inputs' numbers of real positions
        total = float(positions) ** 2
        out = maps.readout(state, lambda t, prefix: layout.mean_all(t, spatial, prefix) * total)
        c1, c2 = (real_counts(m).to(out.nngp.dtype) for m in masks)
        pair = c1 * c2 if out.prefix == 1 else c1[:, None] * c2[None]
        ntk = out.ntk if out.ntk is None or out.ntk.dim() == 0 else out.ntk / pair
        self1 = None if out.self1 is None else out.self1 / (c1 * c1)
        self2 = None if out.self2 is None else out.self2 / (c2 * c2)
        return replace(out, nngp=out.nngp / pair, ntk=ntk, self1=self1, self2=self2)

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        return modules.GlobalAvgPool(), channels


class GlobalSumPool(GlobalAvgPool):
    r"""Sum over all positions :math:`P`, (N, C, *positions) -> (N, C):
    :math:`K' = \sum_{p, q \in P} K(p, q)`, :math:`|P|^2` times GlobalAvgPool's
    (neural-tangents' ``stax.GlobalSumPool``)."""

    averages = False

    def _scale(self, positions: int) -> float:
        return float(positions) ** 2

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        return modules.GlobalSumPool(), channels


class Flatten(Layer):
    r"""(N, C, *positions) -> (N, C * prod(positions)). A Dense layer after it has fan-in
    :math:`C P` (:math:`P` positions), so it sees the covariance averaged over positions,
    :math:`\frac{1}{P} \sum_p K(p, p)`."""

    def __repr__(self) -> str:
        return "Flatten()"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "Flatten"}

    def signal(self, sig: Signal, where: str) -> Signal:
        if sig.flat:
            raise fail(where, "the input is already flat.")
        channels = None if sig.channels is None else sig.channels * math.prod(sig.shape)
        width = None if sig.width is None else sig.width * math.prod(sig.shape)
        return sig.after_linear(flat=sig.spatial > 0, channels=channels, width=width)

    def need(self, full_out):
        return False

    def kernel(self, state: KernelState, full_out) -> KernelState:
        state = state.to_diagonal()
        return replace(state, flat=state.spatial > 0)

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        return modules.Flatten(), channels * math.prod(sig.shape)


def _show(value) -> str:
    return repr(tuple(value)) if isinstance(value, list) else repr(value)


def _listed(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def _num(scale):
    return float(scale.item()) if hasattr(scale, "item") else scale
