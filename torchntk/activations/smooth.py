"""Smooth activations with closed-form Gaussian expectations: erf, sin, cos, gelu.

Notation: (u, v) centred Gaussian, Var u = v1, Var v = v2, Cov(u, v) = c.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from .base import Activation, elementwise_grad


class Erf(Activation):
    r""":math:`\operatorname{erf}(x)`. Williams (1997), for :math:`(u, v)` centred Gaussian with
    variances :math:`v_1, v_2` and covariance :math:`c`:

    .. math::

        \mathbb E[\operatorname{erf}(u) \operatorname{erf}(v)]
            = \frac{2}{\pi} \arcsin \frac{2 c}{\sqrt{(1 + 2 v_1)(1 + 2 v_2)}},

        \mathbb E[\operatorname{erf}'(u) \operatorname{erf}'(v)]
            = \frac{4}{\pi} \frac{1}{\sqrt{(1 + 2 v_1)(1 + 2 v_2) - 4 c^2}}.
    """

    def __init__(self) -> None:
        super().__init__(torch.erf, lambda x: 2 / math.sqrt(math.pi) * torch.exp(-x * x), name="erf")

    def __repr__(self) -> str:
        return "Erf()"

    def expectations(self, var1, var2, cov, derivative=True, overwrite=False):
        det = (1 + 2 * var1) * (1 + 2 * var2)
        ess = (2 / math.pi) * torch.arcsin(2 * cov * torch.rsqrt(det))
        edd = (4 / math.pi) * torch.rsqrt(det - 4 * cov * cov) if derivative else None
        return ess, edd


def _trig_pair(var1: Tensor, var2: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """(E[sin u sin v], E[cos u cos v]) = exp(-(v1 + v2) / 2) (sinh c, cosh c), written as
    exponentials of non-positive numbers (|c| <= (v1 + v2) / 2) so large variances do not
    overflow to inf * 0."""
    half = (var1 + var2) / 2
    plus, minus = torch.exp(cov - half), torch.exp(-cov - half)
    return (plus - minus) / 2, (plus + minus) / 2


class Sin(Activation):
    r""":math:`\sin(x)`: :math:`\mathbb E[\sin u \sin v] = e^{-(v_1 + v_2)/2} \sinh c` and
    :math:`\mathbb E[\cos u \cos v] = e^{-(v_1 + v_2)/2} \cosh c` (variances :math:`v_1, v_2`,
    covariance :math:`c`)."""

    def __init__(self) -> None:
        super().__init__(torch.sin, torch.cos, name="sin")

    def __repr__(self) -> str:
        return "Sin()"

    def expectations(self, var1, var2, cov, derivative=True, overwrite=False):
        ss, cc = _trig_pair(var1, var2, cov)
        return ss, (cc if derivative else None)


class Cos(Activation):
    r""":math:`\cos(x)`: :math:`\mathbb E[\cos u \cos v] = e^{-(v_1 + v_2)/2} \cosh c` and
    :math:`\mathbb E[\sin u \sin v] = e^{-(v_1 + v_2)/2} \sinh c` (variances :math:`v_1, v_2`,
    covariance :math:`c`)."""

    def __init__(self) -> None:
        super().__init__(torch.cos, lambda x: -torch.sin(x), name="cos")

    def __repr__(self) -> str:
        return "Cos()"

    def expectations(self, var1, var2, cov, derivative=True, overwrite=False):
        ss, cc = _trig_pair(var1, var2, cov)
        return cc, (ss if derivative else None)


def _gelu_nngp(var1: Tensor, var2: Tensor, cov: Tensor) -> Tensor:
    """E[u Phi(u) v Phi(v)].

    Write Phi(u) = P(z1 <= u) with z independent of (u, v), so the expectation is
    E[u v 1{w >= 0}] for w = (u - z1, v - z2), Cov w = B = S + I (S the covariance of (u, v)).
    Conditioning on w: E[(u, v) | w] = A w and the conditional covariance is A too, with
    A = S B^-1 (because S B^-1 S = S - S B^-1). Hence

        E = A_12 P(w >= 0) + sum_kl A_1k A_2l E[w_k w_l 1{w >= 0}]

    and for w of scales s_k = sqrt(B_kk), correlation r, with P = 1/4 + arcsin(r) / (2 pi):
    E[w_k^2 1{w >= 0}] = s_k^2 (P + r sqrt(1 - r^2) / (2 pi)),
    E[w_1 w_2 1{w >= 0}] = s_1 s_2 (r P + sqrt(1 - r^2) / (2 pi)).
    """
    b1, b2 = 1 + var1, 1 + var2
    det = b1 * b2 - cov * cov                       # > 0: B = S + I is positive definite
    a11, a22 = var1 * b2 - cov * cov, var2 * b1 - cov * cov   # det * A_kk
    s12 = torch.sqrt(b1 * b2)
    r = cov / s12
    comp = torch.sqrt(1 - r * r) / (2 * math.pi)       # |r| < 1 strictly: B = S + I
    p = 0.25 + torch.arcsin(r) / (2 * math.pi)
    mxx = p + r * comp
    mxy = s12 * (r * p + comp)
    inner = cov * (a11 * b1 * mxx + a22 * b2 * mxx) + (a11 * a22 + cov * cov) * mxy
    return cov * p / det + inner / (det * det)


class Gelu(Activation):
    r""":math:`x\, \Phi(x)` (``torch.nn.functional.gelu``, exact form).

    :math:`\mathbb E[\operatorname{gelu}(u) \operatorname{gelu}(v)]` in closed form;
    :math:`\mathbb E[\operatorname{gelu}'(u) \operatorname{gelu}'(v)]` is its derivative in the
    covariance :math:`c` at fixed variances, by Price's theorem
    :math:`\partial_c \mathbb E[f(u)\, g(v)] = \mathbb E[f'(u)\, g'(v)]`, taken by autograd
    through the closed form (exact, not a finite difference).
    """

    def __init__(self) -> None:
        super().__init__(torch.nn.functional.gelu, name="gelu")

    def __repr__(self) -> str:
        return "Gelu()"

    def expectations(self, var1, var2, cov, derivative=True, overwrite=False):
        ess = _gelu_nngp(var1, var2, cov)
        if not derivative:
            return ess, None
        edd = elementwise_grad(lambda c: _gelu_nngp(var1, var2, c), cov, var1, var2)
        return ess, edd


class Rbf(Activation):
    r""":math:`\sqrt 2 \sin(\sqrt{2\gamma}\, x + \pi/4)`, the dual activation of the RBF kernel
    (neural-tangents' ``stax.Rbf(gamma)``):

    .. math::

        E[s(u) s(v)] = e^{-\gamma (v_1 + v_2 - 2c)}, \qquad E[s'(u) s'(v)] = 2\gamma\, E[s(u) s(v)],

    (the :math:`\sin(\sqrt{2\gamma}(u + v) + \pi/2)` term has mean zero); after a `Dense` without
    bias the first is :math:`e^{-\gamma |x - x'|^2 / d}`. :math:`v_1 + v_2 - 2c \ge 0`, so the
    exponent is never positive.

    Args:
        gamma: 1 / (2 l^2) for the length scale l, > 0 (default 1).
    """

    def __init__(self, gamma: float = 1.0) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"Rbf: gamma must be a finite number > 0, got {gamma!r}.")
        self.gamma = float(gamma)
        self._rate = math.sqrt(2 * self.gamma)
        super().__init__(self._forward, self._derivative, name=f"rbf({self.gamma!r})")

    def __repr__(self) -> str:
        return f"Rbf(gamma={self.gamma!r})"

    def config(self) -> dict:
        """The constructor's keyword arguments: ``Rbf(**act.config())`` rebuilds it."""
        return {"gamma": self.gamma}

    def _forward(self, x: Tensor) -> Tensor:
        return math.sqrt(2) * torch.sin(self._rate * x + math.pi / 4)

    def _derivative(self, x: Tensor) -> Tensor:
        return math.sqrt(2) * self._rate * torch.cos(self._rate * x + math.pi / 4)

    def check(self) -> None:
        """Nothing to check: the function and its derivative are built in."""

    def expectations(self, var1, var2, cov, derivative=True, overwrite=False):
        ess = torch.exp(-self.gamma * (var1 + var2 - 2 * cov).clamp(min=0))
        return ess, (2 * self.gamma * ess if derivative else None)
