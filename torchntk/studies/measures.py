"""The quantities the appendix's statements speak about, measured on finite networks.

Operator norms on a data set follow the paper (Appendix A, docs/conventions.md): for a kernel K with
values K_kk'(x_i, x_j) on N points and n_L outputs, ||K||_op is the top eigenvalue of the
(N n_L) x (N n_L) Gram matrix divided by N; for a difference of kernels (indefinite) it is the
largest eigenvalue in absolute value, divided by N.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _as_float64(t: Tensor | np.ndarray) -> Tensor:
    return torch.as_tensor(t).detach().to(device="cpu", dtype=torch.float64)


def op_norm(gram: Tensor | np.ndarray) -> float:
    """max |eigenvalue| / N of a symmetric (N k, N k) matrix, or of an (N, N) kernel."""
    g = _as_float64(gram)
    if g.dim() != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"op_norm takes a square matrix, got shape {tuple(g.shape)}.")
    return float(torch.linalg.eigvalsh((g + g.T) / 2).abs().max()) / g.shape[0]


def flatten_kernel(kernel: Tensor | np.ndarray) -> Tensor:
    """An (N, N, k, k) kernel as its (N k, N k) Gram matrix, rows indexed by (point, output)."""
    t = _as_float64(kernel)
    if t.dim() != 4 or t.shape[0] != t.shape[1] or t.shape[2] != t.shape[3]:
        raise ValueError(f"expected a kernel of shape (N, N, k, k), got {tuple(t.shape)}.")
    n, _, k, _ = t.shape
    return t.permute(0, 2, 1, 3).reshape(n * k, n * k)


def ntk_distance(empirical: Tensor | np.ndarray, limit: Tensor | np.ndarray) -> float:
    """||Theta_emp - Theta(L) (x) Id_k||_op on the data set (Theorem 1).

    Args:
        empirical: the finite network's NTK, shape (N, N, k, k).
        limit: the scalar limit Theta(L)(X, X), shape (N, N).

    Returns:
        The top |eigenvalue| of the (N k, N k) difference Gram matrix divided by N (the paper's
        convention: the number of points, not N k).
    """
    emp = flatten_kernel(empirical)
    lim = _as_float64(limit)
    k = emp.shape[0] // lim.shape[0]
    if lim.dim() != 2 or lim.shape[0] * k != emp.shape[0]:
        raise ValueError(f"limit must be (N, N) for the same N as the empirical kernel {tuple(empirical.shape)}; "
                         f"got {tuple(lim.shape)}.")
    diff = emp - torch.kron(lim, torch.eye(k, dtype=torch.float64))
    return _top_abs(diff) / lim.shape[0]


def kernel_movement(ntk_t: Tensor | np.ndarray, ntk_0: Tensor | np.ndarray) -> float:
    """||Theta(t) - Theta(0)||_op on the data set (Theorem 2); both of shape (N, N, k, k)."""
    a, b = flatten_kernel(ntk_t), flatten_kernel(ntk_0)
    return _top_abs(a - b) / _as_float64(ntk_t).shape[0]


def _top_abs(sym: Tensor) -> float:
    return float(torch.linalg.eigvalsh((sym + sym.T) / 2).abs().max())


def conditional_nngp(last_hidden: Tensor, weight_std: float, bias_std: float) -> Tensor:
    """Sigma~(L)(X, X) = weight_std^2 a a^T / n + bias_std^2: the output covariance given the
    last hidden layer a (N, n) (proof of Proposition 1); it tends to Sigma(L) by the law of
    large numbers, at rate n^-1/2. Returns (N, N) float64."""
    a = _as_float64(last_hidden)
    return weight_std ** 2 * (a @ a.T) / a.shape[1] + bias_std ** 2


def layer_weight_movement(w_t: Tensor, w_0: Tensor) -> float:
    """||W(t) - W(0)||_op / sqrt(n_in) for a weight of shape (n_out, n_in) (Lemma 1)."""
    diff = _as_float64(w_t) - _as_float64(w_0)
    return float(torch.linalg.matrix_norm(diff, ord=2)) / math.sqrt(diff.shape[1])


def activation_movement(a_t: Tensor, a_0: Tensor) -> float:
    """||a(t) - a(0)||_{p_in} / sqrt(n) = sqrt((1/(N n)) sum_i |a_t(x_i) - a_0(x_i)|^2) for hidden
    values of shape (N, n): the root mean square change of one unit (Lemma 1's a~(l))."""
    diff = _as_float64(a_t) - _as_float64(a_0)
    return float(diff.pow(2).mean().sqrt())


def whiten(outputs: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """z = C^-1 f for Sigma = C C^T (Cholesky), applied along the last axis of ``outputs``.

    If f ~ N(0, Sigma) over the N points (Proposition 1's limit), z has iid N(0, 1) entries.
    outputs: (..., N); sigma: (N, N). Raises if Sigma is not positive definite (duplicate
    points): drop duplicates first.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    try:
        chol = np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        raise ValueError("Sigma(L) on these points is not positive definite (duplicate or nearly collinear "
                         "points?); use distinct points.") from None
    from scipy.linalg import solve_triangular

    flat = np.asarray(outputs, dtype=np.float64).reshape(-1, sigma.shape[0])
    z = solve_triangular(chol, flat.T, lower=True).T
    return z.reshape(np.shape(outputs))


def covariance_error(samples: np.ndarray, sigma: np.ndarray) -> float:
    """||C_hat - Sigma||_op / ||Sigma||_op for the second moment C_hat = mean_s f_s f_s^T of
    centred samples (M, N) (the mean is known to be 0 by symmetry, W -> -W)."""
    samples = np.asarray(samples, dtype=np.float64)
    c_hat = samples.T @ samples / samples.shape[0]
    diff = c_hat - sigma
    return float(np.abs(np.linalg.eigvalsh(diff)).max() / np.abs(np.linalg.eigvalsh(sigma)).max())


def null_covariance_errors(sigma: np.ndarray, samples: int, repeats: int, seed: int) -> np.ndarray:
    """The distribution of `covariance_error` when the samples really are N(0, Sigma): ``repeats``
    draws of ``samples`` exact Gaussian vectors. Its upper quantile is the error that Monte
    Carlo noise alone explains. Returns (repeats,)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    chol = np.linalg.cholesky(sigma)
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((repeats, samples, sigma.shape[0])) @ chol.T
    c_hat = np.einsum("rsi,rsj->rij", draws, draws) / samples
    eig = np.abs(np.linalg.eigvalsh(c_hat - sigma)).max(axis=1)
    return eig / np.abs(np.linalg.eigvalsh(sigma)).max()


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, stat, *, repeats: int = 2000, seed: int = 0,
                    confidence: float = 0.95) -> tuple[float, float, float]:
    """stat(a) / stat(b) and its percentile bootstrap interval, resampling the seeds (axis 0)
    of a (S_a, ...) and b (S_b, ...) independently.

    ``stat`` maps a batch of resamples (R, S, ...) to (R,) (it reduces axis 1 and the rest).
    Returns (ratio, low, high).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    top = stat(a[rng.integers(0, a.shape[0], size=(repeats, a.shape[0]))])
    bottom = stat(b[rng.integers(0, b.shape[0], size=(repeats, b.shape[0]))])
    # With few seeds a resample can repeat one seed throughout (a spread of 0): such draws say
    # nothing about the ratio and are left out.
    usable = bottom > 0
    ratios = top[usable] / bottom[usable]
    tail = (1 - confidence) / 2 * 100
    ratio = float(stat(a[None])[0] / stat(b[None])[0])
    return ratio, float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))
