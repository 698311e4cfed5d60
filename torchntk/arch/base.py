"""The layer protocol of architectures, and the build context of finite networks.

Every layer of a description answers four questions:

- ``signal(sig, where)``: its output's `Signal` for an input signal (and checks it);
- ``need(full_out)``: whether its input must be in the full layout, given whether its output
  must be (composite layers take and give a tuple per branch);
- ``kernel(state, full_out)``: the kernel map on an `ArchState` tile;
- ``build(sig, channels, ctx)``: the finite `nn.Module` in the NTK parameterisation.

plus ``to_dict()`` (plain JSON data) and a ``repr`` that reads as the code that builds it.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .signal import Signal, fail
from .state import ArchState


class Layer:
    """Base class of architecture layers (see the module docstring)."""

    weighted = False   # holds parameters (Dense, Conv)

    def signal(self, sig: Signal, where: str) -> Signal:
        raise NotImplementedError

    def need(self, full_out):
        return full_out

    def kernel(self, state: ArchState, full_out) -> ArchState:
        raise NotImplementedError

    def build(self, sig: Signal, channels, ctx: BuildContext) -> tuple[nn.Module, Any]:
        """(module, its output's channel count) for input ``sig`` with ``channels`` channels
        (a tuple of counts between FanOut and FanIn)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def weighted_layers(self) -> list[Layer]:
        return [self] if self.weighted else []


@dataclass
class BuildContext:
    """What building a finite network needs. Weighted layers are numbered depth-first; each
    draws its parameters from its own generator (seed, index); the one at ``output_index``
    gets ``out_features`` outputs, the others the hidden widths in order (one int for all, or
    one per hidden weighted layer)."""

    widths: list[int]
    out_features: int
    output_index: int
    seed: int
    parameterization: str
    dtype: torch.dtype
    device: Any
    index: int = 0

    def next_layer(self) -> tuple[int, int]:
        """(output width, generator index) of the next weighted layer."""
        index = self.index
        self.index += 1
        if index == self.output_index:
            return self.out_features, index
        if len(self.widths) == 1:
            return self.widths[0], index
        return self.widths[index if index < self.output_index else index - 1], index


def check_int_tuple(value: Any, name: str, dims: int | None, where: str, minimum: int = 1) -> tuple[int, ...]:
    """A tuple of ints >= minimum (an int is broadcast to ``dims`` entries)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * (dims or 1)
    if not isinstance(value, (tuple, list)) or not value or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
        raise fail(where, f"{name} must be an int or a tuple of ints, got {value!r}.")
    value = tuple(int(v) for v in value)
    if any(v < minimum for v in value):
        raise fail(where, f"{name} must be >= {minimum} in every axis, got {value}.")
    if dims is not None and len(value) != dims:
        raise fail(where, f"{name} has {len(value)} entries but the input has {dims} spatial axes.")
    return value
