"""Validation of the arrays the dynamics receive: kernels, targets, times and initial outputs.

Everything is converted to float64 (the eigendecomposition and the t = inf solve need it) on the
device of the training kernel, and every bad input gets an error that says how to fix it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

COV_MODES = ("full", "diag", None)


def as_tensor(a: Any, name: str, device: torch.device | None = None) -> Tensor:
    """``a`` as a float64 tensor (numpy arrays and sequences accepted), finite, on ``device``."""
    if isinstance(a, Tensor):
        t = a.detach()
    else:
        try:
            arr = np.asarray(a)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be a torch.Tensor or a numpy array; got {type(a).__name__} ({exc}).") from exc
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers; got an array of dtype {arr.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers; got dtype {t.dtype}.")
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name} is on {t.device} but the training kernel is on {device}; move it there first.")
    t = t.to(torch.float64)
    check_finite(t, name)
    return t


def check_finite(t: Tensor, name: str) -> float:
    """max |t| (0 when empty); an error naming the first bad entry when t has a NaN or an inf.

    One fused reduction: max |t| is NaN or inf exactly when some entry is (torch's max propagates
    NaN), so the clean case, the common one, costs a single read of t and no temporary."""
    if t.numel() == 0:
        return 0.0
    scale = float(torch.linalg.vector_norm(t, float("inf")))
    if not math.isfinite(scale):
        bad = ~torch.isfinite(t)
        first = bad.nonzero()[0].tolist()
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite entries (the first at index {first}); "
                         "remove or impute them before predicting.")
    return scale


def input_eps(a: Any) -> float:
    """Machine epsilon of the precision the caller computed ``a`` in (float32 kernels are noisier)."""
    dtype = a.dtype if isinstance(a, (Tensor, np.ndarray)) else None
    if dtype in (torch.float32, torch.float16, torch.bfloat16, np.float32, np.float16):
        return float(torch.finfo(torch.float32).eps)
    return float(torch.finfo(torch.float64).eps)


def as_square_kernel(a: Any, name: str, device: torch.device | None = None) -> Tensor:
    """A symmetric (N, N) kernel matrix; asymmetry beyond rounding is an error, rounding is averaged out."""
    k = as_tensor(a, name, device)
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) kernel matrix of the training points against themselves; "
                         f"got shape {tuple(k.shape)}.")
    if k.shape[0] == 0:
        raise ValueError(f"{name} is empty; it needs at least one training point.")
    scale = float(torch.linalg.vector_norm(k, float("inf")))
    asymmetry = symmetry_gap(k)
    # sqrt(eps) of the caller's precision: far above the rounding of a Gram matrix, far below a real asymmetry.
    if asymmetry > math.sqrt(input_eps(a)) * max(scale, 1e-300):
        raise ValueError(f"{name} is not symmetric (max |K - K^T| = {asymmetry:.3g}); "
                         "pass the kernel of the training points against themselves, K(X, X).")
    return k if asymmetry == 0 else (k + k.T) / 2


SYMMETRY_BLOCK = 512
"""Tile side of `symmetry_gap`: a 512 x 512 float64 tile and its mirror (4 MiB) stay in cache."""


def symmetry_gap(k: Tensor) -> float:
    """max |K - K^T| of a square matrix, over tiles of the upper triangle against their mirrors.

    K - K.T in one operation reads K.T with a stride of N and makes an N x N temporary: about 4x
    slower at N = 4000 than cache-sized tiles, which also visit each pair once."""
    n, b = k.shape[0], SYMMETRY_BLOCK
    gap = torch.zeros((), dtype=k.dtype, device=k.device)
    for i in range(0, n, b):
        for j in range(i, n, b):
            pair_gap = torch.linalg.vector_norm(k[i:i + b, j:j + b] - k[j:j + b, i:i + b].T, float("inf"))
            gap = torch.maximum(gap, pair_gap)
    return float(gap)


def as_targets(y: Any, n: int, device: torch.device, name: str = "y_train") -> Tensor:
    """Regression targets as (N, k) float64; (N,) means one output."""
    t = as_tensor(y, name, device)
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape (N,) or (N, k) with N = {n} rows (one per training point, as in "
                         f"the training kernel); got shape {tuple(t.shape)}.")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has zero outputs (shape {tuple(t.shape)}).")
    return t


def as_outputs(f: Any, rows: int, k: int, device: torch.device, name: str) -> Tensor:
    """A network's outputs on some points: (rows, k) float64, (rows,) accepted when k == 1."""
    t = as_tensor(f, name, device)
    if t.dim() == 1 and k == 1:
        t = t[:, None]
    if tuple(t.shape) != (rows, k):
        raise ValueError(f"{name} must have shape ({rows}, {k}) (points x outputs, like the targets); "
                         f"got shape {tuple(t.shape)}.")
    return t


def as_cross_kernel(a: Any, n: int, device: torch.device, name: str) -> Tensor:
    """A test-train kernel K(x, X) of shape (M, N)."""
    t = as_tensor(a, name, device)
    if t.dim() != 2 or t.shape[1] != n:
        raise ValueError(f"{name} must have shape (M, N) = (test points, {n} training points); "
                         f"got shape {tuple(t.shape)}. Compute it as kernel(x_test, x_train).")
    return t


def as_times(t: Any, name: str = "t") -> Tensor:
    """Times as a 1-D float64 CPU tensor: non-negative, not NaN, inf allowed (the limit)."""
    if isinstance(t, Tensor):
        values = t.detach().to("cpu", torch.float64)
    else:
        try:
            values = torch.as_tensor(np.asarray(t, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a number or a 1-D sequence of numbers; got {t!r}.") from exc
    if values.dim() > 1:
        raise ValueError(f"{name} must be a number or a 1-D sequence; got shape {tuple(values.shape)}.")
    values = values.reshape(-1)
    if values.numel() == 0:
        raise ValueError(f"{name} is empty; give at least one time.")
    if bool(torch.isnan(values).any()):
        raise ValueError(f"{name} contains NaN.")
    if bool((values < 0).any()):
        raise ValueError(f"{name} must be >= 0 (time since initialisation); got {values[values < 0].tolist()}.")
    return values


def as_steps(steps: Any) -> Tensor:
    """Numbers of gradient-descent steps: non-negative integers or inf."""
    values = as_times(steps, "steps")
    finite = values[torch.isfinite(values)]
    if bool((finite != finite.round()).any()):
        raise ValueError(f"steps must be whole numbers of gradient-descent steps (or inf); got {finite.tolist()}.")
    return values


MAX_RIDGE = 1e150
"""Largest ridge accepted: the solvers square it (norms of (Theta + ridge I) v), and 1e150^2 is
still far from float64's 1.8e308; a ridge anywhere near that swamps every kernel entry anyway."""


def check_ridge(ridge: Any) -> float:
    if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real):
        raise ValueError(f"ridge must be a finite number >= 0 (added to the diagonal of the training kernel); "
                         f"got {ridge!r}.")
    try:
        value = float(ridge)
    except OverflowError:  # an int beyond float64, e.g. 10**400
        value = math.inf
    if not math.isfinite(value) or value < 0 or value > MAX_RIDGE:
        shown = f"{ridge!r}" if value <= MAX_RIDGE else f"{value:.3g}"
        raise ValueError(f"ridge must be a finite number in [0, {MAX_RIDGE:g}] (added to the diagonal of the training "
                         f"kernel: one comparable to the kernel's diagonal regularises, a far larger one drowns the "
                         f"kernel and overflows float64 in the solvers); got {shown}.")
    return value


def check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return float(value)


def check_cov(cov: Any) -> str | None:
    if cov not in COV_MODES:
        raise ValueError(f"cov must be 'full' (covariance matrices), 'diag' (variances only) or None; got {cov!r}.")
    return cov
