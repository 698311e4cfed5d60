"""Kernel principal components: the directions along which least-squares training converges.

On the data set, the kernel's integral operator is Theta(X, X) / N (the inner product
<f, g> = (1/N) sum_i f(x_i) g(x_i) of the paper). Its eigenpairs (lambda_i, f^(i)) order the
training: under gradient flow the residual's coordinate along f^(i) decays as exp(-lambda_i t),
so the leading components are learned first (docs/conventions.md; the paper's Section 5 and Figure 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..numerics import symmetric_eigh
from ._checks import as_square_kernel, as_tensor, as_times


@dataclass(frozen=True)
class PrincipalComponents:
    r"""Eigenpairs of :math:`\Theta(X, X) / N`, largest first.

    Attributes:
        eigenvalues: (N,) the paper's :math:`\lambda_i`, eigenvalues of :math:`\Theta(X, X) / N`,
            descending (negative rounding noise is clamped to 0).
        eigenvectors: (N, N) orthonormal columns :math:`v_i` (unit Euclidean norm).

    The eigenfunctions on the data, :math:`f^{(i)}(X) = \sqrt N\, v_i`, are normalised in the
    data inner product (:math:`\frac1N \sum_j f^{(i)}(x_j)^2 = 1`), so a residual
    :math:`r(X) = \sum_i c_i f^{(i)}(X)` has coordinates
    :math:`c_i = \langle r, f^{(i)} \rangle = v_i^\top r / \sqrt N`, and under gradient flow
    :math:`c_i(t) = c_i(0)\, e^{-\lambda_i t}`.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor

    @classmethod
    def from_eigh(cls, eigenvalues: Tensor, eigenvectors: Tensor) -> PrincipalComponents:
        r"""From the eigendecomposition of :math:`\Theta(X, X)` (not divided by N), in any order."""
        n = eigenvalues.shape[0]
        order = torch.argsort(eigenvalues, descending=True)
        return cls(eigenvalues=(eigenvalues[order] / n).clamp_min(0), eigenvectors=eigenvectors[:, order])

    @property
    def eigenfunctions(self) -> Tensor:
        r"""Column i holds :math:`f^{(i)}` on the training points, :math:`\sqrt N\, v_i`; shape (N, N)."""
        return self.eigenvectors * self.eigenvectors.shape[0] ** 0.5

    def coordinates(self, residual: Any) -> Tensor:
        r""":math:`c_i = \langle r, f^{(i)} \rangle = v_i^\top r / \sqrt N` for a residual r of shape
        (N,) or (N, k): (N,) or (N, k)."""
        n = self.eigenvectors.shape[0]
        r = as_tensor(residual, "residual", self.eigenvectors.device)
        if r.shape[:1] != (n,) or r.dim() > 2:
            raise ValueError(f"residual must have shape (N,) or (N, k) with N = {n}; got {tuple(r.shape)}.")
        return self.eigenvectors.T @ r / n**0.5

    def decay(self, t: Any, coordinates: Any) -> Tensor:
        r"""Predicted coordinates :math:`c_i(t) = c_i(0)\, e^{-\lambda_i t}` under gradient flow:
        (T, N) or (T, N, k).

        ``coordinates`` are :math:`c_i(0)` from `coordinates`; t = inf gives 0 except along exact
        null directions (:math:`\lambda_i = 0`), which never move.
        """
        times = as_times(t).to(self.eigenvalues)
        c = as_tensor(coordinates, "coordinates", self.eigenvalues.device)
        if c.shape[:1] != self.eigenvalues.shape or c.dim() > 2:
            raise ValueError(f"coordinates must have shape (N,) or (N, k) with N = {self.eigenvalues.shape[0]}; "
                             f"got {tuple(c.shape)}.")
        rate = self.eigenvalues[None, :] * times[:, None]
        factor = torch.exp(-torch.nan_to_num(rate, nan=0.0))  # inf * 0 (a null direction at t = inf) stays put
        return factor.reshape(factor.shape + (1,) * (c.dim() - 1)) * c


def principal_components(ntk_train: Any) -> PrincipalComponents:
    r"""Kernel principal components of :math:`\Theta(X, X)`: eigenpairs of :math:`\Theta(X, X) / N`,
    largest first.

    Args:
        ntk_train: :math:`\Theta(X, X)`, shape (N, N) (tensor or numpy array).

    Returns:
        A `PrincipalComponents`.
    """
    kernel = as_square_kernel(ntk_train, "ntk_train")
    eigenvalues, eigenvectors = symmetric_eigh(kernel)
    return PrincipalComponents.from_eigh(eigenvalues, eigenvectors)
