r"""The locally connected layer, ConvLocal: a convolution whose weights are not shared between
output positions (neural-tangents' ``stax.ConvLocal``).

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

from torch import nn

from ..networks.weighted import NTKConvLocal
from . import maps
from .base import BuildContext, check_weighted_options, number, options_dict, show_options, square
from .signal import ArchitectureError, Signal
from .spatial import Conv, _listed, _num, _show
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
