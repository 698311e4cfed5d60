"""Block Lanczos for the gradient-flow gain applied to the targets: u_t = g_t(Theta) Y at many times at once.

With g_t(lambda) = (1 - exp(-t lambda / N)) / lambda (the gain of `spectral.flow_gain`), the mean of
gradient flow is mean_t(x) = Theta(x, X) u_t and on the training points Theta u_t. Block Lanczos
started from the k target columns builds an orthonormal basis Q_m (N, m b) of the block Krylov space
span{Y, Theta Y, ..., Theta^(m-1) Y} and the block tridiagonal T_m = Q_m^T Theta Q_m (m b, m b):

    u_t ~ Q_m g_t(T_m) E_1 B_0,     Y = Q_1 B_0,

one basis for every time (only the small g_t(T_m) changes with t). Each step is one product of
Theta with a (N, b) block, O(N^2 b), against O(N^3) for an eigendecomposition. It converges in about
sqrt(t lambda_max / N) steps (g_t is entire, so a polynomial of that degree fits it on the
spectrum), so it wins at small and moderate t; at t -> inf it needs the square root of the condition
number, and then the dense path is faster.

Accuracy is checked a posteriori by the Lanczos residual: Theta Q_m = Q_m T_m + Q_(m+1) B_(m+1) E_m^T,
so the error of the Galerkin approximation is estimated by ||B_(m+1) E_m^T g_t(T_m) E_1 B_0|| (the
next term of the series, Saad 1992), taken together with the change since the previous check.
Full reorthogonalisation (classical Gram-Schmidt, twice when needed) keeps Q_m orthonormal to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .spectral import flow_gain


@dataclass
class KrylovResult:
    """The outcome of `lanczos_gain`.

    gain_y: (T, N, k) u_t = g_t(Theta) Y for each time; fitted: (T, N, k) Theta u_t (the fitted part
    on the training points). steps: block steps taken (products with Theta). error: (T,) estimated
    relative error of each u_t (2-norm over all columns); converged: (T,) error <= tol.
    """

    gain_y: Tensor
    fitted: Tensor
    steps: int
    error: Tensor
    converged: Tensor
    history: list[tuple[int, float]] = field(default_factory=list)


def _orthonormalise(w: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """w minus its projection on the basis (the rows of ``rows``, orthonormal), then a thin QR: (Q, R).

    Classical Gram-Schmidt (one GEMM pair), repeated only when it cancelled most of w: Kahan's
    "twice is enough" test, per column, ||w_after|| < ||w_before|| / sqrt(2) (Parlett, "The
    Symmetric Eigenvalue Problem", section 6.9); a second pass then restores orthogonality to rounding.
    """
    before = torch.linalg.vector_norm(w, dim=0)
    w = w - rows.T @ (rows @ w)
    if bool((torch.linalg.vector_norm(w, dim=0) < before / math.sqrt(2)).any()):
        w = w - rows.T @ (rows @ w)
    return torch.linalg.qr(w)


def _coefficients(tri: Tensor, start: Tensor, times: Tensor, n: int, scale: float) -> Tensor:
    """g_t(T_m) E_1 B_0 for all times, (T, m b, k), through the eigendecomposition of the small T_m."""
    values, vectors = torch.linalg.eigh(tri)
    # Ritz values below rounding of the kernel's scale are noise: clamp as flow_gain does.
    values = torch.where(values.abs() <= 1e-14 * scale, torch.zeros_like(values), values)
    gain = flow_gain(values, times, n)  # (T, mb)
    first = vectors[: start.shape[0]].T @ start  # V^T E_1 B_0, (mb, k)
    # V diag(g_t) V^T E_1 B_0 for every t as one (mb, mb) x (mb, T k) product: the scaled right-hand
    # sides are small, where a (T, mb, mb) intermediate is not (141 MB at mb = 940, T = 20).
    return _per_time(vectors, gain[:, :, None] * first)


def lanczos_gain(apply: Callable[[Tensor], Tensor], y: Tensor, times: Tensor, n: int, *, tol: float = 1e-11,
                 max_steps: int = 120, scale: float | None = None,
                 progress: Callable[[int, float], None] | None = None,
                 after_step: Callable[[int], None] | None = None) -> KrylovResult:
    """u_t = g_t(Theta) Y for finite times ``times`` (T,) by block Lanczos from Y (N, k).

    Args:
        apply: v -> Theta v on (N, b) float64 blocks (in memory, or streamed tiles of a store).
        y: (N, k) right-hand side (the targets, or y - f_0(X)).
        times: (T,) finite times >= 0, in the paper's units (exp(-t Theta / N)).
        n: N, the time scale of the flow (number of training points).
        tol: target estimated relative error of every u_t.
        max_steps: at most this many block steps (products with Theta).
        scale: an upper bound of the kernel's largest eigenvalue (for the noise floor of Ritz
            values); estimated from the first product when None.
        progress: called as progress(steps, worst_estimate) at every check.
        after_step: called as after_step(steps) after every product (for progress bars).

    Returns:
        A `KrylovResult`; times that did not reach tol are flagged in ``converged`` (the caller falls
        back to the exact path for them).
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}.")
    y = y.to(torch.float64)
    k = y.shape[1]
    norm_y = float(torch.linalg.matrix_norm(y))
    zero = torch.zeros(times.shape[0], *y.shape, dtype=y.dtype, device=y.device)
    if norm_y == 0 or times.numel() == 0:
        return KrylovResult(zero, zero.clone(), 0, torch.zeros(times.shape[0]), torch.ones(times.shape[0], dtype=bool))
    q, start = torch.linalg.qr(y)  # Y = Q_1 B_0 (block size k)
    # The basis lives in one preallocated buffer, stored transposed ((max_steps + 1) k, N) so that the first
    # m k vectors are one contiguous block: reorthogonalisation is then two plain GEMMs.
    rows = torch.empty((max_steps + 1) * k, y.shape[0], dtype=y.dtype, device=y.device)
    rows[:k] = q.T
    diagonal: list[Tensor] = []
    off: list[Tensor] = []  # B_2, B_3, ...: Q_(j+1) B_(j+1) = the new block's residual
    previous: Tensor | None = None
    error = torch.full((times.shape[0],), float("inf"), dtype=torch.float64)
    history: list[tuple[int, float]] = []
    next_check = 4
    steps = 0
    while steps < max_steps:
        current = rows[steps * k:(steps + 1) * k].T
        w = apply(current)
        if after_step is not None:
            after_step(steps + 1)
        if scale is None:
            # ||Theta Q_1||_F <= sqrt(k) lambda_max, and lambda_max <= trace: a generous bound is all we need.
            scale = float(torch.linalg.matrix_norm(w)) * math.sqrt(n)
        if steps > 0:
            w = w - rows[(steps - 1) * k:steps * k].T @ off[-1].T
        a = current.T @ w
        a = (a + a.T) / 2
        diagonal.append(a)
        w = w - current @ a
        steps += 1
        q_next, b_next = _orthonormalise(w, rows[:steps * k])
        tiny = float(b_next.diagonal().abs().min()) <= 1e-13 * scale
        if steps >= next_check or tiny or steps == max_steps:
            tri = _block_tridiagonal(diagonal, off)
            coef = _coefficients(tri, start, times, n, scale)
            norms = torch.linalg.matrix_norm(coef).clamp_min(1e-300)
            # Saad's estimate: the residual block B_(m+1) times the last block row of g_t(T_m) E_1 B_0.
            tail = torch.linalg.matrix_norm(b_next @ coef[:, -k:, :]) / norms
            if previous is not None and not tiny:
                grown = torch.zeros_like(coef)
                grown[:, : previous.shape[1]] = previous
                error = torch.maximum(tail, torch.linalg.matrix_norm(coef - grown) / norms)
            else:  # at an invariant subspace the residual is the whole error
                error = tail
            previous = coef
            worst = float(error.max())
            history.append((steps, worst))
            if progress is not None:
                progress(steps, worst)
            if bool((error <= tol).all()) or tiny or _hopeless(history, tol, max_steps):
                break
            next_check = steps + _steps_to_next_check(history, tol)
        off.append(b_next)
        rows[steps * k:(steps + 1) * k] = q_next.T
    tri = _block_tridiagonal(diagonal, off[: steps - 1])
    coef = previous if previous is not None else _coefficients(tri, start, times, n, scale)
    q_all = rows[:steps * k].T
    gain_y = _per_time(q_all, coef)
    # Theta Q_m c = Q_m T_m c + Q_(m+1) B_(m+1) E_m^T c, exactly (up to rounding).
    fitted = _per_time(q_all, _per_time(tri, coef)) + _per_time(q_next @ b_next, coef[:, -k:, :])
    return KrylovResult(gain_y, fitted, steps, error, error <= tol, history)


def _per_time(matrix: Tensor, blocks: Tensor) -> Tensor:
    """matrix @ blocks[t] for every t, (T, rows, k), as one GEMM on the (cols, T k) side-by-side blocks."""
    t, cols, k = blocks.shape
    side = blocks.permute(1, 0, 2).reshape(cols, t * k)
    return (matrix @ side).reshape(matrix.shape[0], t, k).permute(1, 0, 2)


def _steps_to_next_check(history: list[tuple[int, float]], tol: float) -> int:
    """Steps until the projected problem is solved again (each check costs an eigendecomposition of
    the (m k, m k) matrix, the last one the most). At most 30% more steps, so that the checks cost
    about twice the last one; fewer when the log-linear rate of the last two checks says tol is
    nearer (convergence is superlinear, so that rate reaches tol late, not early)."""
    m1, e1 = history[-1]
    grow = max(2, int(0.3 * m1))
    if len(history) < 2 or not 0 < e1 < history[-2][1]:
        return grow
    m0, e0 = history[-2]
    rate = (math.log(e0) - math.log(e1)) / (m1 - m0)
    remaining = (math.log(e1) - math.log(tol)) / rate
    return max(2, min(grow, int(math.ceil(0.9 * remaining))))


def _hopeless(history: list[tuple[int, float]], tol: float, max_steps: int) -> bool:
    """Stop early when even the log-linear rate of the last two checks (convergence is superlinear,
    so this extrapolation is pessimistic only by a factor) would need over twice the step budget."""
    if len(history) < 3 or history[-1][0] < max_steps // 3:  # early rates understate superlinear convergence
        return False
    (m0, e0), (m1, e1) = history[-2], history[-1]
    if not (0 < e1 < e0):
        return e1 >= e0 and m1 > max_steps // 2
    rate = (math.log(e0) - math.log(e1)) / (m1 - m0)
    return m1 + (math.log(e1) - math.log(tol)) / rate > 2 * max_steps


def _block_tridiagonal(diagonal: list[Tensor], off: list[Tensor]) -> Tensor:
    """T_m from its diagonal blocks A_1..A_m and the blocks B_2..B_m below the diagonal."""
    b = diagonal[0].shape[0]
    m = len(diagonal)
    tri = torch.zeros(m * b, m * b, dtype=diagonal[0].dtype, device=diagonal[0].device)
    for j, a in enumerate(diagonal):
        tri[j * b:(j + 1) * b, j * b:(j + 1) * b] = a
    for j, bj in enumerate(off[: m - 1]):
        tri[(j + 1) * b:(j + 2) * b, j * b:(j + 1) * b] = bj
        tri[j * b:(j + 1) * b, (j + 1) * b:(j + 2) * b] = bj.T
    return tri
