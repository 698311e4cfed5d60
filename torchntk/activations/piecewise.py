"""Piecewise-linear activations sigma(x) = a x for x > 0, b x for x < 0, in closed form.

With J0, J1 the arc-cosine kernels of `torchntk.numerics` and rho the correlation of (u, v):

    E[sigma(u) sigma(v)]   = (a - b)^2 / 2 * sqrt(var1 var2) * J1(rho) + a b cov
    E[sigma'(u) sigma'(v)] = (a - b)^2 / 2 * J0(rho) + a b

(from sigma = a relu(x) - b relu(-x), E[relu(u) relu(v)] = sqrt(var1 var2) J1(rho) / 2 and
J1(rho) - J1(-rho) = rho). ReLU is (1, 0), leaky ReLU (1, slope), abs (1, -1), identity (1, 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..numerics import arccos_kernels, correlation, snap_width
from .base import Activation


class PiecewiseLinear(Activation):
    r""":math:`\sigma(x) = a x` for :math:`x > 0` and :math:`b x` for :math:`x \le 0`;
    :math:`\sigma'(0) = b`, as autograd gives. With :math:`J_0, J_1` the arc-cosine kernels and
    :math:`\rho` the correlation of :math:`(u, v)`,

    .. math::

        \mathbb E[\sigma(u)\, \sigma(v)] = \frac{(a - b)^2}{2} \sqrt{v_1 v_2}\, J_1(\rho) + a b\, c,

        \mathbb E[\sigma'(u)\, \sigma'(v)] = \frac{(a - b)^2}{2} J_0(\rho) + a b,

    for variances :math:`v_1, v_2` and covariance :math:`c` (from :math:`\sigma(x) = a
    \operatorname{relu}(x) - b \operatorname{relu}(-x)`).

    Args:
        a: the slope for :math:`x > 0` (default 1).
        b: the slope for :math:`x \le 0` (default 0: ReLU).
        name: shown in reprs and reports.
    """

    def __init__(self, a: float = 1.0, b: float = 0.0, *, name: str | None = None) -> None:
        self.a, self.b = _slope("a", a), _slope("b", b)
        super().__init__(self._forward, self._derivative, name=name or f"piecewise_linear({a}, {b})")

    def __repr__(self) -> str:
        return f"PiecewiseLinear(a={self.a}, b={self.b})"

    def _forward(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, self.a * x, self.b * x)

    def _derivative(self, x: Tensor) -> Tensor:
        # b at 0, as autograd differentiates _forward (so identity has sigma'(0) = 1).
        return torch.where(x > 0, torch.full_like(x, self.a), torch.full_like(x, self.b))

    def expectations(self, var1: Tensor, var2: Tensor, cov: Tensor, derivative: bool = True,
                     overwrite: bool = False) -> tuple[Tensor, Tensor | None]:
        half_jump = (self.a - self.b) ** 2 / 2
        ab = self.a * self.b
        if half_jump == 0:  # linear: the recursion closes on the covariance itself
            return ab * cov, (torch.full_like(cov, ab) if derivative else None)
        if overwrite and not torch.is_grad_enabled():
            return self._expectations_inplace(var1, var2, cov, derivative, half_jump, ab)
        rho, norm = correlation(var1, var2, cov)
        j0, j1 = arccos_kernels(rho)
        ess = j1 * norm * half_jump
        if ab != 0:
            ess = ess + ab * cov
        if not derivative:
            return ess, None
        edd = j0 * half_jump
        return ess, (edd + ab if ab != 0 else edd)

    @staticmethod
    def _expectations_inplace(var1: Tensor, var2: Tensor, cov: Tensor, derivative: bool,
                              half_jump: float, ab: float) -> tuple[Tensor, Tensor | None]:
        """The same formulas with cov's storage reused and two temporaries, no autograd: the hot
        loop of large kernels, where every extra pass over a block and every fresh allocation
        shows (see benchmarks/bench_kernels.py)."""
        # sqrt of the variances, not of their products: two small vectors instead of a pass
        # over the block (the dearest pass after arccos). A point's correlation with itself is
        # then 1 within ~3 ulps, and the snap below makes it exactly 1.
        norm = torch.mul(var1.sqrt(), var2.sqrt())
        positive = bool((var1 > 0).all()) and bool((var2 > 0).all())
        # cov is 0 wherever a variance is: divide by a positive stand-in there, rho = 0.
        rho = cov.div_(norm if positive else norm.clamp_min(torch.finfo(norm.dtype).tiny)).clamp_(-1.0, 1.0)
        rho.masked_fill_(rho > 1 - snap_width(rho.dtype), 1.0)
        pi_j0 = torch.neg(rho).arccos_()               # pi - theta = arccos(-rho), exact near rho = -1 too
        # sin theta; |rho| <= 1 makes 1 - rho^2 >= 0 in floating point, so no clamp is needed
        ess = torch.addcmul(_ONE.to(rho), rho, rho, value=-1.0).sqrt_()
        ess.addcmul_(pi_j0, rho)                                                 # pi J1
        if ab != 0:
            ess.mul_(half_jump / math.pi).add_(rho, alpha=ab).mul_(norm)
        else:
            ess.mul_(norm).mul_(half_jump / math.pi)
        if not derivative:
            return ess, None
        edd = pi_j0.mul_(half_jump / math.pi)
        return ess, (edd.add_(ab) if ab != 0 else edd)


_ONE = torch.tensor(1.0, dtype=torch.float64)

MAX_SLOPE = 1e150
"""Largest |slope| accepted: (a - b)^2 / 2 and a b must stay finite in float64."""


def _slope(name: str, value: float) -> float:
    """A slope as a finite float with |slope| <= MAX_SLOPE, or a TypeError / ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"slope {name} must be a real number, got {type(value).__name__}.")
    value = float(value)
    if not abs(value) <= MAX_SLOPE:
        raise ValueError(f"slope {name} must be a finite number of magnitude at most {MAX_SLOPE:g}, got {value}.")
    return value


class ReLU(PiecewiseLinear):
    r""":math:`\max(x, 0)`: the arc-cosine kernels of Cho and Saul."""

    def __init__(self) -> None:
        super().__init__(1.0, 0.0, name="relu")

    def __repr__(self) -> str:
        return "ReLU()"


class LeakyReLU(PiecewiseLinear):
    r""":math:`x` for :math:`x > 0`, :math:`\text{slope} \cdot x` for :math:`x < 0`
    (``torch.nn.functional.leaky_relu``).

    Args:
        slope: the slope for negative inputs (default 0.01).
    """

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__(1.0, slope, name="leaky_relu")
        self.slope = self.b

    def __repr__(self) -> str:
        return f"LeakyReLU({self.slope})"


class Abs(PiecewiseLinear):
    """:math:`|x|`."""

    def __init__(self) -> None:
        super().__init__(1.0, -1.0, name="abs")

    def __repr__(self) -> str:
        return "Abs()"


class Identity(PiecewiseLinear):
    r""":math:`x`: a deep linear network;
    :math:`\Sigma^{(l+1)} = \sigma_w^2\, \Sigma^{(l)} + \beta^2` exactly."""

    def __init__(self) -> None:
        super().__init__(1.0, 1.0, name="identity")

    def __repr__(self) -> str:
        return "Identity()"
