r"""The locally connected layer, ConvLocal: a convolution whose weights are not shared between
output positions (neural-tangents' ``stax.ConvLocal``); and the transposed convolution,
ConvTranspose (neural-tangents' ``stax.ConvTranspose``), whose kernel is Conv's on the
covariances of the stride-dilated, padded input.

Each output position :math:`p` has its own filter and bias, so the outputs at two different
positions are independent in the limit, whatever the input's covariances between positions:

    Sigma'(p, p) = weight_std^2 (1/|F|) sum_{a in F} K(s p + a, s p + a) + bias_std^2,
    Sigma'(p, q) = 0 for p != q,

and the NTK likewise. The map reads only the input's covariance of each position with itself
(the diagonal layout), so layers below it never compute covariances between positions on its
account; where a pooling layer above it needs the full layout, the zeros are filled in.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from ..networks.weighted import NTKConvLocal, NTKConvTranspose
from . import maps
from .base import (
    BuildContext,
    check_int_tuple,
    check_layer_scales,
    check_weighted_options,
    number,
    options_dict,
    show_options,
    square,
    standard_fan_in,
)
from .signal import ArchitectureError, Signal, fail
from .spatial import Conv, _listed, _num, _show, _window_map
from .state import KernelState


class ConvLocal(Conv):
    r"""A locally connected layer with filter shape :math:`F` (1-D, 2-D or 3-D): a convolution
    with a weight tensor and a bias for each output position :math:`p`, in the NTK
    parameterisation,

    .. math::

        \tilde a(p) = \frac{\sigma_w}{\sqrt{C_\text{in}\, |F|}} \sum_{a \in F} W_p(a)\, a(s p + a)
        + \beta\, b_p, \qquad W_p, b_p \text{ iid } \mathcal N(0, 1),

    (neural-tangents' ``stax.ConvLocal(..., parameterization="ntk")``). On kernels, with
    :math:`\mathcal L(K)(p) = \frac{1}{|F|} \sum_{a \in F} K(s p + a, s p + a)`,

    .. math::

        \Sigma'(p, p) = \sigma_w^2\, \mathcal L(K)(p) + \beta^2, \qquad
        \Theta'(p, p) = \sigma_w^2\, \mathcal L(\Theta)(p) + \Sigma'(p, p),

    and :math:`\Sigma'(p, q) = \Theta'(p, q) = 0` for :math:`p \neq q`: different positions have
    independent weights. On the positions' diagonal this is `Conv`'s kernel.

    With ``parameterization="standard"`` (neural-tangents' ``stax.ConvLocal(width, filter_shape,
    parameterization="standard")``) the finite layer draws
    :math:`W_p \sim \mathcal N(0, \sigma_w^2 / (C_\text{in} |F|))`,
    :math:`b_p \sim \mathcal N(0, \beta^2)` and computes the plain sum; the NNGP is the same and
    :math:`\Theta'(p, p) = C_\text{in} |F|\, \mathcal L(K)(p) + \sigma_w^2\, \mathcal L(\Theta)(p) + 1`.

    Args:
        filter_shape: the window, e.g. (3, 3); an int means that size in every axis.
        stride: :math:`s`, an int or a tuple, one per axis.
        padding: "valid", "same" or "circular", as for `Conv`.
        bias_std: :math:`\beta` (0.1 by default), by name; neural-tangents' ``b_std=None`` (no
            bias) is ``bias_std=0.0`` for the kernels of the NTK parameterisation.
        weight_std: :math:`\sigma_w` (1 by default), by name.
        parameterization: "ntk" (the default) or "standard".
        width: the number of output channels in its finite networks, or None (then
            ``spec.network(width=...)`` sets it).
    """

    def __init__(self, filter_shape: int | tuple[int, ...], *positional: Any, stride: int | tuple[int, ...] = 1,
                 padding: str = "valid", bias_std: float = 0.1, weight_std: float = 1.0,
                 parameterization: str = "ntk", width: int | None = None) -> None:
        if positional:
            raise TypeError(f"ConvLocal takes the filter shape, then options by name: ConvLocal(filter_shape, "
                            f"stride=..., padding=..., bias_std=..., weight_std=...); got ConvLocal({filter_shape!r}, "
                            f"{', '.join(map(repr, positional))}). If {filter_shape!r} is the number of channels, as "
                            "in neural-tangents' stax.ConvLocal(out_chan, filter_shape), give it by name: "
                            f"ConvLocal(filter_shape, width={filter_shape!r}).")
        check_weighted_options("ConvLocal", parameterization, width)
        self.filter_shape, self.stride, self.padding = filter_shape, stride, padding
        self.bias_std, self.weight_std = bias_std, weight_std
        self.parameterization, self.width = parameterization, None if width is None else int(width)

    def __repr__(self) -> str:
        return (f"ConvLocal({_show(self.filter_shape)}, stride={_show(self.stride)}, padding={self.padding!r}, "
                f"bias_std={_num(self.bias_std)}, weight_std={_num(self.weight_std)}{show_options(self)})")

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "ConvLocal", "filter_shape": _listed(self.filter_shape), "stride": _listed(self.stride),
                "padding": self.padding, "bias_std": _num(self.bias_std), "weight_std": _num(self.weight_std),
                **options_dict(self)}

    def need(self, full_out):
        return False

    def kernel(self, state: KernelState, full_out, in_channels: int | None = None) -> KernelState:
        r"""The kernel map (see the class docstring); ``in_channels`` is :math:`C_\text{in}`, which
        the standard parameterisation needs (`compile` reads it from the input signal)."""
        if self.parameterization == "standard" and in_channels is None:
            raise ArchitectureError(f"{self!r}: the standard parameterisation's kernel needs the input channels; "
                                    "compute kernels through a description (spec.kernels), which knows them.")
        state = state.to_diagonal()
        f = self._map(state, False, diagonal_shift=True)
        window, _ = self._resolve(state.spatial)
        out = maps.affine(state, square(self.weight_std) / math.prod(window), square(self.bias_std), f,
                          fan_in=in_channels)
        return out.to_full_uncorrelated() if full_out else out

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        window, stride = self._resolve(sig.spatial)
        width, index = ctx.next_layer()
        return NTKConvLocal(channels, width, window, tuple(sig.shape), stride=stride, padding=self.padding,
                            weight_std=number(self.weight_std), bias_std=number(self.bias_std),
                            parameterization=self.parameterization, seed=ctx.seed, index=index,
                            dtype=ctx.dtype, device=ctx.device), width


def transpose_padding(window: int, stride: int, padding: str) -> tuple[int, int]:
    """(before, after) zeros around the stride-dilated input of a transposed convolution, as
    jax.lax.conv_transpose (and so neural-tangents' ConvTranspose) pads for "valid" and "same"."""
    if padding == "same":
        total = window + stride - 2
        before = window - 1 if stride > window - 1 else -(-total // 2)
    else:
        total = window + stride - 2 + max(window - stride, 0)
        before = window - 1
    return before, total - before


def transpose_size(size: int, window: int, stride: int, padding: str) -> int:
    """The output positions of a transposed convolution along one axis."""
    before, after = transpose_padding(window, stride, padding)
    return (size - 1) * stride + 1 + before + after - window + 1


def dilate_pad(t: Tensor, dims: tuple[int, ...], stride: int, before: int, after: int) -> Tensor:
    """``t`` with ``stride - 1`` zeros between its entries along each of ``dims``, then ``before``
    and ``after`` zeros at the ends (the input of a transposed convolution, or its covariances)."""
    for dim in dims:
        size = t.shape[dim]
        shape = list(t.shape)
        shape[dim] = (size - 1) * stride + 1 + before + after
        out = t.new_zeros(shape)
        index = [slice(None)] * t.dim()
        index[dim] = slice(before, before + (size - 1) * stride + 1, stride)
        out[tuple(index)] = t
        t = out
    return t


class ConvTranspose(Conv):
    r"""A transposed convolution with filter shape :math:`F` (neural-tangents'
    ``stax.ConvTranspose``, which is ``jax.lax.conv_transpose``): the input is dilated by the
    stride :math:`s` (:math:`s - 1` zeros between positions), padded with zeros, and convolved
    with stride 1 in the NTK parameterisation,

    .. math::

        \tilde a = \frac{\sigma_w}{\sqrt{C_\text{in}\, |F|}}\, W * \operatorname{pad}(\operatorname{dilate}_s(a))
        + \beta\, b, \qquad W, b \text{ iid } \mathcal N(0, 1).

    Padding "valid" puts :math:`k - 1` zeros before and :math:`s - 1 + \max(k - s, 0)` after each
    axis of filter size :math:`k` (:math:`(n - 1) s + k` outputs for :math:`n` inputs when
    :math:`k \ge s`); "same" puts :math:`k + s - 2` in all, :math:`k - 1` before when
    :math:`s > k - 1`, else :math:`\lceil (k + s - 2) / 2 \rceil` (:math:`n s` outputs).
    "circular" is not available. On kernels: `Conv`'s map ("valid", stride 1) on the
    covariances of the dilated, padded input, whose entries at inserted zeros are zero.

    Args:
        filter_shape: the window, e.g. (3, 3); an int means that size in every axis.
        stride: :math:`s`, an int or a tuple, one per axis.
        padding: "valid" or "same".
        bias_std: :math:`\beta` (0.1 by default), by name.
        weight_std: :math:`\sigma_w` (1 by default), by name.
        parameterization: "ntk" (the default) or "standard" (neural-tangents' ``parameterization="standard"``,
            with :math:`C_\text{in} |F|` as the fan-in, as for `Conv`).
        width: the number of output channels in its finite networks, or None.
    """

    def __init__(self, filter_shape: int | tuple[int, ...], *positional: Any, stride: int | tuple[int, ...] = 1,
                 padding: str = "valid", bias_std: float = 0.1, weight_std: float = 1.0,
                 parameterization: str = "ntk", width: int | None = None) -> None:
        if positional:
            raise TypeError(f"ConvTranspose takes the filter shape, then options by name: ConvTranspose("
                            f"filter_shape, stride=..., padding=...); got ConvTranspose({filter_shape!r}, "
                            f"{', '.join(map(repr, positional))}). If {filter_shape!r} is the number of channels, as "
                            "in neural-tangents' stax.ConvTranspose(out_chan, filter_shape), give it by name: "
                            f"ConvTranspose(filter_shape, width={filter_shape!r}).")
        check_weighted_options("ConvTranspose", parameterization, width)
        self.filter_shape, self.stride, self.padding = filter_shape, stride, padding
        self.bias_std, self.weight_std = bias_std, weight_std
        self.parameterization, self.width = parameterization, None if width is None else int(width)

    def __repr__(self) -> str:
        return (f"ConvTranspose({_show(self.filter_shape)}, stride={_show(self.stride)}, padding={self.padding!r}, "
                f"bias_std={_num(self.bias_std)}, weight_std={_num(self.weight_std)}{show_options(self)})")

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "ConvTranspose", "filter_shape": _listed(self.filter_shape), "stride": _listed(self.stride),
                "padding": self.padding, "bias_std": _num(self.bias_std), "weight_std": _num(self.weight_std),
                **options_dict(self)}

    def signal(self, sig: Signal, where: str) -> Signal:
        if self.padding not in TRANSPOSE_PADDINGS:
            raise fail(where, f"padding must be one of {TRANSPOSE_PADDINGS}, got {self.padding!r} (a transposed "
                              "convolution has no circular padding here).")
        check_layer_scales(self, where)
        if sig.spatial == 0 or sig.flat:
            raise fail(where, f"needs inputs with positions, (N, C, L) or (N, C, H, W); it got {sig.describe()}.")
        window = check_int_tuple(self.filter_shape, "filter", sig.spatial, where)
        stride = check_int_tuple(self.stride, "stride", sig.spatial, where)
        shape = tuple(transpose_size(n, k, s, self.padding) for n, k, s in zip(sig.shape, window, stride, strict=True))
        standard_fan_in(self, sig, where)
        return sig.after_weights(shape, width=self.width)

    def kernel(self, state: KernelState, full_out, in_channels: int | None = None) -> KernelState:
        r"""The kernel map (see the class docstring); ``in_channels`` is :math:`C_\text{in}` (the
        standard parameterisation's, read from the input signal by `compile`)."""
        if self.parameterization == "standard" and in_channels is None:
            raise ArchitectureError(f"{self!r}: the standard parameterisation's kernel needs the input channels; "
                                    "compute kernels through a description (spec.kernels), which knows them.")
        if state.full and not full_out:
            state = state.to_diagonal()
        window, stride = self._resolve(state.spatial)
        step = 2 if state.full else 1

        def spread(t, prefix):
            for axis, (k, s) in enumerate(zip(window, stride, strict=True)):
                dims = tuple(range(prefix + step * axis, prefix + step * axis + step))
                t = dilate_pad(t, dims, s, *transpose_padding(k, s, self.padding))
            return t

        def f(t, prefix):
            t = spread(t, prefix)
            sizes = t.shape[prefix:][::step]
            return _window_map(window, (1,) * len(window), "valid", tuple(sizes), state.full, True)(t, prefix)

        return maps.affine(state, square(self.weight_std) / math.prod(window), square(self.bias_std), f,
                           fan_in=in_channels)

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        window, stride = self._resolve(sig.spatial)
        width, index = ctx.next_layer()
        pads = tuple(transpose_padding(k, s, self.padding) for k, s in zip(window, stride, strict=True))
        return NTKConvTranspose(channels, width, window, stride=stride, pads=pads,
                                weight_std=number(self.weight_std), bias_std=number(self.bias_std),
                                parameterization=self.parameterization, seed=ctx.seed, index=index,
                                dtype=ctx.dtype, device=ctx.device), width


TRANSPOSE_PADDINGS = ("valid", "same")
