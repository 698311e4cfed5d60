"""Exponentials a exp(b x) and Gaussian bumps a exp(b x^2), in closed form, with the parameters
as in neural-tangents' ``stax.Exp(a, b)`` and ``stax.Gaussian(a, b)``.

Notation: (u, v) centred Gaussian, Var u = v1, Var v = v2, Cov(u, v) = c.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from .base import Activation


def _real(value: object, owner: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value}.")
    return float(value)


class Exp(Activation):
    r""":math:`a\, e^{b x}` (neural-tangents' ``stax.Exp(a, b)``, same parameters and defaults).
    With variances :math:`v_1, v_2` and covariance :math:`c`,

    .. math::

        \mathbb E[s(u)\, s(v)] = a^2 \exp\Big(b^2 \big(\tfrac{v_1 + v_2}{2} + c\big)\Big), \qquad
        \mathbb E[s'(u)\, s'(v)] = b^2\, \mathbb E[s(u)\, s(v)]

    (the Gaussian moment generating function at :math:`(b, b)`). Not Lipschitz, so the paper's theorems
    do not cover it; the kernels are defined for every variance.

    Args:
        a: the scale (default 1).
        b: the rate (default 1).
    """

    def __init__(self, a: float = 1.0, b: float = 1.0) -> None:
        self.a, self.b = _real(a, "Exp", "a"), _real(b, "Exp", "b")
        super().__init__(self._forward, self._derivative, name=f"exp({self.a!r}, {self.b!r})")

    def __repr__(self) -> str:
        return f"Exp(a={self.a!r}, b={self.b!r})"

    def config(self) -> dict:
        """The constructor's keyword arguments: ``Exp(**act.config())`` rebuilds it."""
        return {"a": self.a, "b": self.b}

    def _forward(self, x: Tensor) -> Tensor:
        return self.a * torch.exp(self.b * x)

    def _derivative(self, x: Tensor) -> Tensor:
        return self.a * self.b * torch.exp(self.b * x)

    def check(self) -> None:
        """Nothing to check: the function and its derivative are built in."""

    def expectations(self, var1: Tensor, var2: Tensor, cov: Tensor, derivative: bool = True,
                     overwrite: bool = False) -> tuple[Tensor, Tensor | None]:
        b2 = self.b * self.b
        ess = self.a * self.a * torch.exp(b2 * ((var1 + var2) / 2 + cov))
        return ess, (b2 * ess if derivative else None)


class Gaussian(Activation):
    r""":math:`a\, e^{b x^2}` (neural-tangents' ``stax.Gaussian(a, b)``, same parameters and
    defaults: the bump :math:`e^{-x^2}` by default). With :math:`S` the covariance matrix of
    :math:`(u, v)` (variances :math:`v_1, v_2`, covariance :math:`c`) and
    :math:`D = \det(I - 2 b S) = 1 - 2 b (v_1 + v_2) + 4 b^2 (v_1 v_2 - c^2)`,

    .. math::

        \mathbb E[s(u)\, s(v)] = \frac{a^2}{\sqrt D},

        \mathbb E[s'(u)\, s'(v)] = \frac{4 a^2 b^2 c}{D^{3/2}}
        = \partial_c \mathbb E[s(u)\, s(v)] \quad \text{(Price's theorem)}.

    :math:`D` is written as a sum so that for :math:`b \le 0` every term is :math:`\ge 0`
    (:math:`v_1 v_2 \ge c^2`) and nothing cancels: :math:`D \ge 1 + 2|b|(v_1 + v_2)`. For
    :math:`b > 0` the function grows like :math:`e^{b x^2}` and its Gaussian moments are finite
    only while :math:`I - 2 b S` is positive definite (on the diagonal: :math:`4 b v < 1`);
    beyond, `expectations` raises a ValueError instead of returning inf or NaN.

    Args:
        a: the scale (default 1).
        b: the coefficient of :math:`x^2` in the exponent (default -1).
    """

    def __init__(self, a: float = 1.0, b: float = -1.0) -> None:
        self.a, self.b = _real(a, "Gaussian", "a"), _real(b, "Gaussian", "b")
        super().__init__(self._forward, self._derivative, name=f"gaussian({self.a!r}, {self.b!r})")

    def __repr__(self) -> str:
        return f"Gaussian(a={self.a!r}, b={self.b!r})"

    def config(self) -> dict:
        """The constructor's keyword arguments: ``Gaussian(**act.config())`` rebuilds it."""
        return {"a": self.a, "b": self.b}

    def _forward(self, x: Tensor) -> Tensor:
        return self.a * torch.exp(self.b * x * x)

    def _derivative(self, x: Tensor) -> Tensor:
        return 2 * self.a * self.b * x * torch.exp(self.b * x * x)

    def check(self) -> None:
        """Nothing to check: the function and its derivative are built in."""

    def expectations(self, var1: Tensor, var2: Tensor, cov: Tensor, derivative: bool = True,
                     overwrite: bool = False) -> tuple[Tensor, Tensor | None]:
        a2, b = self.a * self.a, self.b
        det = 1 - 2 * b * (var1 + var2) + 4 * b * b * (var1 * var2 - cov * cov)
        if b > 0:
            self._check_finite(var1, var2, det)
        ess = a2 * torch.rsqrt(det)
        if not derivative:
            return ess, None
        return ess, 4 * b * b * cov * ess / det

    def _check_finite(self, var1: Tensor, var2: Tensor, det: Tensor) -> None:
        largest = float(torch.maximum(var1.max(), var2.max()))
        if not (bool((det > 0).all()) and 1 - 2 * self.b * largest > 0):
            raise ValueError(f"{self!r} grows like exp({self.b!r} x^2): its Gaussian expectations are infinite "
                             f"unless I - 2 b Cov is positive definite (on the diagonal, variance < 1 / (4 b) = "
                             f"{1 / (4 * self.b):.4g}); the largest variance here is {largest:.4g}. Use b < 0, "
                             "or smaller inputs, weight_std or bias_std.")
