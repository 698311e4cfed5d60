"""The dense layer of the NTK parameterisation, on vectors or on flattened positions."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..networks.weighted import NTKDense
from . import layout, maps
from .base import BuildContext, Layer, Scale, check_layer_scales, check_scales, number, show, square
from .signal import Signal, fail
from .state import KernelState


class Dense(Layer):
    r"""A dense layer in the NTK parameterisation,
    :math:`\tilde a^{(l+1)} = \frac{\sigma_w}{\sqrt{n_l}} W a^{(l)} + \beta\, b`, with :math:`W, b`
    iid :math:`\mathcal N(0, 1)`.

    On kernels (docs/conventions.md, Proposition 1 and Theorem 1), with :math:`K` the covariance
    and :math:`\Theta_K` the NTK of its input :math:`a^{(l)}`:

    .. math::

        \Sigma' = \sigma_w^2 K + \beta^2, \qquad \Theta' = \sigma_w^2\, \Theta_K + \Sigma'.

    After Flatten the fan-in is :math:`C \prod \text{positions}`, so :math:`K` is the mean over
    positions of :math:`K(p, p)`. Its width :math:`n_{l+1}` is its number of outputs, set by
    ``spec.network(width=...)``, not here.

    Args:
        bias_std: :math:`\beta`, the scale of the bias (the paper's experiments use 0.1), by name.
        weight_std: :math:`\sigma_w`, the scale of the weights (the paper's is 1), by name.
            Either may be a scalar tensor with requires_grad=True to differentiate kernels in it.
        *positional: not accepted: a positional argument is a TypeError that says what it would
            have meant (neural-tangents' ``stax.Dense(512)`` sets a width, which goes to
            ``spec.network(width=512)`` here).
    """

    weighted = True

    def __init__(self, *positional: Any, bias_std: Scale = 0.1, weight_std: Scale = 1.0) -> None:
        if positional:   # neural-tangents' stax.Dense(512) sets the width: never read it as a scale
            raise TypeError(f"Dense takes its scales by name, Dense(bias_std=..., weight_std=...); "
                            f"Dense({', '.join(map(repr, positional))}) would have meant bias_std={positional[0]!r}. "
                            "A layer's width is not part of the description: give it to the finite network, "
                            "spec.network(width=512) (neural-tangents' stax.Dense(512) is tn.Dense() there).")
        self.bias_std = bias_std
        self.weight_std = weight_std

    def __repr__(self) -> str:
        return f"Dense(bias_std={show(self.bias_std)}, weight_std={show(self.weight_std)})"

    def check(self) -> None:
        """Raise unless both scales are finite, non-negative real scalars."""
        check_scales(self.bias_std, self.weight_std)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "Dense", "bias_std": number(self.bias_std), "weight_std": number(self.weight_std)}

    def signal(self, sig: Signal, where: str) -> Signal:
        check_layer_scales(self, where)
        if sig.spatial and not sig.flat:
            raise fail(where, f"Dense takes vectors, but its input is {sig.describe()}; put Flatten() or "
                              "GlobalAvgPool() before it.")
        return sig.after_weights(())

    def kernel(self, state: KernelState, full_out) -> KernelState:
        spatial, full = state.spatial, state.full

        def mean_positions(t, prefix):
            return layout.mean_positions(t, spatial, full, prefix)
        return maps.affine(state, square(self.weight_std), square(self.bias_std), mean_positions, spatial=0,
                           full=False, flat=False)

    def build(self, sig: Signal, channels, ctx: BuildContext) -> tuple[nn.Module, int]:
        width, index = ctx.next_layer()
        module = NTKDense(channels, width, weight_std=number(self.weight_std), bias_std=number(self.bias_std),
                          parameterization=ctx.parameterization, seed=ctx.seed, index=index, dtype=ctx.dtype,
                          device=ctx.device)
        return module, width
