"""The kernel state that flows through the layers of a network description.

For a pair of input sets (rows x1, columns x2) the state after a layer holds the covariance of
that layer's outputs over the random initialisation (NNGP, Proposition 1), the neural tangent
kernel accumulated so far (Theorem 1), and the variances on both sides, which the Gaussian
expectations of the next nonlinearity need.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class KernelState(NamedTuple):
    """Kernels of one layer's outputs.

    nngp: (n1, n2) covariance; on the diagonal path (n,), k(x_i, x_i) only.
    ntk:  same shape as nngp, or None when only the NNGP is wanted.
    var1: (n1, 1) the rows' variances Sigma(x, x); on the diagonal path this is ``nngp``.
    var2: (1, n2) the columns' variances; on the diagonal path this is ``nngp``.
    same: rows and columns are the same inputs (a block on the diagonal of x1 against itself).
        Then the variances are read off the block's own diagonal after every layer, so a
        point's correlation with itself is exactly 1 at every depth.
    """

    nngp: Tensor
    ntk: Tensor | None
    var1: Tensor
    var2: Tensor
    same: bool = False

    @property
    def diagonal(self) -> bool:
        """Whether this is the diagonal path: self-pairs k(x_i, x_i) only, nngp of shape (n,)."""
        return self.nngp.dim() == 1


def input_state(x1: Tensor, x2: Tensor | None, need_ntk: bool, *, diagonal: bool = False) -> KernelState:
    """State of the network input a(0) = x: nngp = x1 . x2 / n0, ntk = 0 (no parameters yet).

    x1 (n1, n0); x2 (n2, n0), or None for x1 against itself. With x2 None the diagonal of
    nngp is set to exactly the rows' variances, so correlations there are exactly 1.
    """
    n0 = x1.shape[1]
    var1 = (x1 * x1).sum(dim=1) / n0
    ntk = torch.zeros((), dtype=x1.dtype, device=x1.device) if need_ntk else None
    if diagonal:
        return KernelState(var1, ntk, var1, var1)
    if x2 is None:
        nngp = (x1 @ x1.T) / n0
        nngp.diagonal().copy_(var1)
        return KernelState(nngp, ntk, var1[:, None], var1[None, :], same=True)
    var2 = (x2 * x2).sum(dim=1) / n0
    return KernelState((x1 @ x2.T) / n0, ntk, var1[:, None], var2[None, :])
