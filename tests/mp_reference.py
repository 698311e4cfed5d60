"""High-precision references for the infinite-width kernels, independent of torchntk's formulas.

E[f(u) g(v)] for (u, v) ~ N(0, [[v1, c], [c, v2]]) is reduced to a 1-D integral by writing
u = s1 z1, v = s2 (rho z1 + r z2), r = sqrt(1 - rho^2):

    E[f(u) g(v)] = int phi(z1) f(s1 z1) h(s2 rho z1, s2 r) dz1,   h(m, s) = E[g(m + s z)]

where h is a textbook 1-D Gaussian integral for each g (listed in INNER), and the outer
integral is done by mpmath's tanh-sinh quadrature at 30 digits, split at the kink z1 = 0.
None of torchntk's 2-D closed forms (arc-cosines, arcsin, Price's theorem) is used.
"""

from __future__ import annotations

import mpmath as mp

mp.mp.dps = 30
SQRT2PI = mp.sqrt(2 * mp.pi)


def _phi(x):
    return mp.exp(-x * x / 2) / SQRT2PI


def _Phi(x):
    return mp.ncdf(x)


def _relu_mean(m, s):
    """E[relu(m + s z)] = m Phi(m/s) + s phi(m/s)."""
    if s == 0:
        return max(m, mp.mpf(0))
    return m * _Phi(m / s) + s * _phi(m / s)


def _step_mean(m, s):
    """E[1{m + s z > 0}] = Phi(m/s)."""
    if s == 0:
        return mp.mpf(1) if m > 0 else mp.mpf(0)
    return _Phi(m / s)


def _piecewise(a, b):
    a, b = mp.mpf(a), mp.mpf(b)

    def f(x):
        return a * x if x > 0 else b * x

    def df(x):
        return a if x > 0 else (b if x < 0 else mp.mpf(0))

    def mean_f(m, s):   # a relu(x) - b relu(-x)
        return a * _relu_mean(m, s) - b * _relu_mean(-m, s)

    def mean_df(m, s):
        up = _step_mean(m, s)
        down = _step_mean(-m, s)
        return a * up + b * down

    return f, df, mean_f, mean_df


def _erf_means():
    def mean_f(m, s):      # E[erf(m + s z)] = erf(m / sqrt(1 + 2 s^2))
        return mp.erf(m / mp.sqrt(1 + 2 * s * s))

    def mean_df(m, s):     # E[2/sqrt(pi) exp(-(m + s z)^2)]
        q = 1 + 2 * s * s
        return 2 / mp.sqrt(mp.pi) * mp.exp(-m * m / q) / mp.sqrt(q)

    return mp.erf, lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x), mean_f, mean_df


def _trig(kind):
    damp = lambda s: mp.exp(-s * s / 2)  # noqa: E731  E[e^{i s z}]
    if kind == "sin":
        return mp.sin, mp.cos, lambda m, s: mp.sin(m) * damp(s), lambda m, s: mp.cos(m) * damp(s)
    return mp.cos, lambda x: -mp.sin(x), lambda m, s: mp.cos(m) * damp(s), lambda m, s: -mp.sin(m) * damp(s)


def _gelu_means():
    # X ~ N(m, s^2): E[Phi(X)] = Phi(m / k), E[phi(X)] = phi(m / k) / k with k = sqrt(1 + s^2);
    # Stein: E[X Phi(X)] = m E[Phi(X)] + s^2 E[phi(X)], E[X phi(X)] = m phi(m/k) / k^3.
    def mean_f(m, s):
        k = mp.sqrt(1 + s * s)
        return m * _Phi(m / k) + s * s * _phi(m / k) / k

    def mean_df(m, s):
        k = mp.sqrt(1 + s * s)
        return _Phi(m / k) + m * _phi(m / k) / k**3

    return (lambda x: x * _Phi(x)), (lambda x: _Phi(x) + x * _phi(x)), mean_f, mean_df


ACTIVATIONS = {
    "relu": _piecewise(1, 0), "leaky_relu": _piecewise(1, 0.01), "abs": _piecewise(1, -1),
    "identity": _piecewise(1, 1), "erf": _erf_means(), "sin": _trig("sin"), "cos": _trig("cos"),
    "gelu": _gelu_means(),
}
"""name -> (f, f', h_f, h_f') with h_g(m, s) = E[g(m + s z)], z ~ N(0, 1)."""


def expectation(f, mean_g, v1, v2, c):
    """E[f(u) g(v)] by the 1-D reduction, 30 digits."""
    v1, v2, c = mp.mpf(v1), mp.mpf(v2), mp.mpf(c)
    s1, s2 = mp.sqrt(v1), mp.sqrt(v2)
    if s1 == 0:
        return f(mp.mpf(0)) * mean_g(mp.mpf(0), s2)
    if s2 == 0:
        return mean_g(mp.mpf(0), mp.mpf(0)) * mp.quad(lambda z: _phi(z) * f(s1 * z), [-mp.inf, 0, mp.inf])
    rho = max(min(c / (s1 * s2), mp.mpf(1)), mp.mpf(-1))
    r = mp.sqrt(1 - rho * rho)
    return mp.quad(lambda z: _phi(z) * f(s1 * z) * mean_g(s2 * rho * z, s2 * r), [-mp.inf, 0, mp.inf])


def expectations(name, v1, v2, c, slope=None):
    """(E[s(u) s(v)], E[s'(u) s'(v)]) for a named activation, 30 digits."""
    f, df, mean_f, mean_df = _piecewise(1, slope) if slope is not None else ACTIVATIONS[name]
    return expectation(f, mean_f, v1, v2, c), expectation(df, mean_df, v1, v2, c)


def kernels(name, x1, x2, depth, bias_std, weight_std=1.0):
    """[(Sigma(l)(x1, x2), Theta(l)(x1, x2)) for l = 1..depth] by the paper's recursion with the
    expectations above. x1, x2: sequences of floats (one input each)."""
    w2, b2 = mp.mpf(weight_std) ** 2, mp.mpf(bias_std) ** 2
    n0 = len(x1)
    dot = lambda a, b: mp.fsum(mp.mpf(p) * mp.mpf(q) for p, q in zip(a, b, strict=False)) / n0  # noqa: E731
    s11, s22, s12 = w2 * dot(x1, x1) + b2, w2 * dot(x2, x2) + b2, w2 * dot(x1, x2) + b2
    theta = s12
    out = [(s12, theta)]
    for _ in range(depth - 1):
        e12, d12 = expectations(name, s11, s22, s12)
        e11, _ = expectations(name, s11, s11, s11)
        e22 = e11 if s22 == s11 else expectations(name, s22, s22, s22)[0]
        s11, s22, s12 = w2 * e11 + b2, w2 * e22 + b2, w2 * e12 + b2
        theta = theta * w2 * d12 + s12
        out.append((s12, theta))
    return out
