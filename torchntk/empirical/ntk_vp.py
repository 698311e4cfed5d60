"""Empirical NTK by NTK-vector products: no Jacobian is ever stored (any torch.nn.Module).

Column (x', k') of the kernel is Theta(., x') e_k' = J(.) (J(x')^T e_k'): a vector-Jacobian
product at x' gives the parameter-space vector g = grad_theta f_k'(x'), and a Jacobian-vector
product of the chunk of x1 along g gives the column. Both are vmapped over the chunk of x2 and
the k outputs. Where vmap cannot batch the model over samples (nn.GRU, nn.LSTM), the g's of a
chunk come from one vjp of the batched forward vmapped over the B2 k one-hot cotangents instead
(the inputs are independent, so these are the same vectors). Memory: B k P for the g's of a chunk
and B1 B2 k tangents of the activations of a block (`pair_bytes`), nothing N-by-P; cost ~ N1 N2 k
forward passes, so it pays off only when P is too large for Jacobians, not for dense networks.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from .backends import AUTODIFF_ERRORS, autodiff_error
from .functional import FunctionalModel

JIT_WARNING = ".*torch.jit.script.* is deprecated"


class NTKVectorMethod:
    """The NTK-vector-product method (see the module docstring) for a model with k outputs; a
    `ChunkMethod` whose features are the inputs themselves."""

    def __init__(self, fmodel: FunctionalModel, k: int) -> None:
        self.fmodel, self.k = fmodel, k
        self.autodiff = "per-sample"
        """"per-sample" (vmap over the chunk of x2) until vmap fails once, then "batched"."""

    def point_bytes(self, element_size: int) -> float:
        """Bytes per input of the k parameter-space vectors g it holds (plus a quarter for
        temporaries), to choose the chunk size."""
        return 1.25 * self.k * self.fmodel.num_params * element_size  # the vmapped g's, some temporaries

    def pair_bytes(self, saved_activations: int) -> float:
        """Bytes per pair of inputs (one of each chunk) in a block: the jvp of the x1 chunk carries
        one tangent per column (B2 k of them) through the forward, up to twice what the forward
        saves for a backward (``saved_activations`` per input) per tangent. Measured, peak resident
        memory over the pair term per column: 1.8 times the saved bytes for a 2-layer CNN (32
        channels, 32 x 32 images), 1.1 times for a 2-layer transformer encoder of width 64."""
        return 2.0 * self.k * saved_activations

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
        with warnings.catch_warnings(), torch.enable_grad():  # grad mode: see JacobianMethod.features
            # torch's forward-mode AD loads its decompositions through torch.jit.script on first use
            warnings.filterwarnings("ignore", message=JIT_WARNING, category=DeprecationWarning)
            if self.autodiff == "per-sample":
                try:
                    cols = vmap(vmap(column, in_dims=(None, 0)), in_dims=(0, None))(x2, basis)  # (B2, k', B1, k)
                except AUTODIFF_ERRORS as exc:
                    self._vmap_error = exc
                    self.autodiff = "batched"
            if self.autodiff == "batched":
                cols = self._batched_columns(x1, x2)
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
        with warnings.catch_warnings(), torch.enable_grad():  # grad mode: see JacobianMethod.features
            warnings.filterwarnings("ignore", message=JIT_WARNING, category=DeprecationWarning)
            if self.autodiff == "per-sample":
                try:
                    blocks = vmap(pair)(x1, x2)  # (B, k', k)
                except AUTODIFF_ERRORS as exc:
                    self._vmap_error = exc
                    self.autodiff = "batched"
            if self.autodiff == "batched":
                # the B x B block's diagonal: B times the work (and memory) of per-sample pairs, within one chunk
                rows = torch.arange(x1.shape[0], device=x1.device)
                blocks = self._batched_columns(x1, x2)[rows, :, rows, :]  # (B, k', k)
        if full:
            return blocks.transpose(1, 2)
        return blocks.diagonal(dim1=1, dim2=2).mean(-1)

    def _batched_columns(self, x1: Tensor, x2: Tensor) -> Tensor:
        """(B2, k', B1, k) columns without vmap over samples: g = grad f_k'(x2_j) for all (j, k')
        from one vjp of the batched forward at x2 (vmapped over one-hot cotangents), then one jvp
        of the batched forward at x1 per g (vmapped over the g's)."""
        f, params, k = self.fmodel, self.fmodel.params, self.k
        b1, b2 = x1.shape[0], x2.shape[0]
        try:
            _, pullback = vjp(lambda p: f(p, x2).reshape(b2, k), params)
            basis = torch.eye(b2 * k, dtype=next(iter(params.values())).dtype, device=x2.device)
            (g,) = vmap(pullback)(basis.reshape(b2 * k, b2, k))  # each (B2 k, *shape)
            cols = vmap(lambda t: jvp(lambda p: f(p, x1).reshape(b1, k), (params,), (t,))[1])(g)  # (B2 k, B1, k)
        except AUTODIFF_ERRORS as exc:
            raise autodiff_error("ntk_vp", f.model, self._vmap_error, exc) from exc
        return cols.reshape(b2, k, b1, k)
