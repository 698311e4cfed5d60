"""Empirical NTK by contracting per-sample Jacobians (any torch.nn.Module).

    Theta(x, x')_kk' = sum_p J(x)_kp J(x')_k'p,   J(x)_kp = d f_k(x) / d theta_p

Each chunk of B inputs gives its Jacobians, one (B, k, P_i) tensor per parameter tensor, by
``vmap(jacrev(f))`` over the samples. Where vmap cannot batch an op over samples (nn.GRU and
nn.LSTM), the chunk's Jacobian is ``jacrev`` of the batched forward instead: the inputs are
independent, so row (b, k) of d f(x_1..x_B) / d theta is d f_k(x_b) / d theta, the same numbers.
A block of the kernel is a sum of matrix products over the parameter tensors, each reduced in
column blocks whose products are summed in float64 when the model is in lower precision
(`blocks.gram`). Cost ~ N k (forward + backward) + N1 N2 k^2 P; memory B k P per chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import jacrev, vmap

from .backends import AUTODIFF_ERRORS, autodiff_error
from .blocks import accumulator, gram
from .functional import FunctionalModel


class JacobianMethod:
    """The per-sample-Jacobian method (see the module docstring) for a model with k outputs;
    a `ChunkMethod` whose features are the chunk's Jacobians."""

    def __init__(self, fmodel: FunctionalModel, k: int, *, fallback_reason: str | None = None) -> None:
        self.fmodel, self.k = fmodel, k
        self.fallback_reason = fallback_reason
        """Why method="auto" took this method instead of the structured path (None if it was asked for)."""
        self._jacobian = vmap(jacrev(fmodel.single), in_dims=(None, 0))
        self.autodiff = "per-sample"
        """"per-sample" (vmap over the chunk) until vmap fails once, then "batched"."""

    def point_bytes(self, element_size: int) -> float:
        """Bytes of features per input (k P Jacobian entries of ``element_size`` bytes, plus a
        quarter for temporaries), to choose the chunk size."""
        return 1.25 * self.k * self.fmodel.num_params * element_size  # the Jacobian, some temporaries

    def features(self, x: Tensor) -> list[Tensor]:
        """The Jacobians of a chunk x (B, ...): one (B, k, P_i) tensor per trainable parameter tensor."""
        with torch.enable_grad():  # kernels that keep state for a backward only in grad mode (mkldnn LSTM)
            return self._features(x)

    def _features(self, x: Tensor) -> list[Tensor]:
        params = self.fmodel.params
        if self.autodiff == "per-sample":
            try:
                jac = self._jacobian(params, x)
            except AUTODIFF_ERRORS as exc:
                self._vmap_error = exc
                self.autodiff = "batched"
            else:
                return [j.reshape(x.shape[0], self.k, -1) for j in jac.values()]
        try:
            jac = jacrev(lambda p: self.fmodel(p, x).reshape(x.shape[0], self.k))(params)
        except AUTODIFF_ERRORS as exc:
            raise autodiff_error("jacobian", self.fmodel.model, self._vmap_error, exc) from exc
        return [j.reshape(x.shape[0], self.k, -1) for j in jac.values()]

    def block(self, f1: list[Tensor], f2: list[Tensor], full: bool) -> Tensor:
        """sum_p J1_kp J2_k'p over the parameter tensors: (B1, B2, k, k) with ``full``, else the
        output trace (1/k) sum_k, (B1, B2)."""
        b1, b2, k = f1[0].shape[0], f2[0].shape[0], self.k
        dtype = f1[0].dtype
        acc = accumulator(dtype)
        if full:
            total = sum(gram(j1.reshape(b1 * k, -1), j2.reshape(b2 * k, -1), acc)
                        for j1, j2 in zip(f1, f2, strict=True))
            return total.to(dtype).view(b1, k, b2, k).permute(0, 2, 1, 3)
        # The trace pairs output k of x with output k of x': flatten (k, p) into one axis.
        total = sum(gram(j1.reshape(b1, -1), j2.reshape(b2, -1), acc) for j1, j2 in zip(f1, f2, strict=True))
        return (total / k).to(dtype)

    def diagonal(self, f1: list[Tensor], f2: list[Tensor], full: bool) -> Tensor:
        """Theta(x1_b, x2_b) for the rows b of two chunks of the same size: (B, k, k) or (B,)."""
        if full:
            return sum(torch.bmm(j1, j2.transpose(1, 2)) for j1, j2 in zip(f1, f2, strict=True))
        return sum((j1 * j2).sum((1, 2)) for j1, j2 in zip(f1, f2, strict=True)) / self.k
