"""Finite networks of an architecture description (convolutions, pooling, branches, LayerNorm).

    spec = serial(Conv((3, 3), padding="same"), ReLU(), GlobalAvgPool(), Dense())
    net = spec.network(width=128, out_features=10, seed=0)        # nn.Module
    y = net(x)                                                      # x (N, C, H, W) -> (N, 10)

``width`` is the number of channels of every hidden Conv and units of every hidden Dense (or a
list, one per hidden weighted layer in depth-first order); the last weighted layer gets
``out_features``. Layer i (depth-first) draws its parameters from generator (seed, i), so the
same seed gives the same network, and the modules are built from the same layer objects whose
kernels the description computes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import BuildContext
from .signal import ArchitectureError, input_signal


class ArchNetwork(nn.Module):
    """A finite network of an architecture `Serial` (build with ``spec.network``).

    The modules are built for the per-example input shape (C, *positions) or (d,): given as
    ``input_shape``, or taken from the first batch (then the parameters exist only after the
    first forward: make optimisers after it).

    Attributes:
        body: nn.Sequential of the layers' modules (None until built).
        input_shape: the per-example shape it was built for.
    """

    def __init__(self, spec, widths: list[int], out_features: int, seed: int, *, parameterization: str,
                 dtype: torch.dtype, device: Any, input_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.spec, self.seed, self.parameterization = spec, seed, parameterization
        self.widths, self.out_features = widths, out_features
        self._dtype, self._device = dtype, device
        self.body: nn.Module | None = None
        self.input_shape: tuple[int, ...] | None = None
        if input_shape is not None:
            self.build(tuple(input_shape))

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Draw every layer's parameters for inputs of per-example shape ``input_shape``."""
        if self.body is not None:
            return
        signals = self.spec.layer_signals(input_signal(input_shape))
        ctx = BuildContext(self.widths, self.out_features, self.spec.output_index(), self.seed,
                           self.parameterization, self._dtype, self._device)
        self.body, _ = self.spec.build_modules(signals, input_shape[0], ctx)
        self.input_shape = input_shape

    def forward(self, x: Tensor) -> Tensor:
        """f(x): (N, out_features) after a readout, (N, out_features, *positions) otherwise."""
        if not isinstance(x, Tensor):
            raise TypeError(f"the network takes a torch.Tensor of shape (N, C, ...); got {type(x).__name__}.")
        if x.dim() < 2:
            raise ValueError(f"the network takes a batch (N, d) or (N, C, *positions); got shape {tuple(x.shape)}.")
        if self.body is None:
            self.build(tuple(x.shape[1:]))
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"the network was built for inputs of shape (N, {', '.join(map(str, self.input_shape))}); "
                             f"got {tuple(x.shape)}.")
        first = next(self.body.parameters())
        if x.dtype != first.dtype:
            raise TypeError(f"input dtype {x.dtype} differs from the network's {first.dtype}; use x.to({first.dtype}).")
        if x.device != first.device:
            raise ValueError(f"input is on {x.device} but the network is on {first.device}.")
        return self.body(x)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, widths={self.widths}, seed={self.seed}"


def check_output_layer(spec) -> None:
    """Raise unless the description's last weighted layer can set out_features."""
    if spec.output_index() < 0:
        raise ArchitectureError("the network has no Dense or Conv layer outside a parallel branch after its last "
                                "branch merge; end it with Dense() (or a Conv) so that out_features can be set.")
