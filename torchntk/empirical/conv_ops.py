"""The operations of a convolutional chain, as `conv_method` contracts them: a convolution, nn.Flatten,
global average pooling and max pooling, each with its value and the pullback of back-propagated
vectors (dense layers and elementwise activations are `structured`'s DenseOp and ElementwiseOp).

A convolution z[c, p] = w_s sum_{i, d} W[c, i, d] a_pad[i, stride p + d] + b_s b[c] has, for
output k and back-propagated vector delta_k = d f_k / d z (C_out, P positions),

    d f_k / d W[c, (i, d)] = w_s sum_p delta_k[c, p] U[(i, d), p],    d f_k / d b[c] = b_s sum_p delta_k[c, p]

with U the unfolded patches of the padded input (C_in |F|, P) (`ConvOp.patches`); the vector at
the layer's input is the transposed convolution of delta (`ConvOp.pullback`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.windows import pad_amounts
from .structured import DenseOp, ElementwiseOp


@dataclass(frozen=True)
class ConvOp:
    """A convolution in 1 or 2 spatial dimensions (see the module doc); ``module`` computes the value.

    ``pads`` are fixed amounts (torch convolutions), or None when they follow ``padding``
    ("valid", "same" or "circular") and the input's size: "same" with stride s pads
    (ceil(n / s) - 1) s + f - n in all, the lower half on the low side, as torchntk's layers do.
    """

    module: nn.Module
    weight: Tensor
    bias: Tensor | None
    c: float
    s: float
    stride: tuple[int, ...]
    pads: tuple[int, ...] | None  # F.pad order: last axis first, (left, right) per axis
    pad_mode: str
    train_weight: bool
    train_bias: bool
    padding: str = "valid"

    def pads_for(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """The F.pad amounts for an input of spatial size ``spatial`` (last axis first)."""
        if self.pads is not None:
            return self.pads
        filt, amounts = tuple(self.weight.shape[2:]), []
        for size, f, s in reversed(list(zip(spatial, filt, self.stride, strict=True))):
            amounts += pad_amounts(size, f, s, self.padding)
        return tuple(amounts)

    @property
    def trainable(self) -> bool:
        """Whether the weight or the bias counts in the kernel (requires_grad)."""
        return self.train_weight or self.train_bias

    @property
    def dims(self) -> int:
        """The number of spatial axes (1 or 2), from the weight (C_out, C_in, *filter)."""
        return self.weight.dim() - 2

    def forward(self, a: Tensor) -> Tensor:
        """The layer's output z (B, C_out, *S_out) for its input a (B, C_in, *S_in), by the module itself."""
        return self.module(a)

    def padded(self, a: Tensor) -> Tensor:
        """a (B, C_in, *S_in) padded as the layer pads it (``pads``, ``pad_mode``)."""
        pads = self.pads_for(tuple(a.shape[2:]))
        if not any(pads):
            return a
        return F.pad(a, pads, mode=self.pad_mode)

    def patches(self, a: Tensor) -> Tensor:
        """U: (B, C_in |F|, P) unfolded patches of the padded input (channel-major, as W.reshape)."""
        x = self.padded(a)
        filt = tuple(self.weight.shape[2:])
        if self.dims == 1:
            return F.unfold(x.unsqueeze(2), (1, filt[0]), stride=(1, self.stride[0]))
        return F.unfold(x, filt, stride=self.stride)

    def pullback(self, delta: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        """delta (M, C_out, *S_out) -> (M, C_in, *S_in): the vector at the layer's input."""
        m, pads = delta.shape[0], self.pads_for(tuple(in_shape[1:]))
        widths = [pads[2 * (self.dims - 1 - i)] + pads[2 * (self.dims - 1 - i) + 1] for i in range(self.dims)]
        padded_shape = [m, in_shape[0]] + [n + w for n, w in zip(in_shape[1:], widths, strict=True)]
        grad_input = torch.nn.grad.conv1d_input if self.dims == 1 else torch.nn.grad.conv2d_input
        out = grad_input(padded_shape, self.weight, delta, stride=self.stride)
        if self.c != 1.0:
            out = out.mul_(self.c)
        if not any(pads):
            return out
        if self.pad_mode == "constant":
            index = [slice(None), slice(None)]
            for i in range(self.dims):
                left, right = pads[2 * (self.dims - 1 - i)], pads[2 * (self.dims - 1 - i) + 1]
                index.append(slice(left, out.shape[2 + i] - right))
            return out[tuple(index)]
        with torch.enable_grad():  # wrap-around or reflected padding: its adjoint by autograd
            leaf = torch.zeros((m, *in_shape), dtype=out.dtype, device=out.device, requires_grad=True)
            (grad,) = torch.autograd.grad(F.pad(leaf, pads, mode=self.pad_mode), leaf, out)
        return grad


@dataclass(frozen=True)
class FlattenOp:
    """nn.Flatten() of (C, *S) into C |S| features."""


@dataclass(frozen=True)
class PoolOp:
    """Global pooling: (C, *S) -> (C, 1, ...), the mean over the |S| positions (``mean``), or
    their sum."""

    module: nn.Module
    mean: bool = True


@dataclass(frozen=True)
class MaxPoolOp:
    """nn.MaxPool1d / nn.MaxPool2d (no padding or dilation): delta flows back to each window's
    maximum, at the positions the forward pass recorded."""

    module: nn.Module
    dims: int

    def forward_with_indices(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled a (B, C, *S_out), indices (B, C, *S_out) of each window's maximum in the
        flattened input positions), as torch's max pooling with ``return_indices=True``."""
        pool = F.max_pool1d if self.dims == 1 else F.max_pool2d
        m = self.module
        return pool(a, m.kernel_size, m.stride, return_indices=True, ceil_mode=m.ceil_mode)

    def pullback(self, delta: Tensor, indices: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        """delta (B k, C, *S_out) -> (B k, C, *S_in), indices (B, C, *S_out) of the chunk."""
        repeat = delta.shape[0] // indices.shape[0]
        flat_in, flat_out = math.prod(in_shape[1:]), math.prod(indices.shape[2:])
        idx = indices.repeat_interleave(repeat, dim=0).reshape(delta.shape[0], in_shape[0], flat_out)
        out = torch.zeros((delta.shape[0], in_shape[0], flat_in), dtype=delta.dtype, device=delta.device)
        out.scatter_add_(2, idx, delta.reshape(delta.shape[0], in_shape[0], flat_out))
        return out.view(delta.shape[0], *in_shape)


Op = ConvOp | DenseOp | ElementwiseOp | FlattenOp | PoolOp | MaxPoolOp
