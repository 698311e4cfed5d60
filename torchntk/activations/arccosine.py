"""Rectified monomials max(x, 0)^k and the sign function: the arc-cosine family, in closed form.

For unit Gaussians (z1, z2) of correlation rho = cos(theta), Cho and Saul (2009) give

    F_n(rho) = E[relu(z1)^n relu(z2)^n] = J_n(theta) / (2 pi),
    J_n(theta) = (-1)^n sin(theta)^(2n+1) (1/sin(theta) d/dtheta)^n ((pi - theta) / sin(theta)).

Carrying out the n derivatives (d/drho = -1/sin(theta) d/dtheta) gives two polynomials with
non-negative integer coefficients,

    J_n = A_n(rho) (pi - theta) + B_n(rho) sqrt(1 - rho^2),
    A_0 = 1, B_0 = 0,   A_{n+1} = (1 - rho^2) A_n' + (2n + 1) rho A_n,
                        B_{n+1} = (1 - rho^2) B_n' + 2n rho B_n + A_n

(J_1 = sin + (pi - theta) cos, J_2 = 3 sin cos + (pi - theta)(1 + 2 cos^2), as in Cho and Saul).
With general variances E[relu(u)^n relu(v)^n] = sqrt(var1 var2)^n F_n(rho), and Price's theorem
d/dcov E[f(u) g(v)] = E[f'(u) g'(v)] gives the derivative term

    E[s'(u) s'(v)] = k^2 sqrt(var1 var2)^(k-1) F_{k-1}(rho),     and dF_n/drho = n^2 F_{n-1}.

That last identity is the derivative `_RectifiedCorrelation` hands to autograd: finite at
rho = +-1 for n >= 1 (autograd through arccos and sqrt would give inf - inf there).

At zero variance the Gaussian is the constant 0, so E[s(0) s(v)] = s(0) E[s(v)], with s(0) as
the finite network computes it: 0 for every rectified monomial (1{0 > 0} = 0 for the step, and
autograd's relu'(0) = 0 for k = 1), and sign(0) = 0.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import Tensor

from ..numerics import safe_reciprocal, safe_sqrt, snap_width
from .base import Activation

MAX_DEGREE = 64
"""Largest degree accepted: E[relu(u)^(2k)] = (2k - 1)!! var^k / 2 is ~1e106 var^64 at k = 64 and
leaves float64's range soon after for any variance above 1."""


def check_degree(degree: object, owner: str) -> int:
    """``degree`` as an int in [0, MAX_DEGREE], or a clear TypeError / ValueError."""
    if isinstance(degree, bool) or not isinstance(degree, int):
        raise TypeError(f"{owner}: degree must be an integer >= 0, got {degree!r} ({type(degree).__name__}).")
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"{owner}: degree must be between 0 and {MAX_DEGREE}, got {degree} (the Gaussian "
                         "moments of higher powers overflow float64).")
    return degree


def correlation(var1: Tensor, var2: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """(rho, sqrt(var1 var2)) as `torchntk.numerics.correlation` computes them (clamped, snapped to
    exactly 1 within `snap_width`), but with rho = 0 and a zero derivative where a variance is 0:
    dividing by a tiny stand-in there makes forward-mode tangents ~1e308, which overflow to inf
    against F_k' for k >= 4 before the factor sqrt(var1 var2)^k = 0 can cancel them."""
    norm = safe_sqrt(var1 * var2)
    rho = (cov * safe_reciprocal(norm)).clamp(-1.0, 1.0)
    return torch.where(rho > 1 - snap_width(rho.dtype), 1.0, rho), norm


# -- the polynomials A_n, B_n ---------------------------------------------------------------

def _derivative(p: list[int]) -> list[int]:
    return [i * c for i, c in enumerate(p)][1:] or [0]


def _add(*polys: list[int]) -> list[int]:
    out = [0] * max(len(p) for p in polys)
    for p in polys:
        for i, c in enumerate(p):
            out[i] += c
    return out


def _times_monomial(p: list[int], scale: int, power: int) -> list[int]:
    return [0] * power + [scale * c for c in p]


@cache
def arccos_polynomials(n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(A_n, B_n): coefficients in ascending powers of rho, exact integers (see the module)."""
    a, b = [1], [0]
    for m in range(n):
        da, db = _derivative(a), _derivative(b)
        a, b = (_add(da, _times_monomial(da, -1, 2), _times_monomial(a, 2 * m + 1, 1)),
                _add(db, _times_monomial(db, -1, 2), _times_monomial(b, 2 * m, 1), a))
    return _trimmed(a), _trimmed(b)


def _trimmed(p: list[int]) -> tuple[int, ...]:
    while len(p) > 1 and p[-1] == 0:
        p = p[:-1]
    return tuple(p)


def _horner(coefficients: tuple[int, ...], x: Tensor) -> Tensor:
    out = torch.full_like(x, float(coefficients[-1]))
    for c in reversed(coefficients[:-1]):
        out = out * x + float(c)
    return out


def _rectified_value(rho: Tensor, n: int) -> Tensor:
    """F_n(rho). pi - theta is written arccos(-rho), and 1 - rho^2 as (1 - rho)(1 + rho), so both
    keep their relative accuracy near rho = -1 (where F_n itself is small, ~(pi - theta)^(2n+1),
    and is known to round-off relative to F_n(1) only: the two terms cancel)."""
    a, b = arccos_polynomials(n)
    angle = torch.arccos(-rho)
    value = _horner(a, rho) * angle
    if n:
        value = value + _horner(b, rho) * ((1 - rho) * (1 + rho)).clamp_min(0).sqrt()
    return value / (2 * math.pi)


class _RectifiedCorrelation(torch.autograd.Function):
    """F_n(rho) with the derivative n^2 F_{n-1}(rho) (Price's theorem), itself differentiable
    again through this Function; F_0' = 1 / (2 pi sqrt(1 - rho^2)) uses max(1 - rho^2, eps), as
    `torchntk.numerics.arccos_kernels` does, where it is infinite (the step kernel's cusp)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(rho: Tensor, n: int) -> Tensor:
        return _rectified_value(rho, n)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        rho, n = inputs
        ctx.n = n
        ctx.save_for_backward(rho)
        ctx.save_for_forward(rho)

    @staticmethod
    def _slope(rho: Tensor, n: int) -> Tensor:
        if n == 0:
            eps = torch.finfo(rho.dtype).eps
            return 1 / (2 * math.pi * torch.sqrt(((1 - rho) * (1 + rho)).clamp_min(eps)))
        return n * n * _RectifiedCorrelation.apply(rho, n - 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (rho,) = ctx.saved_tensors
        return grad * _RectifiedCorrelation._slope(rho, ctx.n), None

    @staticmethod
    def jvp(ctx, tangent: Tensor, _n: None) -> Tensor:
        (rho,) = ctx.saved_tensors
        return tangent * _RectifiedCorrelation._slope(rho, ctx.n)


def rectified_correlation(rho: Tensor, n: int) -> Tensor:
    """F_n(rho) = E[relu(z1)^n relu(z2)^n] for unit Gaussians of correlation rho (module docstring)."""
    return _RectifiedCorrelation.apply(rho, n)


class _ArcSin(torch.autograd.Function):
    """arcsin(rho) / (pi / 2) = E[sign(z1) sign(z2)], with derivative 1 / ((pi/2) sqrt(max(1 - rho^2,
    eps))): finite at rho = +-1, where the kernel has a cusp. Dividing by the float pi/2 that
    arcsin(1) returns makes the diagonal exactly 1."""

    generate_vmap_rule = True

    @staticmethod
    def forward(rho: Tensor) -> Tensor:
        return torch.arcsin(rho) / (math.pi / 2)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def _slope(rho: Tensor) -> Tensor:
        eps = torch.finfo(rho.dtype).eps
        return 1 / (math.pi / 2 * torch.sqrt(((1 - rho) * (1 + rho)).clamp_min(eps)))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (rho,) = ctx.saved_tensors
        return grad * _ArcSin._slope(rho)

    @staticmethod
    def jvp(ctx, tangent: Tensor) -> Tensor:
        (rho,) = ctx.saved_tensors
        return tangent * _ArcSin._slope(rho)


# -- functions whose derivative is not a function -----------------------------------------

def _no_derivative_message(what: str) -> str:
    """Why ``what`` (the activation's repr) has no NTK nor gradients, and what to do instead."""
    return (f"{what} has no derivative as a function (it is 0 almost everywhere and a Dirac delta at 0), "
            "so its NTK, which needs E[s'(u) s'(v)], and gradients through it are undefined. Ask for the "
            "NNGP only (spec.nngp(...); --kind nngp on the command line); in a finite network, freeze the "
            "layers below it (requires_grad_(False)); or use a smooth stand-in such as tn.Erf().")


class _Jump(torch.autograd.Function):
    """sign(x) or the step 1{x > 0}, whose backward and forward-mode derivatives raise a clear
    ValueError instead of autograd's silent 0 (which would drop every layer below from an
    empirical NTK and from training without a word)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, what: str) -> Tensor:
        return torch.sign(x) if what == "Sign()" else (x > 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.what = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        raise ValueError(_no_derivative_message(ctx.what))

    @staticmethod
    def jvp(ctx, tangent: Tensor, _what: None) -> Tensor:
        raise ValueError(_no_derivative_message(ctx.what))


def _no_ntk_error(what: str) -> ValueError:
    """The ValueError (returned, for the caller to raise) of `_no_derivative_message`."""
    return ValueError(_no_derivative_message(what))


# -- the activations ----------------------------------------------------------------------------

class RectifiedMonomial(Activation):
    r""":math:`\max(x, 0)^k`, i.e. :math:`x^k` for :math:`x > 0` and 0 for :math:`x \le 0`, for an
    integer :math:`k \ge 0` (:math:`k = 1` is ReLU; :math:`k = 0` is the Heaviside step
    :math:`1\{x > 0\}`). The arc-cosine kernel of order :math:`k` (Cho and Saul 2009), with
    variances :math:`v_1, v_2` and correlation :math:`\rho = \cos\theta`:

    .. math::

        \mathbb E[s(u)\, s(v)] = \sqrt{v_1 v_2}^{\,k} F_k(\rho),

        \mathbb E[s'(u)\, s'(v)] = k^2 \sqrt{v_1 v_2}^{\,k-1} F_{k-1}(\rho), \qquad
        F_n = \frac{J_n}{2\pi}

    (module docstring). Exact for every :math:`k`, at :math:`\rho = \pm 1` and at zero variance
    included.

    The step (:math:`k = 0`) has no derivative as a function: its NNGP is
    :math:`(\pi - \theta) / (2\pi)`, and asking for its NTK, or back-propagating through it in
    a finite network, raises a ValueError.

    Differences from neural-tangents 0.6.5's ``stax.RectifiedMonomial``: there the step is
    :math:`1\{x \ge 0\}` (the two differ only at :math:`x = 0`, which matters only at zero
    variance); its NTK for :math:`k = 0` is 0 instead of an error; and its kernels are NaN
    wherever :math:`\rho = 1` (the diagonal, duplicate inputs: it divides by
    :math:`\sin\theta`), hence everywhere after a second such layer (measured for
    :math:`k = 0, \dots, 4`; where it is finite the two agree to 4e-15).

    Args:
        degree: the power :math:`k`, an integer in [0, 64].
    """

    def __init__(self, degree: int) -> None:
        self.degree = check_degree(degree, "RectifiedMonomial")
        super().__init__(self._forward, None if self.degree == 0 else self._derivative,
                         name=f"rectified_monomial({self.degree})")

    def __repr__(self) -> str:
        return f"RectifiedMonomial({self.degree})"

    def config(self) -> dict:
        """The constructor's keyword arguments: ``RectifiedMonomial(**act.config())`` rebuilds it."""
        return {"degree": self.degree}

    def _forward(self, x: Tensor) -> Tensor:
        if self.degree == 0:
            return _Jump.apply(x, repr(self))
        # relu's derivative at 0 is 0 (autograd's choice too), so s'(0) = 0 for every k >= 1.
        return torch.relu(x) if self.degree == 1 else torch.relu(x) ** self.degree

    def _derivative(self, x: Tensor) -> Tensor:
        k = self.degree
        if k == 1:
            return (x > 0).to(x.dtype)
        return k * torch.relu(x) if k == 2 else k * torch.relu(x) ** (k - 1)

    def grad(self, x: Tensor) -> Tensor:
        if self.degree == 0:
            raise _no_ntk_error(repr(self))
        return self._derivative(x)

    def check(self) -> None:
        """Nothing to check: the function and its derivative are built in."""

    def expectations(self, var1: Tensor, var2: Tensor, cov: Tensor, derivative: bool = True,
                     overwrite: bool = False) -> tuple[Tensor, Tensor | None]:
        k = self.degree
        if derivative and k == 0:
            raise _no_ntk_error(repr(self))
        rho, norm = correlation(var1, var2, cov)
        ess = _scaled(rectified_correlation(rho, k), norm, k)
        if not derivative:
            return ess, None
        return ess, k * k * _scaled(rectified_correlation(rho, k - 1), norm, k - 1)


def _scaled(value: Tensor, norm: Tensor, power: int) -> Tensor:
    """norm^power * value; for power 0, where norm = 0 (a zero variance), the exact s(0) E[s(v)] = 0
    instead of F_0(0) = 1/4 (see the module docstring)."""
    if power == 0:
        return torch.where(norm > 0, value, 0.0)
    return value * (norm if power == 1 else norm ** power)


class Sign(Activation):
    r""":math:`\operatorname{sign}(x)` (0 at 0):
    :math:`\mathbb E[\operatorname{sign}(u) \operatorname{sign}(v)] = \frac{2}{\pi} \arcsin\rho`
    (:math:`\rho` the correlation), 0 where a variance is 0.

    Its derivative is not a function (0 almost everywhere, a Dirac delta at 0): asking for its
    NTK, or back-propagating through it in a finite network, raises a ValueError.
    neural-tangents 0.6.5's ``stax.Sign`` returns an NTK of 0 instead.
    """

    def __init__(self) -> None:
        super().__init__(self._forward, None, name="sign")

    def __repr__(self) -> str:
        return "Sign()"

    def config(self) -> dict:
        """The constructor's keyword arguments (none)."""
        return {}

    def _forward(self, x: Tensor) -> Tensor:
        return _Jump.apply(x, "Sign()")

    def grad(self, x: Tensor) -> Tensor:
        raise _no_ntk_error(repr(self))

    def check(self) -> None:
        """Nothing to check: the function is built in (its missing derivative is reported when asked)."""

    def expectations(self, var1: Tensor, var2: Tensor, cov: Tensor, derivative: bool = True,
                     overwrite: bool = False) -> tuple[Tensor, Tensor | None]:
        if derivative:
            raise _no_ntk_error(repr(self))
        rho, _ = correlation(var1, var2, cov)   # rho = 0 at zero variance: sign(0) E[sign v] = 0
        return _ArcSin.apply(rho), None
