"""Windows over positions: padding amounts, output sizes, and the window sums that Conv and
AvgPool apply to kernel tensors (see layout.py for the layouts).

Padding follows neural-tangents (and TensorFlow): "valid" uses no padding; "same" pads with
zeros so that the output has ceil(size / stride) positions, the extra position (if any) at the
high end; "circular" pads the same amounts by wrapping around. Finite networks pad their
activations with exactly these amounts, so both sides agree position by position.

On kernels, a layer with window F and stride s maps (for each spatial axis, independently):

    Conv, diagonal form:  K'(p)    = (1/k) sum_{a < k} K(s p + a)
    Conv, full form:      K'(p, q) = (1/k) sum_{a < k} K(s p + a, s q + a)       (shifts along the diagonal)
    AvgPool, full form:   K'(p, q) = (1/k^2) sum_{a, b < k} K(s p + a, s q + b)   (each of p, q pooled)

where K is the padded tensor: zeros outside the input ("same", "valid"), or wrapped
("circular"). Each is a few strided slices added up, applied one axis at a time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PADDINGS = ("valid", "same", "circular")


def pad_amounts(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """(low, high) padding of one axis of ``size`` positions."""
    if padding == "valid":
        return 0, 0
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def out_size(size: int, window: int, stride: int, padding: str) -> int:
    """Number of output positions along one axis."""
    low, high = pad_amounts(size, window, stride, padding)
    return (size + low + high - window) // stride + 1


def pad_axis(t: Tensor, dim: int, low: int, high: int, circular: bool) -> Tensor:
    """t padded along ``dim``: zeros, or wrapped around when ``circular``."""
    if low == 0 and high == 0:
        return t
    size = t.shape[dim]
    if circular:
        # Wrapping more than the axis holds would need several turns; "same" never asks it.
        pieces = [t.narrow(dim, size - low, low)] if low else []
        pieces.append(t)
        if high:
            pieces.append(t.narrow(dim, 0, high))
        return torch.cat(pieces, dim=dim)
    shape = list(t.shape)
    out = t.new_zeros(shape[:dim] + [size + low + high] + shape[dim + 1:])
    out.narrow(dim, low, size).copy_(t)
    return out


def _strided(t: Tensor, dims: tuple[int, ...], start: int, count: int, stride: int) -> Tensor:
    index = [slice(None)] * t.dim()
    for dim in dims:
        index[dim] = slice(start, start + (count - 1) * stride + 1, stride)
    return t[tuple(index)]


def window_sum(t: Tensor, dims: tuple[int, ...], size: int, window: int, stride: int, padding: str) -> Tensor:
    """sum_{a < window} t[.., s p + a, .., s q + a, ..] along the given ``dims``
    together (one dim: a pooled axis; two dims: a diagonal shift of a (p, q) plane), after
    padding each of them (the caller divides by the window). Returns a new tensor (never a view
    of t)."""
    low, high = pad_amounts(size, window, stride, padding)
    if padding == "same" and stride == 1:
        return _shifted_sum(t, dims, size, window, low)
    for dim in dims:
        t = pad_axis(t, dim, low, high, padding == "circular")
    count = out_size(size, window, stride, padding)
    out = _strided(t, dims, 0, count, stride).clone()
    for a in range(1, window):
        out.add_(_strided(t, dims, a, count, stride))
    return out


def _shifted_sum(t: Tensor, dims: tuple[int, ...], size: int, window: int, low: int) -> Tensor:
    """The zero-padded, stride-1 case of `window_sum` without materialising the padding:
    out(p) = sum_o t(p + o) over offsets o = a - low, terms outside the input dropped.
    (In-place updates of a fresh clone: autograd and forward-mode AD both follow them.)"""
    out = t.clone()                                   # the offset o = 0 (low < window always)
    for a in range(window):
        o = a - low
        if o == 0:
            continue
        src = [slice(None)] * t.dim()
        dst = [slice(None)] * t.dim()
        for dim in dims:
            src[dim] = slice(max(0, o), size - max(0, -o))
            dst[dim] = slice(max(0, -o), size - max(0, o))
        out[tuple(dst)] += t[tuple(src)]
    return out
