"""Empirical NTK by NTK-vector products: no Jacobian is ever stored (any torch.nn.Module).

Column (x', k') of the kernel is Theta(., x') e_k' = J(.) (J(x')^T e_k'): a vector-Jacobian
product at x' gives the parameter-space vector g = grad_theta f_k'(x'), and a Jacobian-vector
product of the chunk of x1 along g gives the column. Both are vmapped over the chunk of x2 and
the k outputs. Memory: B k P for the g's of a chunk, nothing N-by-P; cost ~ N1 N2 k forward passes,
so it pays off only when P is too large for Jacobians, not for dense networks.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from .functional import FunctionalModel


class NTKVectorMethod:
    """The NTK-vector-product method (see the module docstring) for a model with k outputs; a
    `ChunkMethod` whose features are the inputs themselves."""

    def __init__(self, fmodel: FunctionalModel, k: int) -> None:
        self.fmodel, self.k = fmodel, k

    def point_bytes(self, element_size: int) -> float:
        """Bytes per input of the k parameter-space vectors g it holds (plus a quarter for
        temporaries), to choose the chunk size."""
        return 1.25 * self.k * self.fmodel.num_params * element_size  # the vmapped g's, some temporaries

    def features(self, x: Tensor) -> Tensor:
        """The chunk x itself: nothing is precomputed."""
        return x

    def block(self, x1: Tensor, x2: Tensor, full: bool) -> Tensor:
        """Theta between the chunks x1 (B1, ...) and x2 (B2, ...), one column J(x1) J(x2_j)^T e_k'
        per (j, k'): (B1, B2, k, k) with ``full``, else the output trace (1/k) sum_k, (B1, B2)."""
        f, params = self.fmodel, self.fmodel.params

        def column(x_prime: Tensor, cotangent: Tensor) -> Tensor:
            _, pullback = vjp(lambda p: f.single(p, x_prime), params)
            (g,) = pullback(cotangent)
            _, tangent_out = jvp(lambda p: f(p, x1), (params,), (g,))
            return tangent_out  # (B1, k): J(x1) g

        basis = torch.eye(self.k, dtype=next(iter(params.values())).dtype, device=x1.device)
        with warnings.catch_warnings():
            # torch's forward-mode AD loads its decompositions through torch.jit.script on first use
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=DeprecationWarning)
            cols = vmap(vmap(column, in_dims=(None, 0)), in_dims=(0, None))(x2, basis)  # (B2, k', B1, k)
        if full:
            return cols.permute(2, 0, 3, 1)
        return cols.diagonal(dim1=1, dim2=3).mean(-1).t()

    def diagonal(self, x1: Tensor, x2: Tensor, full: bool) -> Tensor:
        """Theta(x1_b, x2_b) for the rows b: one vjp at x2_b and one jvp at x1_b per output k'."""
        f, params = self.fmodel, self.fmodel.params

        def pair(a: Tensor, b: Tensor) -> Tensor:
            def column(cotangent: Tensor) -> Tensor:
                _, pullback = vjp(lambda p: f.single(p, b), params)
                (g,) = pullback(cotangent)
                return jvp(lambda p: f.single(p, a), (params,), (g,))[1]  # (k,): J(a) J(b)^T e_k'

            return vmap(column)(basis)  # (k', k)

        basis = torch.eye(self.k, dtype=next(iter(params.values())).dtype, device=x1.device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=DeprecationWarning)
            blocks = vmap(pair)(x1, x2)  # (B, k', k)
        if full:
            return blocks.transpose(1, 2)
        return blocks.diagonal(dim1=1, dim2=2).mean(-1)
