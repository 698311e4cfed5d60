"""The parameter-free modules of finite networks: nonlinearities, pooling, readouts, LayerNorm
and branching (the weighted ones are in weighted.py).

Padding uses the amounts of torchntk.engine.windows, so each position of a finite network is the
position the kernels speak of. Branching modules pass tuples: FanOut returns n references to its
input, Parallel maps branch i to element i, FanInSum / FanInConcat merge them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.windows import pad_amounts

_SIDE: ContextVar[Mapping[str, Tensor] | None] = ContextVar("side_inputs", default=None)


@contextmanager
def side_inputs(values: Mapping[str, Tensor]) -> Iterator[None]:
    """The side inputs of one forward pass by name (``{"adjacency": A}``, A (N, V, V)), for the
    modules that read them (`Aggregate`) wherever they sit in the network's tree of modules."""
    token = _SIDE.set(dict(values))
    try:
        yield
    finally:
        _SIDE.reset(token)


def current_mask() -> Tensor | None:
    """The forward pass's mask of positions (N, *positions), True where the inputs hold data
    (`torchntk.engine.mask`), or None."""
    return (_SIDE.get() or {}).get("mask")


def real_only(x: Tensor) -> Tensor:
    """x (N, C, *positions) with zeros at the forward pass's padding positions: what a module that
    mixes positions (a filter, attention, pooling, a readout) reads, so that padding never reaches
    the data. x itself without a mask."""
    mask = current_mask()
    if mask is None:
        return x
    if tuple(x.shape[2:]) != tuple(mask.shape[1:]) or x.shape[0] != mask.shape[0]:
        raise ValueError(f"the mask covers inputs {tuple(mask.shape)} (N, *positions), but a layer got "
                         f"{tuple(x.shape)}: a mask needs layers that keep the positions (stride 1, 'same' padding).")
    return x * mask[:, None].to(x.dtype)


CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def pad_input(x: Tensor, window: Sequence[int], stride: Sequence[int], padding: str, value: float = 0.0) -> Tensor:
    """x (N, C, *positions) padded as `torchntk.engine.windows.pad_amounts` says (zeros, ``value``, or wrapped)."""
    amounts: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], window, stride, strict=True))):
        amounts += pad_amounts(size, k, s, padding)
    if not any(amounts):
        return x
    if padding == "circular":
        return F.pad(x, amounts, mode="circular")
    return F.pad(x, amounts, mode="constant", value=value)


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
    """Window average. Padded zeros count as positions, as the kernels assume, unless
    ``normalize_edges``: then each window is divided by its number of real positions."""

    def __init__(self, window: tuple[int, ...], stride: tuple[int, ...], padding: str, *,
                 normalize_edges: bool = False) -> None:
        super().__init__()
        self.window, self.stride, self.padding = window, stride, padding
        self.normalize_edges = normalize_edges

    def forward(self, x: Tensor) -> Tensor:
        pool = _AVG[len(self.window)]
        x = real_only(x)
        out = pool(pad_input(x, self.window, self.stride, self.padding), self.window, self.stride)
        if self.normalize_edges and self.padding == "same":
            # The mean of the padded window over the mean of a padded window of ones: the sum of
            # the real entries over their number.
            ones = x.new_ones((1, 1, *x.shape[2:]))
            out = out / pool(pad_input(ones, self.window, self.stride, self.padding), self.window, self.stride)
        return out


class SumPool(AvgPool):
    """Window sum (zeros padded in)."""

    def __init__(self, window: tuple[int, ...], stride: tuple[int, ...], padding: str) -> None:
        super().__init__(window, stride, padding)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * math.prod(self.window)


class MaxPool(nn.Module):
    """Window maximum ("same" pads with -inf, so padding never wins)."""

    def __init__(self, window: tuple[int, ...], stride: tuple[int, ...], padding: str) -> None:
        super().__init__()
        self.window, self.stride, self.padding = window, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(real_only(x), self.window, self.stride, self.padding, value=-math.inf)
        return _MAX[len(self.window)](x, self.window, self.stride)


class GlobalAvgPool(nn.Module):
    """Mean over all positions: (N, C, *positions) -> (N, C); under a mask, over each input's
    real positions."""

    def forward(self, x: Tensor) -> Tensor:
        dims = tuple(range(2, x.dim()))
        mask = current_mask()
        if mask is None:
            return x.mean(dim=dims)
        return real_only(x).sum(dim=dims) / mask.reshape(mask.shape[0], 1, -1).sum(dim=2).to(x.dtype)


class GlobalSumPool(nn.Module):
    """Sum over all positions: (N, C, *positions) -> (N, C) (padding, under a mask, adds zeros)."""

    def forward(self, x: Tensor) -> Tensor:
        return real_only(x).sum(dim=tuple(range(2, x.dim())))


class Flatten(nn.Module):
    """(N, C, *positions) -> (N, C * prod(positions)), channels-major as torch.flatten (padding,
    under a mask, as zeros)."""

    def forward(self, x: Tensor) -> Tensor:
        return real_only(x).flatten(1)


LAYER_NORM_EPS = 1e-12
"""Added to the variance in LayerNorm, in finite networks and in their kernels alike."""


class LayerNorm(nn.Module):
    """(a - mean) / sqrt(var + eps), the mean and the (biased) variance over the dims ``axes`` of
    PyTorch's layout (by default the channels, dim 1, at each position), no affine part."""

    def __init__(self, eps: float = LAYER_NORM_EPS, axes: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        self.eps = eps
        self.axes = tuple(axes)

    def forward(self, x: Tensor) -> Tensor:
        dims = self.axes[0] if len(self.axes) == 1 else self.axes
        mask = current_mask() if any(a >= 2 for a in self.axes) and x.dim() > 2 else None
        if mask is None:
            mean = x.mean(dim=dims, keepdim=True)
            centred = x - mean
            return centred / torch.sqrt((centred * centred).mean(dim=dims, keepdim=True) + self.eps)
        # statistics over the real positions only (`torchntk.engine.mask`)
        weight = mask[:, None].to(x.dtype).expand_as(x)
        count = weight.sum(dim=dims, keepdim=True).clamp(min=1)
        mean = (x * weight).sum(dim=dims, keepdim=True) / count
        centred = (x - mean) * weight
        return centred / torch.sqrt((centred * centred).sum(dim=dims, keepdim=True) / count + self.eps)


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


class FanInProd(nn.Module):
    """The elementwise product of a tuple of branch outputs of equal shape."""

    def forward(self, xs: tuple[Tensor, ...]) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


class FanInConcat(nn.Module):
    """The branch outputs (N, C_b, *positions) concatenated along the channels: (N, sum_b C_b, *positions)."""

    def forward(self, xs: tuple[Tensor, ...]) -> Tensor:
        return torch.cat(xs, dim=1)


class Aggregate(nn.Module):
    """One step of message passing: x (N, C, V) to x_n A_n, out[n, :, j] = sum_i x[n, :, i] A[n, i, j],
    with A (N, V, V) the adjacency given to the forward (``adjacency=``) or, inside a network, to
    the network's forward (`side_inputs`); or, for an int64 edge list (N, E, 2) of (tail, head)
    pairs (negative ends: padding), the sum over the arcs into j, in O(C (V + E)) per graph."""

    def forward(self, x: Tensor, adjacency: Tensor | None = None) -> Tensor:
        if adjacency is None:
            adjacency = (_SIDE.get() or {}).get("adjacency")
        if adjacency is None:
            raise ValueError("Aggregate needs the graphs' adjacency (N, V, V): call net(x, adjacency=A).")
        x = real_only(x)
        if adjacency.is_floating_point():
            return torch.bmm(x, adjacency)
        valid = (adjacency >= 0).all(dim=-1)[:, None, :].to(x.dtype)   # (N, 1, E): negative ends are padding
        tails, heads = (adjacency[..., k].clamp(min=0)[:, None, :].expand(-1, x.shape[1], -1) for k in (0, 1))
        return torch.zeros_like(x).scatter_add(2, heads, torch.gather(x, 2, tails) * valid)
