"""Block-wise assembly of an empirical NTK: bounded memory, and symmetry when x2 is None.

Every method splits the inputs into chunks of ``batch_size`` rows, turns each chunk into
"features" (per-sample Jacobians, layer-wise Gram factors, or the chunk itself) and contracts two
chunks' features into one block of the kernel. For x1 against itself only the blocks on and above
the diagonal are computed; the others are their transposes, so the result is exactly symmetric.
Features of the x2 chunks are kept between blocks while they fit in ``cache_bytes``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves

CACHE_BYTES = 2 << 30
"""Default cap on cached chunk features (2 GiB); beyond it they are recomputed."""


class ChunkMethod(Protocol):
    def features(self, x: Tensor) -> Any: ...

    def block(self, f1: Any, f2: Any, full: bool) -> Tensor: ...


def nbytes(tree: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(tree) if isinstance(t, Tensor))


def swap(block: Tensor, full: bool) -> Tensor:
    """The block for (x2, x1) from the block for (x1, x2): Theta_kk'(x, x') = Theta_k'k(x', x)."""
    return block.permute(1, 0, 3, 2) if full else block.t()


def assemble(method: ChunkMethod, x1: Tensor, x2: Tensor | None, k: int, full: bool, batch_size: int,
             dtype: torch.dtype, cache_bytes: int = CACHE_BYTES) -> Tensor:
    """The (N1, N2, k, k) kernel (``full``) or its (N1, N2) output trace, block by block."""
    symmetric = x2 is None
    xs2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xs2.shape[0]
    shape = (n1, n2, k, k) if full else (n1, n2)
    out = torch.empty(shape, dtype=dtype, device=x1.device)
    rows1 = [slice(s, min(s + batch_size, n1)) for s in range(0, n1, batch_size)]
    rows2 = [slice(s, min(s + batch_size, n2)) for s in range(0, n2, batch_size)]
    cache: dict[int, tuple[Any, int]] = {}
    room = [cache_bytes]

    def features2(j: int) -> Any:
        if j in cache:
            return cache[j][0]
        f = method.features(xs2[rows2[j]])
        size = nbytes(f)
        if size <= room[0]:
            cache[j] = (f, size)
            room[0] -= size
        return f

    for i, r1 in enumerate(rows1):
        f1 = features2(i) if symmetric else method.features(x1[r1])
        for j in range(i if symmetric else 0, len(rows2)):
            f2 = f1 if symmetric and j == i else features2(j)
            blk = method.block(f1, f2, full)
            if symmetric and j == i:
                blk = 0.5 * (blk + swap(blk, full))  # exact symmetry: round-off differs between halves
            out[r1, rows2[j]] = blk
            if symmetric and j > i:
                out[rows2[j], r1] = swap(blk, full)
        if symmetric and i in cache:  # chunk i is never needed again
            room[0] += cache.pop(i)[1]
    return out


def default_batch_size(n: int, point_bytes: float, budget: int, minimum: int = 1) -> int:
    """The largest chunk whose features fit in ``budget`` bytes (at least ``minimum``, at most n)."""
    return int(max(1, min(n, max(minimum, budget // max(1, int(point_bytes))))))
