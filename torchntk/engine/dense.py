"""The dense layer, in the NTK or the standard parameterisation, on vectors or on flattened positions."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from ..networks.weighted import NTKDense
from . import layout, maps
from .base import (
    BuildContext,
    Layer,
    Scale,
    check_layer_scales,
    check_scales,
    check_weighted_options,
    known_fan_in,
    number,
    options_dict,
    show,
    show_options,
    square,
    standard_fan_in,
)
from .signal import ArchitectureError, Signal, fail
from .state import KernelState


class Dense(Layer):
    r"""A dense layer, by default in the NTK parameterisation,
    :math:`\tilde a^{(l+1)} = \frac{\sigma_w}{\sqrt{n_l}} W a^{(l)} + \beta\, b`, with :math:`W, b`
    iid :math:`\mathcal N(0, 1)`.

    On kernels (docs/conventions.md, Proposition 1 and Theorem 1), with :math:`K` the covariance
    and :math:`\Theta_K` the NTK of its input :math:`a^{(l)}`:

    .. math::

        \Sigma' = \sigma_w^2 K + \beta^2, \qquad \Theta' = \sigma_w^2\, \Theta_K + \Sigma'.

    After Flatten the fan-in is :math:`C \prod \text{positions}`, so :math:`K` is the mean over
    positions of :math:`K(p, p)`.

    With ``parameterization="standard"`` (neural-tangents' ``stax.Dense(width,
    parameterization="standard")``) the finite layer computes :math:`W a + b` with
    :math:`W \sim \mathcal N(0, \sigma_w^2 / n_l)`, :math:`b \sim \mathcal N(0, \beta^2)`: the
    same function at initialisation, but the gradients in :math:`W` and :math:`b` carry no
    :math:`\sigma_w` or :math:`\beta`, so the NTK depends on the input width :math:`n_l`:

    .. math::

        \Sigma' = \sigma_w^2 K + \beta^2, \qquad \Theta' = n_l K + \sigma_w^2\, \Theta_K + 1,

    the 1 from the bias (the finite layer always has one, so even at :math:`\beta = 0`). The
    input width :math:`n_l` is the data's features (:math:`C \prod \text{positions}` after
    Flatten) for a first layer, else the previous weighted layer's ``width``.

    Args:
        bias_std: :math:`\beta`, the scale of the bias (the paper's experiments use 0.1), by name.
        weight_std: :math:`\sigma_w`, the scale of the weights (the paper's is 1), by name.
            Either may be a scalar tensor with requires_grad=True to differentiate kernels in it.
        parameterization: "ntk" (the default, the paper's) or "standard".
        width: :math:`n_{l+1}`, the layer's number of outputs in its finite networks, or None
            (then ``spec.network(width=...)`` sets it, and for the last layer ``out_features``).
            A layer in the standard parameterisation reads it as its fan-in when it follows
            this one.
        *positional: not accepted: a positional argument is a TypeError that says what it would
            have meant (neural-tangents' ``stax.Dense(512)`` sets a width, which is ``width=512``
            here).
    """

    weighted = True

    def __init__(self, *positional: Any, bias_std: Scale = 0.1, weight_std: Scale = 1.0,
                 parameterization: str = "ntk", width: int | None = None) -> None:
        if positional:   # neural-tangents' stax.Dense(512) sets the width: never read it as a scale
            raise TypeError(f"Dense takes its scales by name, Dense(bias_std=..., weight_std=...); "
                            f"Dense({', '.join(map(repr, positional))}) would have meant bias_std={positional[0]!r}. "
                            "A layer's width is given by name too: Dense(width=512) (neural-tangents' "
                            "stax.Dense(512)), or for every hidden layer at once spec.network(width=512).")
        check_weighted_options("Dense", parameterization, width)
        self.bias_std = bias_std
        self.weight_std = weight_std
        self.parameterization = parameterization
        self.width = None if width is None else int(width)

    def __repr__(self) -> str:
        return f"Dense(bias_std={show(self.bias_std)}, weight_std={show(self.weight_std)}{show_options(self)})"

    def check(self) -> None:
        """Raise unless both scales are finite, non-negative real scalars."""
        check_scales(self.bias_std, self.weight_std)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "Dense", "bias_std": number(self.bias_std), "weight_std": number(self.weight_std),
                **options_dict(self)}

    def signal(self, sig: Signal, where: str) -> Signal:
        check_layer_scales(self, where)
        if sig.spatial and not sig.flat:
            raise fail(where, f"Dense takes vectors, but its input is {sig.describe()}; put Flatten() or "
                              "GlobalAvgPool() before it.")
        standard_fan_in(self, sig, where)
        return sig.after_weights((), width=self.width)

    def compile(self, full_out, sig: Signal | None = None):
        fan_in = None
        if self.parameterization == "standard":
            fan_in = known_fan_in(self, sig)
        return partial(self.kernel, full_out=full_out, fan_in=fan_in)

    def kernel(self, state: KernelState, full_out, fan_in: int | None = None) -> KernelState:
        """The kernel map (see the class docstring); ``fan_in`` is the input width :math:`n_l`
        that the standard parameterisation needs (`compile` reads it from the input signal)."""
        if self.parameterization == "standard" and fan_in is None:
            raise ArchitectureError(f"{self!r}: the standard parameterisation's kernel needs the input width; "
                                    "compute kernels through a description (spec.kernels), which knows it.")
        spatial, full = state.spatial, state.full

        def mean_positions(t, prefix):
            return layout.mean_positions(t, spatial, full, prefix)
        return maps.affine(state, square(self.weight_std), square(self.bias_std), mean_positions, fan_in=fan_in,
                           spatial=0, full=False, flat=False)

    def build(self, sig: Signal, channels, ctx: BuildContext) -> tuple[nn.Module, int]:
        width, index = ctx.next_layer()
        module = NTKDense(channels, width, weight_std=number(self.weight_std), bias_std=number(self.bias_std),
                          parameterization=self.parameterization, seed=ctx.seed, index=index, dtype=ctx.dtype,
                          device=ctx.device)
        return module, width
