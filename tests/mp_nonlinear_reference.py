"""30-digit references for the rectified monomials, polynomials, exponentials, Gaussians and sign,
by the 1-D reduction of mp_reference (outer integral by mpmath's tanh-sinh quadrature, split at
the kink z1 = 0) with textbook inner Gaussian integrals h(m, s) = E[g(m + s z)], z ~ N(0, 1):

    relu(x)^k:   sum_j C(k, j) m^(k-j) s^j T_j(-m/s),  T_j(a) = int_a^inf z^j phi(z) dz,
                 T_0 = Phi(-a), T_1 = phi(a), T_j = a^(j-1) phi(a) + (j-1) T_(j-2)   (by parts)
    x^i:         sum_(j even) C(i, j) m^(i-j) s^j (j-1)!!                     (binomial moments)
    a e^(b x):   a exp(b m + b^2 s^2 / 2)                                    (moment generating fn)
    a e^(b x^2): a q^(-1/2) exp(b m^2 / q), q = 1 - 2 b s^2                   (completing the square)
    x e^(b x^2): m q^(-3/2) exp(b m^2 / q)                                   (same, first moment)
    sign(x):     erf(m / (s sqrt 2))

None of torchntk's formulas (arc-cosine polynomials, Hermite series, Price's theorem) is used.
Polynomials need no quadrature: their expectations are finite sums of Gaussian moments (class
Polynomial). f' is None where the derivative is not a function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import mpmath as mp
from mp_reference import _Phi, _phi, expectation

mp.mp.dps = 30


class Reduced(NamedTuple):
    """f, f' (None where it is not a function), h_f, h_f'; ``positive``: f vanishes for x <= 0,
    so the outer integral runs over z1 > 0 only."""

    f: Callable
    df: Callable | None
    mean_f: Callable
    mean_df: Callable | None
    positive: bool = False

    def expectation(self, f, mean_g, v1, v2, c):
        if not self.positive:
            return expectation(f, mean_g, v1, v2, c)
        # mp_reference.expectation's 1-D reduction, with the outer integral over z1 > 0 only.
        v1, v2, c = mp.mpf(v1), mp.mpf(v2), mp.mpf(c)
        s1, s2 = mp.sqrt(v1), mp.sqrt(v2)
        if s1 == 0:
            return mp.mpf(0)
        if s2 == 0:
            return mean_g(mp.mpf(0), mp.mpf(0)) * mp.quad(lambda z: _phi(z) * f(s1 * z), [0, mp.inf])
        rho = max(min(c / (s1 * s2), mp.mpf(1)), mp.mpf(-1))
        r = mp.sqrt(1 - rho * rho)
        return mp.quad(lambda z: _phi(z) * f(s1 * z) * mean_g(s2 * rho * z, s2 * r), [0, mp.inf])


def _truncated_moments(k, a):
    """[T_0(a), ..., T_k(a)]."""
    t = [_Phi(-a), _phi(a)]
    for j in range(2, k + 1):
        t.append(a ** (j - 1) * _phi(a) + (j - 1) * t[j - 2])
    return t[:k + 1]


def _rectified_power(k):
    binomials = [math.comb(k, j) for j in range(k + 1)]

    def f(x):
        return x**k if x > 0 else mp.mpf(0)

    def mean(m, s):
        if s == 0:
            return f(m)
        t = _truncated_moments(k, -m / s)
        return mp.fsum(binomials[j] * m ** (k - j) * s**j * t[j] for j in range(k + 1))

    return f, mean


def rectified_monomial(k):
    f, mean_f = _rectified_power(k)
    if k == 0:
        return Reduced(f, None, mean_f, None, positive=True)
    g, mean_g = _rectified_power(k - 1)
    return Reduced(f, (lambda x: k * g(x)), mean_f, (lambda m, s: k * mean_g(m, s)), positive=True)


def _gaussian_moment(j):
    return 0 if j % 2 else math.prod(range(j - 1, 0, -2))


class Polynomial:
    """A polynomial's expectations as exact finite sums of Gaussian moments: with u = s1 z1,
    v = s2 (rho z1 + r z2), z1, z2 independent standard normals,

        E[u^i v^j] = s1^i s2^j sum_l C(j, l) rho^l r^(j-l) E[z1^(i+l)] E[z2^(j-l)]

    (no quadrature needed, and no Hermite expansion used)."""

    def __init__(self, coefficients):
        self.value = [mp.mpf(x) for x in coefficients]
        self.slope = [i * x for i, x in enumerate(self.value)][1:] or [mp.mpf(0)]

    @staticmethod
    def moment(i, j, s1, s2, rho, r):
        return s1**i * s2**j * mp.fsum(math.comb(j, l) * rho**l * r ** (j - l) * _gaussian_moment(i + l)
                                       * _gaussian_moment(j - l) for l in range(j + 1))

    def expectation(self, coefficients, v1, v2, c):
        v1, v2, c = mp.mpf(v1), mp.mpf(v2), mp.mpf(c)
        s1, s2 = mp.sqrt(v1), mp.sqrt(v2)
        rho = c / (s1 * s2) if s1 * s2 > 0 else mp.mpf(0)
        rho = max(min(rho, mp.mpf(1)), mp.mpf(-1))
        r = mp.sqrt(1 - rho * rho)
        return mp.fsum(p * q * self.moment(i, j, s1, s2, rho, r)
                       for i, p in enumerate(coefficients) for j, q in enumerate(coefficients))


def polynomial(coefficients):
    return Polynomial(coefficients)


def exponential(a, b):
    a, b = mp.mpf(a), mp.mpf(b)
    return Reduced(lambda x: a * mp.exp(b * x), lambda x: a * b * mp.exp(b * x),
                   lambda m, s: a * mp.exp(b * m + b * b * s * s / 2),
                   lambda m, s: a * b * mp.exp(b * m + b * b * s * s / 2))


def gaussian(a, b):
    a, b = mp.mpf(a), mp.mpf(b)

    def mean_f(m, s):
        q = 1 - 2 * b * s * s
        return a * mp.exp(b * m * m / q) / mp.sqrt(q)

    def mean_df(m, s):
        q = 1 - 2 * b * s * s
        return 2 * a * b * m * mp.exp(b * m * m / q) / q**1.5

    return Reduced(lambda x: a * mp.exp(b * x * x), lambda x: 2 * a * b * x * mp.exp(b * x * x), mean_f, mean_df)


def sign():
    def mean(m, s):
        return mp.sign(m) if s == 0 else mp.erf(m / (s * mp.sqrt(2)))

    return Reduced(mp.sign, None, mean, None)


def expectations(entry, v1, v2, c):
    """(E[s(u) s(v)], E[s'(u) s'(v)] or None) at 30 digits, for an entry above."""
    if isinstance(entry, Polynomial):
        return entry.expectation(entry.value, v1, v2, c), entry.expectation(entry.slope, v1, v2, c)
    ess = entry.expectation(entry.f, entry.mean_f, v1, v2, c)
    return ess, (None if entry.df is None else entry.expectation(entry.df, entry.mean_df, v1, v2, c))


@cache
def second_moments(entry, v):
    """(E[s(u)^2], E[s'(u)^2] or None) for u ~ N(0, v): sqrt(E[s(u)^2] E[s(v)^2]) bounds
    |E[s(u) s(v)]| (Cauchy-Schwarz), the natural scale of the kernel entry."""
    return expectations(entry, v, v, v)
