"""Polynomials p(x) = sum_i c_i x^i and monomials x^k, through Hermite expansions.

For u ~ N(0, var), the probabilists' Hermite polynomials He_m(u / sqrt(var)) are orthogonal, and
for a centred Gaussian pair (u, v) of correlation rho, E[He_m(u/s1) He_n(v/s2)] = delta_mn m! rho^m.
Expanding x^i = sum_m a_im He_m(x) with a_im = C(i, m) (i - m - 1)!! (i - m even, else 0), the
factors sqrt(var) combine into whole powers of the variances and of the covariance:

    p(u) = sum_m P_m(var) var^(m/2) He_m(u / sqrt(var)),   P_m(var) = sum_j c_{m+2j} a_{m+2j,m} var^j,
    E[p(u) p(v)] = sum_m m! cov^m P_m(var1) P_m(var2).

(P_m(var) = E[p^(m)(u)] / m!, the m-th Gaussian-smoothed Taylor coefficient.) The same with the
coefficients of p' gives E[p'(u) p'(v)]. Both are polynomials in (var1, var2, cov): no square root
and no division, so they are smooth everywhere, zero variances and rho = +-1 included, and
differentiable to any order by autograd and torch.func. For a monomial only one parity of m
appears, so every term has the same sign and nothing cancels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import cache

import torch
from torch import Tensor

from .arccosine import MAX_DEGREE, check_degree
from .base import Activation


def _double_factorial(n: int) -> int:
    return math.prod(range(n, 0, -2)) if n > 0 else 1


@cache
def hermite_coefficient(i: int, m: int) -> int:
    """a_im in x^i = sum_m a_im He_m(x): C(i, m) (i - m - 1)!! for i - m even and >= 0, else 0."""
    if m > i or (i - m) % 2:
        return 0
    return math.comb(i, m) * _double_factorial(i - m - 1)


def hermite_series(coefficients: Sequence[float]) -> list[list[float]]:
    """[P_0, P_1, ...]: the coefficients (ascending powers of var) of each P_m(var) above."""
    degree = len(coefficients) - 1
    return [[coefficients[i] * hermite_coefficient(i, m) for i in range(m, degree + 1, 2)]
            for m in range(degree + 1)]


def _poly(coefficients: Sequence[float], x: Tensor) -> Tensor:
    """sum_j coefficients[j] x^j by Horner's rule (coefficients non-empty)."""
    out = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * x + c
    return out


def hermite_expectation(series: list[list[float]], var1: Tensor, var2: Tensor, cov: Tensor) -> Tensor:
    """sum_m m! cov^m P_m(var1) P_m(var2), by Horner's rule in cov, in the broadcast shape of the three."""
    out = var1 * 0 + var2 * 0 + cov * 0      # the broadcast shape, connected to all three for autograd
    for m in reversed(range(len(series))):
        out = out * cov
        if any(series[m]):
            out = out + float(math.factorial(m)) * _poly(series[m], var1) * _poly(series[m], var2)
    return out


class Polynomial(Activation):
    r""":math:`p(x) = c_0 + c_1 x + \dots + c_n x^n` (``coefficients`` in ascending order, as in
    ``numpy.polynomial.Polynomial`` and neural-tangents' ``stax.Polynomial``). With variances
    :math:`v_1, v_2` and covariance :math:`c`,

    .. math::

        \mathbb E[p(u)\, p(v)] = \sum_m c^m\, m!\, P_m(v_1)\, P_m(v_2), \qquad
        P_m(v) = \frac{\mathbb E[p^{(m)}(u)]}{m!}, \quad u \sim \mathcal N(0, v),

    and :math:`\mathbb E[p'(u)\, p'(v)]` the same with :math:`p'` for :math:`p` (module
    docstring): exact polynomials in :math:`(v_1, v_2, c)`. Only Lipschitz for degree
    :math:`\le 1`, so the paper's theorems do not cover it; the kernels are defined all the same.

    Args:
        coefficients: real numbers :math:`c_0, \dots, c_n`, at most 65 of them (degree
            :math:`\le 64`).
    """

    def __init__(self, coefficients: Sequence[float]) -> None:
        self.coefficients = _check_coefficients(coefficients)
        slope = [i * c for i, c in enumerate(self.coefficients)][1:] or [0.0]
        self._value_series = hermite_series(self.coefficients)
        self._slope_series = hermite_series(slope)
        self._slope = tuple(slope)
        super().__init__(self._forward, self._derivative, name=self._name())

    def _name(self) -> str:
        return "polynomial(" + ", ".join(f"{c!r}" for c in self.coefficients) + ")"

    def __repr__(self) -> str:
        return f"Polynomial({list(self.coefficients)!r})"

    def config(self) -> dict:
        """The constructor's keyword arguments: ``Polynomial(**act.config())`` rebuilds it."""
        return {"coefficients": list(self.coefficients)}

    def _forward(self, x: Tensor) -> Tensor:
        return _poly(self.coefficients, x)

    def _derivative(self, x: Tensor) -> Tensor:
        return _poly(self._slope, x)

    def check(self) -> None:
        """Nothing to check: the function and its derivative are built in."""

    def expectations(self, var1: Tensor, var2: Tensor, cov: Tensor, derivative: bool = True,
                     overwrite: bool = False) -> tuple[Tensor, Tensor | None]:
        ess = hermite_expectation(self._value_series, var1, var2, cov)
        edd = hermite_expectation(self._slope_series, var1, var2, cov) if derivative else None
        return ess, edd


def _check_coefficients(coefficients: object) -> tuple[float, ...]:
    if getattr(coefficients, "ndim", None) == 1 and hasattr(coefficients, "tolist"):   # a tensor or numpy array
        coefficients = coefficients.tolist()
    if isinstance(coefficients, (str, bytes)) or not isinstance(coefficients, Sequence):
        raise TypeError(f"Polynomial: coefficients must be a sequence of real numbers c_0, c_1, ... "
                        f"(ascending powers), got {type(coefficients).__name__}.")
    if not 1 <= len(coefficients) <= MAX_DEGREE + 1:
        raise ValueError(f"Polynomial: give between 1 and {MAX_DEGREE + 1} coefficients (degree <= {MAX_DEGREE}), "
                         f"got {len(coefficients)}.")
    out = []
    for i, c in enumerate(coefficients):
        if isinstance(c, bool) or not isinstance(c, numbers.Real):
            raise TypeError(f"Polynomial: coefficient {i} must be a real number, got {c!r}.")
        if not math.isfinite(c):
            raise ValueError(f"Polynomial: coefficient {i} must be finite, got {c}.")
        out.append(float(c))
    return tuple(out)


class Monomial(Polynomial):
    r""":math:`x^k` for an integer :math:`k \ge 0`: the `Polynomial` with :math:`c_k = 1` and the
    others 0, so with variances :math:`v_1, v_2` and covariance :math:`c`

    .. math::

        \mathbb E[u^k v^k] = \sum_m c^m\, m!\, a_{km}^2 (v_1 v_2)^{(k - m)/2}, \qquad
        a_{km} = \binom{k}{m} (k - m - 1)!!,

    e.g. :math:`\mathbb E[u^2 v^2] = v_1 v_2 + 2 c^2`. neural-tangents 0.6.5's ``stax.Monomial``
    stops at :math:`k = 5`; here :math:`k` goes to 64.

    Args:
        degree: the power :math:`k`, an integer in [0, 64].
    """

    def __init__(self, degree: int) -> None:
        self.degree = check_degree(degree, "Monomial")
        super().__init__([0.0] * self.degree + [1.0])

    def _name(self) -> str:
        return f"monomial({self.degree})"

    def __repr__(self) -> str:
        return f"Monomial({self.degree})"

    def config(self) -> dict:
        """The constructor's keyword arguments: ``Monomial(**act.config())`` rebuilds it."""
        return {"degree": self.degree}

    def _forward(self, x: Tensor) -> Tensor:
        return x ** self.degree


def _hermite_coefficients(degree: int) -> list[float]:
    """Ascending coefficients of He_n(x) / sqrt(n!), from He_{m+1} = x He_m - m He_{m-1} (integers)."""
    previous, current = [1], [0, 1]
    if degree == 0:
        return [1.0]
    for m in range(1, degree):
        shifted = [0, *current]
        lowered = [m * c for c in previous] + [0, 0]
        previous, current = current, [a - b for a, b in zip(shifted, lowered, strict=True)]
    norm = math.sqrt(math.factorial(degree))
    return [c / norm for c in current]


def hermite_kernel(degree: int, var1: Tensor, var2: Tensor, cov: Tensor) -> Tensor:
    """E[h_n(u) h_n(v)] for h_n = He_n / sqrt(n!) and a centred Gaussian pair of any variances:

        sum_j n! / (j!^2 (n - 2j)!) cov^(n - 2j) ((var1 - 1)(var2 - 1) / 4)^j,

    from He_n(s z) = sum_j n! / (j! (n - 2j)!) s^(n - 2j) ((s^2 - 1) / 2)^j He_(n - 2j)(z). At unit
    variances only j = 0 remains: cov^n, with no cancellation."""
    spread = (var1 - 1) * (var2 - 1) / 4
    out = var1 * 0 + var2 * 0 + cov * 0      # the broadcast shape, connected to all three for autograd
    for j in range(degree // 2 + 1):         # terms of the closed form, not data points
        weight = math.factorial(degree) / (math.factorial(j) ** 2 * math.factorial(degree - 2 * j))
        out = out + weight * cov ** (degree - 2 * j) * spread ** j
    return out


class Hermite(Polynomial):
    r"""The normalised probabilists' Hermite polynomial :math:`h_n(x) = \mathrm{He}_n(x) / \sqrt{n!}`,
    neural-tangents' ``stax.Hermite(degree)``: :math:`E[h_n(z)^2] = 1` for :math:`z \sim N(0, 1)`.
    In closed form, for a centred Gaussian pair of any variances :math:`v_1, v_2` and covariance
    :math:`c`,

    .. math::

        E[h_n(u) h_n(v)] = \sum_{j \le n/2} \frac{n!}{j!^2 (n - 2j)!}\, c^{n - 2j}
            \left(\frac{(v_1 - 1)(v_2 - 1)}{4}\right)^j, \qquad
        E[h_n'(u) h_n'(v)] = n\, E[h_{n-1}(u) h_{n-1}(v)]

    (:math:`h_n' = \sqrt n\, h_{n-1}`), which at unit variances (after `LayerNorm`, where
    neural-tangents' formula applies) are :math:`c^n` and :math:`n c^{n-1}`.

    Args:
        degree: n, an integer in [0, 64].
    """

    def __init__(self, degree: int) -> None:
        self.degree = check_degree(degree, "Hermite")
        super().__init__(_hermite_coefficients(self.degree))

    @property
    def odd(self) -> bool:
        """h_n is odd for odd n (then h_n of a centred Gaussian has mean zero)."""
        return self.degree % 2 == 1

    def _name(self) -> str:
        return f"hermite({self.degree})"

    def __repr__(self) -> str:
        return f"Hermite({self.degree})"

    def config(self) -> dict:
        """The constructor's keyword arguments: ``Hermite(**act.config())`` rebuilds it."""
        return {"degree": self.degree}

    def expectations(self, var1: Tensor, var2: Tensor, cov: Tensor, derivative: bool = True,
                     overwrite: bool = False) -> tuple[Tensor, Tensor | None]:
        n = self.degree
        ess = hermite_kernel(n, var1, var2, cov)
        if not derivative:
            return ess, None
        edd = n * hermite_kernel(n - 1, var1, var2, cov) if n > 0 else torch.zeros_like(ess)
        return ess, edd
