"""Finite modules of architecture layers, in the NTK parameterisation.

    NTKConv:  a~ = (weight_std / sqrt(C_in |F|)) W * pad(a) + bias_std b,   W, b iid N(0, 1)

(``parameterization="standard"``: W ~ N(0, weight_std^2 / (C_in |F|)), b ~ N(0, bias_std^2), a
plain convolution). Padding uses the amounts of windows.py, so each position of a finite network
is the position the kernels speak of. Weighted modules draw from their own generator
(seed, index), on the CPU in float64, then cast and move: the same seed gives the same network
on any device and dtype, and as the dense layers of torchntk.networks do.

Branching modules pass tuples: FanOut returns n references to its input, Parallel maps branch
i to element i, FanInSum / FanInConcat merge them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..networks import layer_generator
from .windows import pad_amounts

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def pad_input(x: Tensor, window: Sequence[int], stride: Sequence[int], padding: str, value: float = 0.0) -> Tensor:
    """x (N, C, *positions) padded as windows.pad_amounts says (zeros, ``value``, or wrapped)."""
    amounts: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], window, stride, strict=True))):
        amounts += pad_amounts(size, k, s, padding)
    if not any(amounts):
        return x
    if padding == "circular":
        return F.pad(x, amounts, mode="circular")
    return F.pad(x, amounts, mode="constant", value=value)


class NTKConv(nn.Module):
    """A convolution layer in the NTK parameterisation (see the module docstring).

    Attributes:
        weight: (C_out, C_in, *filter_shape), iid N(0, 1) under "ntk".
        bias: (C_out,), iid N(0, 1) under "ntk".
        weight_scale: weight_std / sqrt(C_in |F|) ("ntk") or 1 ("standard").
        bias_scale: bias_std ("ntk") or 1 ("standard").
        stride: tuple of ints; padding: "valid", "same" or "circular".
    """

    def __init__(self, in_channels: int, out_channels: int, filter_shape: tuple[int, ...], *,
                 stride: tuple[int, ...], padding: str, weight_std: float, bias_std: float,
                 parameterization: str, seed: int, index: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        self.filter_shape, self.stride, self.padding = tuple(filter_shape), tuple(stride), padding
        self.weight_std, self.bias_std, self.parameterization = float(weight_std), float(bias_std), parameterization
        self.index = index
        fan_in = in_channels * math.prod(filter_shape)
        generator = layer_generator(seed, index)
        weight = torch.randn(out_channels, in_channels, *filter_shape, generator=generator, dtype=torch.float64)
        bias = torch.randn(out_channels, generator=generator, dtype=torch.float64)
        if parameterization == "standard":
            weight, bias = weight * (self.weight_std / math.sqrt(fan_in)), bias * self.bias_std
            self.weight_scale, self.bias_scale = 1.0, 1.0
        else:
            self.weight_scale, self.bias_scale = self.weight_std / math.sqrt(fan_in), self.bias_std
        self.weight = nn.Parameter(weight.to(dtype=dtype, device=device))
        self.bias = nn.Parameter(bias.to(dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(x, self.filter_shape, self.stride, self.padding)
        return _CONV[len(self.filter_shape)](x, self.weight * self.weight_scale, self.bias * self.bias_scale,
                                              stride=self.stride)

    def extra_repr(self) -> str:
        out_c, in_c = self.weight.shape[:2]
        return (f"{in_c}, {out_c}, filter_shape={self.filter_shape}, stride={self.stride}, padding={self.padding!r}, "
                f"weight_std={self.weight_std:g}, bias_std={self.bias_std:g}, "
                f"parameterization={self.parameterization!r}")


class Elementwise(nn.Module):
    """A nonlinearity of the description, applied elementwise."""

    def __init__(self, activation) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(x)

    def extra_repr(self) -> str:
        return repr(self.activation)


class AvgPool(nn.Module):
    """Window average (zeros padded in count as positions, as the kernels assume)."""

    def __init__(self, window: tuple[int, ...], stride: tuple[int, ...], padding: str) -> None:
        super().__init__()
        self.window, self.stride, self.padding = window, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(x, self.window, self.stride, self.padding)
        return _AVG[len(self.window)](x, self.window, self.stride)


class MaxPool(nn.Module):
    """Window maximum ("same" pads with -inf, so padding never wins)."""

    def __init__(self, window: tuple[int, ...], stride: tuple[int, ...], padding: str) -> None:
        super().__init__()
        self.window, self.stride, self.padding = window, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(x, self.window, self.stride, self.padding, value=-math.inf)
        return _MAX[len(self.window)](x, self.window, self.stride)


class GlobalAvgPool(nn.Module):
    """Mean over all positions: (N, C, *positions) -> (N, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(2, x.dim())))


class Flatten(nn.Module):
    """(N, C, *positions) -> (N, C * prod(positions)), channels-major as torch.flatten."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class LayerNorm(nn.Module):
    """(a - mean) / sqrt(var + eps) over the channels (dim 1) at each position, no affine part."""

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        return centred / torch.sqrt((centred * centred).mean(dim=1, keepdim=True) + self.eps)


class FanOut(nn.Module):
    """``n`` references to its input, one per branch: x -> (x,) * n (a tuple, not copies)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return (x,) * self.n


class Parallel(nn.Module):
    """Branch i applied to element i of a tuple of inputs: (x_0, ..) -> (branch_0(x_0), ..)."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return tuple(branch(x) for branch, x in zip(self.branches, xs, strict=True))


class FanInSum(nn.Module):
    """The sum of a tuple of branch outputs of equal shape (a residual connection)."""

    def forward(self, xs: tuple[Tensor, ...]) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class FanInConcat(nn.Module):
    """The branch outputs (N, C_b, *positions) concatenated along the channels: (N, sum_b C_b, *positions)."""

    def forward(self, xs: tuple[Tensor, ...]) -> Tensor:
        return torch.cat(xs, dim=1)


class Identity(nn.Module):
    """The input unchanged (a shortcut branch)."""

    def forward(self, x):
        return x
