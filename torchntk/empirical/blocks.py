"""Block-wise assembly of an empirical NTK: bounded memory, and symmetry when x2 is None.

Every method splits the inputs into chunks of ``batch_size`` rows, turns each chunk into
"features" (per-sample Jacobians, layer-wise Gram factors, or the chunk itself) and contracts two
chunks' features into one block of the kernel. For x1 against itself only the blocks on and above
the diagonal are computed; the others are their transposes, so the result is exactly symmetric.
Features are kept in memory in panels of at most ``cache_bytes`` (see `assemble`). Long
reductions in a block's matrix products go through `gram`, in column blocks of bounded length.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves

CACHE_BYTES = 4 << 30
"""Default memory for a panel of chunk features kept between blocks (4 GiB)."""


class ChunkMethod(Protocol):
    """What `assemble` needs of an empirical-NTK method: features of a chunk of inputs, and the
    kernel block of two chunks from their features. k is the model's number of outputs."""

    def features(self, x: Tensor) -> Any:
        """The features of a chunk of inputs x (B, ...): any pytree of tensors, computed once per
        chunk and reused against every other chunk."""
        ...

    def block(self, f1: Any, f2: Any, full: bool) -> Tensor:
        """The kernel block of two chunks of B1 and B2 inputs from their features:
        Theta[i, j, k, k'] (B1, B2, k, k) with ``full``, else the output trace (1/k) sum_k
        Theta[i, j, k, k], (B1, B2)."""
        ...

    def diagonal(self, f1: Any, f2: Any, full: bool) -> Tensor:
        """Theta(x1_b, x2_b) for the rows b of two chunks of the same size B: (B, k, k) with
        ``full``, else (B,) output traces."""
        ...


REDUCTION_BLOCK = 1 << 14
"""Longest reduction of one matrix product in a kernel block. A float32 product over n terms has
round-off growing with n as the library accumulates it; blocks of 16384 summed in float64 keep
float32 kernels as accurate for outputs="trace" (reductions over k P terms) as for "full"."""


def gram(a: Tensor, b: Tensor, acc: torch.dtype) -> Tensor:
    """a @ b^T for a (m, n), b (p, n) in dtype ``acc``: products of column blocks of at most
    REDUCTION_BLOCK, each converted to ``acc`` before they are summed."""
    n = a.shape[1]
    if n <= REDUCTION_BLOCK:
        return (a @ b.t()).to(acc)
    total = torch.zeros((a.shape[0], b.shape[0]), dtype=acc, device=a.device)
    for s in range(0, n, REDUCTION_BLOCK):  # blocks of parameters, not of data points
        total += a[:, s : s + REDUCTION_BLOCK] @ b[:, s : s + REDUCTION_BLOCK].t()
    return total


def accumulator(dtype: torch.dtype) -> torch.dtype:
    """The dtype kernel blocks are summed in: float64 for lower-precision models (cheap: B1 B2 k^2
    numbers per block, against the B k P of the products), else the model's."""
    return dtype if dtype == torch.float64 or not dtype.is_floating_point else torch.float64


def _nbytes(tree: Any) -> int:
    """Bytes held by the tensors of a pytree (to size a panel of chunk features)."""
    return sum(t.numel() * t.element_size() for t in tree_leaves(tree) if isinstance(t, Tensor))


def swap(block: Tensor, full: bool) -> Tensor:
    """The block for (x2, x1) from the block for (x1, x2): Theta_kk'(x, x') = Theta_k'k(x', x)."""
    return block.permute(1, 0, 3, 2) if full else block.t()


def assemble(method: ChunkMethod, x1: Tensor, x2: Tensor | None, k: int, full: bool, batch_size: int,
             dtype: torch.dtype, cache_bytes: int = CACHE_BYTES) -> Tensor:
    """The (N1, N2, k, k) kernel (``full``) or its (N1, N2) output trace, block by block.

    Like a blocked matrix product in limited memory: a panel of x1 chunks (as many as fit in
    ``cache_bytes``) has its features computed once, then every x2 chunk streams past it.
    Features are thus computed about N1 / B + (N1 / panel) (N2 / B) times, not (N1 / B)(N2 / B).
    """
    symmetric = x2 is None
    xs2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xs2.shape[0]
    out = torch.empty((n1, n2, k, k) if full else (n1, n2), dtype=dtype, device=x1.device)
    rows1 = [slice(s, min(s + batch_size, n1)) for s in range(0, n1, batch_size)]
    rows2 = [slice(s, min(s + batch_size, n2)) for s in range(0, n2, batch_size)]
    start = 0
    while start < len(rows1):
        panel = {start: method.features(x1[rows1[start]])}
        span = max(1, cache_bytes // max(1, _nbytes(panel[start])))
        for i in range(start + 1, min(len(rows1), start + span)):
            panel[i] = method.features(x1[rows1[i]])
        for j in range(start if symmetric else 0, len(rows2)):
            f2 = panel[j] if symmetric and j in panel else method.features(xs2[rows2[j]])
            for i, f1 in panel.items():
                if symmetric and j < i:
                    continue  # the transpose of block (j, i), written with it
                blk = method.block(f1, f2, full)
                if symmetric and j == i:
                    blk = 0.5 * (blk + swap(blk, full))  # exact symmetry: round-off differs between halves
                out[rows1[i], rows2[j]] = blk
                if symmetric and j > i:
                    out[rows2[j], rows1[i]] = swap(blk, full)
        start += len(panel)
    return out


def assemble_diagonal(method: ChunkMethod, x1: Tensor, x2: Tensor | None, k: int, full: bool, batch_size: int,
                      dtype: torch.dtype) -> Tensor:
    """Theta(x1_i, x2_i) only (x2 None: x1_i with itself): (N, k, k) (``full``) or (N,), in O(N).

    Each chunk's features are paired with those of the same rows; a method's ``diagonal(f1, f2,
    full)`` gives the B per-row blocks without the B x B block around them.
    """
    n = x1.shape[0]
    out = torch.empty((n, k, k) if full else (n,), dtype=dtype, device=x1.device)
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        f1 = method.features(x1[rows])
        f2 = f1 if x2 is None else method.features(x2[rows])
        blk = method.diagonal(f1, f2, full)
        if x2 is None and full:
            blk = 0.5 * (blk + blk.transpose(1, 2))  # exactly symmetric, as the full kernel is
        out[rows] = blk
    return out


class Counted:
    """A `ChunkMethod` that counts its features calls (chunks, and inputs with repeats): how often
    `assemble` recomputed features for want of panel memory."""

    def __init__(self, method: ChunkMethod) -> None:
        self.method, self.calls, self.rows = method, 0, 0

    def features(self, x: Tensor) -> Any:
        """The wrapped method's features of x, counted."""
        self.calls += 1
        self.rows += x.shape[0]
        return self.method.features(x)

    def block(self, f1: Any, f2: Any, full: bool) -> Tensor:
        """The wrapped method's block."""
        return self.method.block(f1, f2, full)

    def diagonal(self, f1: Any, f2: Any, full: bool) -> Tensor:
        """The wrapped method's diagonal blocks."""
        return self.method.diagonal(f1, f2, full)


def default_batch_size(n: int, point_bytes: float, budget: int, minimum: int = 1) -> int:
    """The largest chunk whose features fit in ``budget`` bytes (at least ``minimum``, at most n)."""
    return int(max(1, min(n, max(minimum, budget // max(1, int(point_bytes))))))
