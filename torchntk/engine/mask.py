r"""Masks of positions: variable-length sequences (and images or graphs with missing positions).

A mask is a side input (`torchntk.engine.state`), a boolean (N, *positions) tensor, True where
an input holds data and False at padding: (N, L) for sequences (N, C, L), (N, H, W) for images,
(N, V) for graphs. ``spec.kernels(x1, x2, mask=(m1, m2))``, ``spec.kernels(x1, mask=m1)`` and
``net(x, mask=m)`` take it. Padding never reaches the data:

- padding positions hold zeros: the inputs there are ignored, and every layer's output is
  zeroed there again (on kernels, every covariance with a padding position is zero), so a layer
  that mixes positions (a Conv filter, a ConvLocal window, Aggregate) sees zeros there, as
  it sees "same" padding beyond the edge;
- `SelfAttention` gives padding positions no weight as keys (logits of -inf before the softmax,
  weights of 0 for the other mechanisms);
- `GlobalAvgPool` averages over the real positions of each input, and `LayerNorm` over axes that
  include positions takes its statistics over the real ones.

So a sequence padded at its end, with its mask, has exactly the kernels of the unpadded sequence
through any stack of these layers, position-wise ones, "same" stride-1 convolutions and
`GlobalAvgPool` / `GlobalSumPool` readouts (not `Flatten`, whose Dense divides by all positions;
neural-tangents' ``mask_constant`` agrees on all of them).
The positions must stay the same through every layer the mask travels through: a layer that
changes them (a strided or "valid" Conv, windowed pooling, ConvTranspose) is an error with a
mask, naming the layer.

On a kernel tensor (layout.py) the mask of a pair of positions (p, q) is m1(p) m2(q): `remask`
multiplies a state by it, which is what keeps padding at zero after each layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._inputs import as_side_tensor, is_traced
from . import layout
from .state import KernelState

MASK = "mask"
"""The side input's name, as `Serial.kernels` and the finite network take it (``mask=``)."""


def as_mask(m: Any, name: str, count: int, positions: tuple[int, ...], *, device: torch.device) -> Tensor:
    """``m`` checked and converted: a new boolean tensor (count, *positions) on ``device``, True at
    real positions, never the caller's own; a torch tensor or numpy array of bools (or of 0 / 1).

    ``name`` ("mask", "mask[1] (of x2)") starts every error message. Inside a torch.func transform
    (`torchntk._inputs.is_traced`) only the shapes are checked."""
    m = as_side_tensor(m, name, "boolean (N, *positions), True at the positions that hold data")
    if not positions:
        raise ValueError(f"{name} was given, but the inputs are vectors (N, d) without positions; a mask marks the "
                         "real positions of sequences (N, C, L), images (N, C, H, W) or graphs (N, C, V).")
    expected = (count, *positions)
    if tuple(m.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, one flag per input and position (the inputs' N and "
                         f"their positions {positions}), got {tuple(m.shape)}.")
    # Under torch.func transforms (the empirical NTK's vmap over examples) the values cannot be
    # read, only the shapes: those are checked (the values are wherever the forward runs untransformed).
    values = not is_traced(m)
    if m.dtype != torch.bool and (m.is_complex() or values and not ((m == 0) | (m == 1)).all()):   # NaN, inf fail
        raise ValueError(f"{name} must be boolean (True at real positions, False at padding), or hold only 0 "
                         f"and 1; got dtype {m.dtype} with other values.")
    out = m.to(device=device, dtype=torch.bool, copy=True)
    if not values:
        return out
    empty = ~out.reshape(count, -1).any(dim=1)
    if empty.any():
        first = int(torch.nonzero(empty)[0])
        raise ValueError(f"{name}: input {first} has no real position (its mask is False everywhere); every input "
                         "needs at least one position that holds data. True marks data, False padding.")
    return out


def pair_factor(m1: Tensor, m2: Tensor, spatial: int, full: bool, prefix: int, dtype: torch.dtype) -> Tensor:
    """m1(p) m2(q) shaped to multiply a kernel tensor of this layout: (n1, n2, *S) for a block
    (prefix 2), (n, *S) for self-pairs (prefix 1, m1 and m2 the same inputs' masks)."""
    a, b = m1.to(dtype), m2.to(dtype)
    return layout.rows(a, spatial, full, prefix) * layout.cols(b, spatial, full, prefix)


def remask(state: KernelState) -> KernelState:
    """``state`` with every kernel entry that involves a padding position set to zero (the state's
    mask, ``state.side["mask"]``; the state as it is without one, or once the positions are gone)."""
    masks = state.side.get(MASK)
    if masks is None or state.spatial == 0 or state.flat:
        return state
    m1, m2 = masks
    dtype = state.nngp.dtype

    def apply(t: Tensor | None, a: Tensor, b: Tensor, prefix: int) -> Tensor | None:
        if t is None or t.dim() == 0:
            return t
        return t * pair_factor(a, b, state.spatial, state.full, prefix, dtype)

    selves = state.self_states()
    return KernelState(apply(state.nngp, m1, m2, state.prefix), apply(state.ntk, m1, m2, state.prefix),
                       apply(state.self1, m1, m1, 1) if selves is not None else state.self1,
                       apply(state.self2, m2, m2, 1) if selves is not None else state.self2,
                       state.prefix, state.same, state.spatial, state.full, state.flat, state.side)


def real_counts(m: Tensor) -> Tensor:
    """The number of real positions of each input (n,) of a mask (n, *positions) (at least one,
    which `as_mask` checks)."""
    return m.reshape(m.shape[0], -1).sum(dim=1)
