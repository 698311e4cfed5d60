"""Numerics policy, in one place: square roots, quotients and arc-cosine kernels whose
derivatives stay finite where the textbook derivative blows up.

Kernel recursions divide by sqrt(Sigma(x, x) Sigma(x', x')) (zero for a zero input without
bias) and take arc-cosines of correlations that are exactly 1 on the diagonal and at duplicate
inputs. The values are fine there; the naive derivatives are 0 * inf = NaN. Every such spot
goes through a function here, each with a derivative that is exact away from the edge and
finite on it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["safe_sqrt", "safe_reciprocal", "safe_rsqrt", "correlation", "snap_width", "arccos_kernels",
           "symmetric_eigh", "CPU_EIGH"]


def _tiny(x: Tensor) -> float:
    return torch.finfo(x.dtype).tiny if x.is_floating_point() else 1e-300


class _SafeSqrt(torch.autograd.Function):
    """sqrt(x) with derivative 1 / (2 sqrt(x)) for x > 0 and 0 at x = 0 (a one-sided choice:
    the variances fed here are >= 0, and at 0 their own derivative vanishes)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return torch.sqrt(x.clamp_min(0))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def _derivative_times(y: Tensor, t: Tensor) -> Tensor:
        positive = y > 0
        return torch.where(positive, t / (2 * torch.where(positive, y, torch.ones_like(y))), 0.0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return _SafeSqrt._derivative_times(y, grad)

    @staticmethod
    def jvp(ctx, tangent: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return _SafeSqrt._derivative_times(y, tangent)


def safe_sqrt(x: Tensor) -> Tensor:
    """Square root of a non-negative tensor with a finite derivative at 0."""
    return _SafeSqrt.apply(x)


def safe_reciprocal(x: Tensor) -> Tensor:
    """1 / x where x > 0, and 0 where x == 0 (a zero-variance input has no direction)."""
    positive = x > 0
    return torch.where(positive, 1 / torch.where(positive, x, torch.ones_like(x)), 0.0)


def _untracked(x: Tensor) -> bool:
    """Whether no derivative of x can be asked for: it needs no gradient, and no forward-mode
    level or functorch transform (jvp, vmap, grad) is active, whose wrapped tensors would hide it."""
    return (not x.requires_grad and torch.autograd.forward_ad._current_level < 0
            and torch._C._functorch.maybe_current_level() is None)


def safe_rsqrt(x: Tensor) -> Tensor:
    """1 / sqrt(x) where x > 0, and 0 where x <= 0: ``safe_reciprocal(safe_sqrt(x))``, with its
    derivatives. Without any derivative to take it is three plain operations, not the custom
    function's ten or so, which on the small per-input variances of a normalisation dominate."""
    if not _untracked(x):
        return safe_reciprocal(safe_sqrt(x))
    positive = x > 0
    return torch.sqrt(torch.where(positive, x, 1.0)).reciprocal_().masked_fill_(~positive, 0.0)


def correlation(var1: Tensor, var2: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """Correlation rho = cov / sqrt(var1 var2), clamped to [-1, 1], and sqrt(var1 var2).

    var1 (n1, 1) and var2 (1, n2) broadcast against cov (n1, n2); in diagonal mode all three
    are (n,). sqrt(v * v) is exactly v in IEEE arithmetic, so a correlation of a point with
    itself is exactly 1 (arccos amplifies an error d near 1 to sqrt(2 d): one ulp would cost
    1e-8); see `snap_width` for parallel inputs. Where a variance is 0 the Gaussian is the
    constant 0, cov is 0, and rho is 0.
    """
    norm = safe_sqrt(var1 * var2)
    rho = (cov / norm.clamp_min(_tiny(norm))).clamp(-1.0, 1.0)
    return torch.where(rho > 1 - snap_width(rho.dtype), 1.0, rho), norm


def snap_width(dtype: torch.dtype) -> float:
    """Correlations within this of 1 are set to exactly 1.

    Parallel or duplicate inputs reach the recursion with rho = 1 - (a few ulps), from a GEMM
    entry and a sum of squares that round differently; arccos turns that into an error of
    sqrt(2 * ulps) (~1e-8 in float64). Snapping makes them exact, and costs at most
    sqrt(2 * 64 eps) / pi (5e-8 in float64) for genuinely distinct inputs at angles below
    ~1e-7 rad, whose kernel values float64 inputs do not determine better than that anyway.
    """
    return 64 * torch.finfo(dtype).eps


class _ArcCosKernels(torch.autograd.Function):
    """Arc-cosine kernels of orders 0 and 1 from one arccos pass, normalised to 1 at rho = 1:

        J0(rho) = 1 - arccos(rho) / pi                               = 2 P(u > 0, v > 0)
        J1(rho) = (sqrt(1 - rho^2) + (pi - arccos(rho)) rho) / pi    = 2 E[relu(u) relu(v)]

    for unit Gaussians u, v of correlation rho. dJ1/drho = J0 exactly (finite everywhere;
    autograd through arccos and sqrt would give inf - inf at |rho| = 1). dJ0/drho =
    1 / (pi sqrt(1 - rho^2)) is infinite at |rho| = 1, where the kernel has a cusp: the
    derivative uses max(1 - rho^2, eps). Where two inputs coincide the correlation's own
    derivative is 0, so the chain rule gives the one-sided answer 0 instead of NaN.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(rho: Tensor) -> tuple[Tensor, Tensor]:
        theta = torch.arccos(rho)
        j0 = 1 - theta / math.pi
        j1 = torch.sqrt((1 - rho * rho).clamp_min(0)) / math.pi + j0 * rho
        return j0, j1

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        (rho,), (j0, _) = inputs, output
        ctx.save_for_backward(rho, j0)
        ctx.save_for_forward(rho, j0)

    @staticmethod
    def _dj0(rho: Tensor) -> Tensor:
        eps = torch.finfo(rho.dtype).eps
        return 1 / (math.pi * torch.sqrt((1 - rho * rho).clamp_min(eps)))

    @staticmethod
    def backward(ctx, grad0: Tensor | None, grad1: Tensor | None) -> Tensor:
        rho, j0 = ctx.saved_tensors
        out = torch.zeros_like(rho) if grad1 is None else grad1 * j0
        if grad0 is not None:
            out = out + grad0 * _ArcCosKernels._dj0(rho)
        return out

    @staticmethod
    def jvp(ctx, tangent: Tensor) -> tuple[Tensor, Tensor]:
        rho, j0 = ctx.saved_tensors
        return tangent * _ArcCosKernels._dj0(rho), tangent * j0


def arccos_kernels(rho: Tensor) -> tuple[Tensor, Tensor]:
    """(J0(rho), J1(rho)): the arc-cosine kernels of orders 0 and 1; see `_ArcCosKernels`."""
    return _ArcCosKernels.apply(rho)


CPU_EIGH = "scipy"
"""Who decomposes a float64 symmetric matrix on the CPU in `symmetric_eigh`: "scipy" (scipy's
LAPACK, divide and conquer, dsyevd) or "torch" (``torch.linalg.eigh``). torch's pip build calls
MKL's dsyevd, which on the 2-core AMD EPYC machine of docs/benchmarks.md took 1.3x as long as
scipy's OpenBLAS one at N = 2,000 and 4,000, with a residual 10x larger at 4,000
(``benchmarks/bench_eigh.py``); on other machines measure, and set this to "torch" where MKL
wins."""


def symmetric_eigh(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """(eigenvalues ascending (n,), eigenvectors as columns (n, n)) of a symmetric (n, n) matrix,
    read from its lower triangle, as ``torch.linalg.eigh``. A float64 CPU matrix that needs no
    gradient goes to scipy's LAPACK when `CPU_EIGH` says so (the same algorithm, another
    implementation); anything else (GPUs, float32, autograd) to torch."""
    if (CPU_EIGH != "scipy" or matrix.device.type != "cpu" or matrix.dtype != torch.float64 or matrix.dim() != 2
            or (matrix.requires_grad and torch.is_grad_enabled())):
        return torch.linalg.eigh(matrix)
    import scipy.linalg

    values, vectors = scipy.linalg.eigh(matrix.detach().numpy(), lower=True, driver="evd", check_finite=False)
    return torch.from_numpy(values), torch.from_numpy(vectors)
