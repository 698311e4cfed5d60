"""How a kernel tensor of a spatial network is laid out, and the index gymnastics on it.

A kernel tensor has a *pair prefix* and *spatial trailing dims*:

- prefix 2, a block of pairs (x1_i, x2_j):  (n1, n2, *S)
- prefix 1, the self-pairs (x_i, x_i):      (n, *S)

and for d spatial axes (d = 0 for vectors, 1 for sequences, 2 for images) the trailing dims S are

- the diagonal form, positions p paired with themselves:  S = (H, W)            K(x, x')(p, p)
- the full form, every pair of positions (p, q):          S = (H, H', W, W')    K(x, x')(p, q)

(the full form pairs the axes of each spatial dimension, as neural-tangents does). A Conv layer
maps the diagonal form to itself; pooling needs the full form below it.

Nonlinearities need each Gaussian's variance K(x, x)(p, p): `variances` reads it off a self-pair
tensor, and `rows` / `cols` shape it to broadcast against a block (or a self-pair tensor).
"""

from __future__ import annotations

import torch
from torch import Tensor


def variances(self_pairs: Tensor, spatial: int, full: bool) -> Tensor:
    """K(x_i, x_i)(p, p) of shape (n, *positions) from a self-pair tensor (n, *S)."""
    if not full:
        return self_pairs
    v = self_pairs
    for axis in range(spatial):
        # pair (p_axis, q_axis) sit at dims 1 + axis, 2 + axis once earlier pairs are reduced
        v = torch.diagonal(v, dim1=1 + axis, dim2=2 + axis)
        v = v.movedim(-1, 1 + axis)
    return v


def rows(var: Tensor, spatial: int, full: bool, prefix: int) -> Tensor:
    """The first input's variances (n1, *positions), shaped to broadcast against a tensor with
    ``prefix`` pair dims: (n1, 1, ...) for a block, (n, ...) for self-pairs; in the full form
    each position axis is followed by a singleton (the q axis)."""
    if full:
        shape = [var.shape[0]]
        for size in var.shape[1:]:
            shape += [size, 1]
        var = var.reshape(shape)
    return var[:, None] if prefix == 2 else var


def cols(var: Tensor, spatial: int, full: bool, prefix: int) -> Tensor:
    """The second input's variances, shaped like `rows` but on the second pair / q axes."""
    if full:
        shape = [var.shape[0]]
        for size in var.shape[1:]:
            shape += [1, size]
        var = var.reshape(shape)
    return var[None] if prefix == 2 else var


def read_self(block: Tensor) -> Tensor:
    """The self-pairs K(x_i, x_i) (n, *S) of a block of x against itself (n, n, *S): its diagonal
    in the pair dims, copied (so the block may be overwritten afterwards)."""
    return torch.diagonal(block, dim1=0, dim2=1).movedim(-1, 0).clone()


def swap_pairs(block: Tensor, spatial: int, full: bool) -> Tensor:
    """K(x2, x1) from K(x1, x2): transpose the pair dims and, in the full form, p with q."""
    out = block.transpose(0, 1)
    if full:
        for axis in range(spatial):
            out = out.transpose(2 + 2 * axis, 3 + 2 * axis)
    return out


def to_diagonal(t: Tensor, spatial: int, prefix: int) -> Tensor:
    """The diagonal form (prefix, *positions) of a full-form tensor (prefix, H, H', W, W')."""
    for axis in range(spatial):
        t = torch.diagonal(t, dim1=prefix + axis, dim2=prefix + axis + 1).movedim(-1, prefix + axis)
    return t.contiguous()


def diagonal_to_full(t: Tensor, spatial: int, prefix: int) -> Tensor:
    """The full form (prefix, H, H', W, W') of a diagonal-form tensor (prefix, H, W) whose
    covariances between different positions are zero: K(p, q) = 0 for p != q."""
    for axis in range(spatial):
        dim = prefix + 2 * axis    # earlier axes already hold their (p, q) pair of dims
        t = torch.diag_embed(t.movedim(dim, -1), dim1=dim, dim2=dim + 1)
    return t


def mean_positions(t: Tensor, spatial: int, full: bool, prefix: int) -> Tensor:
    """Mean over positions p of K(p, p) (Flatten then Dense): (prefix, *S) -> (prefix)."""
    if spatial == 0:
        return t
    if full:
        t = to_diagonal(t, spatial, prefix)
    return t.mean(dim=tuple(range(prefix, t.dim())))


def mean_all(t: Tensor, spatial: int, prefix: int) -> Tensor:
    """Mean over all pairs of positions (p, q) of a full-form tensor (GlobalAvgPool)."""
    if spatial == 0:
        return t
    return t.mean(dim=tuple(range(prefix, t.dim())))
