"""How `GradientFlow.predict` computes a prediction: the methods, and the "auto" choice between them.

Methods (every one gives the same numbers as "eigh" to the accuracy stated, checked a posteriori):

- "eigh": one float64 eigendecomposition Theta_r = V diag(lambda) V^T, then matrix products per
  time. Exact to rounding; O(N^3) once (the most expensive factorisation), needed for
  covariances and discrete steps, and the fallback of every other method.
- "cholesky": t = inf by a float64 Cholesky solve (about 1/10 of "eigh"); exact to rounding.
- "mixed": t = inf by a float32 Cholesky factor refined in float64 (`refined`); about half of
  "cholesky". Checked by the normwise backward error of the solution; falls back to "cholesky"
  when the kernel is too ill-conditioned for float32 (cond >~ 1e7) or the factor breaks down.
- "lanczos": finite-time means by block Lanczos on the k target columns (`krylov`), one Krylov
  basis shared by every time; O(N^2 k m) for m block steps, m ~ 12 sqrt(t_max lambda_max / N).
  Checked by the Lanczos residual estimate; times that miss the tolerance are recomputed by "eigh".

"auto" decides from N, the times and what is asked:

1. An eigendecomposition already held by the flow (from an earlier call or `from_eigh`) makes
   every time cheap: use it ("eigh").
2. Covariances (test or training) need the eigendecomposition at finite times ("eigh", which
   then serves t = inf too), and the float64 factor at t = inf alone ("cholesky").
3. Means only. Finite times: "lanczos" when N >= `LANCZOS_MIN_N`, within `lanczos_budget(N, k)`
   block steps (a failed attempt then costs under ~1/4 of the eigendecomposition that replaces
   it); it stops early when its error's rate of decrease shows it cannot reach the tolerance in
   the budget. Otherwise "eigh". t = inf: "mixed" when N >= `MIXED_MIN_N` (below it the float64
   factorisation is too cheap for the float32 savings to pay for the refinement), else "cholesky".

Why no a-priori step estimate from rho = t lambda_max / N: the polynomial bound (about
sqrt(140 rho) steps for 1e-12, Hochbruck and Lubich 1997) ignores the spectrum's shape. NTK
matrices have a few large outlying eigenvalues, which Lanczos captures in a few steps, above a
narrow bulk; on 1,500 MNIST digits (depth-4 ReLU NTK, k = 10) it needed 8 steps at rho = 5, 14
at rho = 526 and 80 at t = 10 / lambda_min (rho ~ 4e5) against the bound's 35, 280 and 7500.
Trying, with the check and the fallback, is both faster and safe.
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("auto", "eigh", "cholesky", "mixed", "lanczos")

LANCZOS_MIN_N = 256
"""Below this N an eigendecomposition takes milliseconds: not worth an iterative method."""

MIXED_MIN_N = 512
"""Below this N the float64 Cholesky factor is cheap enough that refinement does not pay."""

LANCZOS_MAX_STEPS = 160
"""A hard cap on block Lanczos steps (and on the size of its projected problem, m k)."""


def lanczos_budget(n: int, k: int) -> int:
    """Most block steps for which Lanczos stays well below one eigendecomposition's cost.

    One step is a product Theta (N, k) (2 N^2 k flops, at about the GEMM rate when k >= 8) plus
    full reorthogonalisation (8 N m k^2 at step m); the float64 eigendecomposition is about 9 N^3
    flops at a lower rate. Keeping m k below N / 2 (and m <= `LANCZOS_MAX_STEPS`) keeps a failed
    attempt under ~1/4 of the eigendecomposition that then replaces it.
    """
    return max(0, min(LANCZOS_MAX_STEPS, n // (2 * max(k, 1))))


@dataclass
class Plan:
    """The chosen method for finite times (None when there are none) and for t = inf (None when
    not asked), and the reason, shown in `Prediction.diagnostics`."""

    finite: str | None
    infinite: str | None
    reason: str


def check_method(method: object) -> str:
    """``method`` if it is one of `METHODS`, else a ValueError listing them."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    return str(method)


def choose(method: str, *, n: int, k: int, t_max_finite: float | None, any_infinite: bool, wants_cov: bool,
           decomposed: bool) -> Plan:
    """The plan for one prediction (see the module docstring for the rules).

    Args:
        method: "auto" or a method name (then validated against what is asked).
        n, k: training points and target columns.
        t_max_finite: the largest finite time asked for, or None when only t = inf is asked.
        any_infinite: whether t = inf is asked.
        wants_cov: whether any covariance (test or training) is asked.
        decomposed: whether the flow already holds its eigendecomposition.
    """
    finite = t_max_finite is not None
    if method != "auto":
        return _explicit(method, finite, any_infinite, wants_cov)
    if decomposed:
        return Plan("eigh" if finite else None, "eigh" if any_infinite else None,
                    "the flow already holds its eigendecomposition")
    if wants_cov:
        if finite:  # once it is paid for, t = inf costs nothing more through it
            return Plan("eigh", "eigh" if any_infinite else None, "covariances at finite t need the eigendecomposition")
        return Plan(None, "cholesky", "covariances at t = inf need the float64 factor")
    infinite = ("mixed" if n >= MIXED_MIN_N else "cholesky") if any_infinite else None
    if not finite:
        return Plan(None, infinite, f"t = inf alone, N = {n}: " + ("float32 factor refined in float64"
                                                                     if infinite == "mixed" else "small N"))
    budget = lanczos_budget(n, k)
    if n >= LANCZOS_MIN_N and budget >= 8:
        return Plan("lanczos", infinite, f"means only, N = {n}: block Lanczos within {budget} steps, eigh for "
                                         "any time it does not resolve")
    return Plan("eigh", "eigh" if any_infinite else None, f"N = {n}, k = {k}: too small for Lanczos to pay")


def _explicit(method: str, finite: bool, any_infinite: bool, wants_cov: bool) -> Plan:
    if method == "eigh":
        return Plan("eigh" if finite else None, "eigh" if any_infinite else None, "asked for")
    if method in ("cholesky", "mixed"):
        if finite:
            raise ValueError(f"method={method!r} solves t = inf only; finite times need 'eigh' or 'lanczos' "
                             "(or method='auto').")
        if method == "mixed" and wants_cov:
            raise ValueError("method='mixed' gives means only; covariances at t = inf need 'cholesky' or 'eigh'.")
        return Plan(None, method, "asked for")
    if wants_cov:
        raise ValueError("method='lanczos' gives means only; covariances need 'eigh' (or method='auto').")
    return Plan("lanczos" if finite else None, "mixed" if any_infinite else None, "asked for")
