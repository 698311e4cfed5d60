"""The arrays one prediction call needs, checked against the training set once for both solvers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._checks import as_cross_kernel, as_outputs, as_tensor, check_cov


@dataclass
class Request:
    """A checked prediction request.

    residual: (N, k) y - f_0(X) (or y over initialisations); base_train / base_test: f_0 on the
    training / test points or None; cross: Theta(x, X) (M, N) or None; nngp_cross: Sigma(x, X)
    and prior: Sigma(x, x) (M, M) or its diagonal (M,), set when the test covariance is wanted;
    cov: "full", "diag" or None (None also when f_0 is given: one trajectory has no spread);
    train_cov: whether the training-point covariance is wanted (and nngp_train is known).
    """

    residual: Tensor
    base_train: Tensor | None
    base_test: Tensor | None
    cross: Tensor | None
    nngp_cross: Tensor | None
    prior: Tensor | None
    cov: str | None
    train_cov: bool


def parse_request(y_train: Tensor, nngp_train: Tensor | None, ntk_test_train: Any, nngp_test_train: Any,
                  nngp_test: Any, cov: Any, f0_train: Any, f0_test: Any, train_cov: bool) -> Request:
    """Check one prediction call's arrays against the training set and gather them in a `Request`.

    Args:
        y_train: the targets (N, k), already checked.
        nngp_train: Sigma(X, X) (N, N) held by the flow, or None.
        ntk_test_train: Theta(x, X) (M, N), or None for training points only.
        nngp_test_train, nngp_test: Sigma(x, X) (M, N) and Sigma(x, x) (M, M) (or its diagonal
            (M,) for cov="diag"), needed for the test covariance over initialisations.
        cov: "full", "diag" or None.
        f0_train, f0_test: one network's outputs f_0(X) (N, k) and f_0(x) (M, k), both or neither
            (neither: predict over random initialisations).
        train_cov: whether the covariance on the training points is wanted.

    Returns:
        The request; ``cov`` is dropped (None) when f_0 is given, and ``train_cov`` is False when
        no covariance is wanted or nngp_train is unknown.

    Raises:
        ValueError: test kernels without ntk_test_train, only one of f0_train / f0_test, a test
            covariance without all three NNGP kernels, or shapes that disagree (the message says
            which array and what shape it needs).
    """
    cov = check_cov(cov)
    n, k, device = y_train.shape[0], y_train.shape[1], y_train.device
    if ntk_test_train is None and any(a is not None for a in (nngp_test_train, nngp_test, f0_test)):
        raise ValueError("test kernels or f0_test were given without ntk_test_train = Theta(x_test, x_train).")
    if (f0_test is None) != (f0_train is None) and ntk_test_train is not None:
        raise ValueError("give both f0_train and f0_test (the network's outputs on train and test points), "
                         "or neither (to predict over random initialisations).")
    base_train = None if f0_train is None else as_outputs(f0_train, n, k, device, "f0_train")
    residual = y_train if base_train is None else y_train - base_train
    cov = cov if base_train is None else None
    request = Request(residual=residual, base_train=base_train, base_test=None, cross=None, nngp_cross=None,
                      prior=None, cov=cov, train_cov=bool(train_cov) and cov is not None and nngp_train is not None)
    if ntk_test_train is None:
        return request
    request.cross = as_cross_kernel(ntk_test_train, n, device, "ntk_test_train")
    m = request.cross.shape[0]
    if base_train is not None:
        request.base_test = as_outputs(f0_test, m, k, device, "f0_test")
    if cov is None or (nngp_test_train is None and nngp_test is None):
        return request
    if nngp_train is None or nngp_test_train is None or nngp_test is None:
        raise ValueError("the covariance over initialisations needs nngp_train (when building the flow), "
                         "nngp_test_train = Sigma(x_test, x_train) and nngp_test = Sigma(x_test, x_test); "
                         "pass all three, or cov=None for the mean only.")
    request.nngp_cross = as_cross_kernel(nngp_test_train, n, device, "nngp_test_train")
    if request.nngp_cross.shape[0] != m:
        raise ValueError(f"nngp_test_train has {request.nngp_cross.shape[0]} rows but ntk_test_train has {m}.")
    prior = as_tensor(nngp_test, "nngp_test", device)
    if cov == "diag" and tuple(prior.shape) == (m, m):
        prior = prior.diagonal()
    want = (m, m) if cov == "full" else (m,)
    if tuple(prior.shape) != want:
        raise ValueError(f"nngp_test must have shape {want} for cov={cov!r}; got {tuple(prior.shape)}.")
    request.prior = (prior + prior.T) / 2 if cov == "full" else prior
    return request


def quadratic_cov(left: Tensor, middle: Tensor, cross: Tensor, prior: Tensor, cov: str) -> Tensor:
    """prior + L S L^T - L C - C^T L^T (the cov_t formula) for L (M, N), S (N, N), C (N, M).

    "full": (M, M), symmetric by construction (half + half^T); "diag": (M,), clamped at 0
    against rounding (variances).
    """
    if cov == "full":
        half = left @ (0.5 * (middle @ left.T) - cross)
        return prior + half + half.T
    return (prior + diagonal_quadratic(left, middle) - 2 * (left * cross.T).sum(-1)).clamp_min(0)


QUADRATIC_BLOCK = 512
"""Block side of `diagonal_quadratic`: at N = 4,000 eight block rows, so 56% of the full product's flops."""


def diagonal_quadratic(left: Tensor, middle: Tensor) -> Tensor:
    """diag(L S L^T), (M,), for L (M, N) and a symmetric S (N, N), from the blocks on and above S's diagonal.

    With L = [L_1 .. L_b] and S in blocks S_ij, diag(L S L^T) = sum_i rowsum((L_i S_ii) * L_i)
    + 2 sum_(i<j) rowsum((L_i S_ij) * L_j): one (M, B) x (B, N - iB) product per block row i,
    M N^2 (1 + 1/b) flops against 2 M N^2 for rowsum((L S) * L). Only S's upper blocks are read
    (S symmetric to rounding is enough)."""
    m, n = left.shape
    out = torch.zeros(m, dtype=left.dtype, device=left.device)
    for i0 in range(0, n, QUADRATIC_BLOCK):
        i1 = min(i0 + QUADRATIC_BLOCK, n)
        row = (left[:, i0:i1] @ middle[i0:i1, i0:]).mul_(left[:, i0:])
        out += row[:, :i1 - i0].sum(-1) + 2 * row[:, i1 - i0:].sum(-1)
    return out


def stack_or_none(items: list[Tensor]) -> Tensor | None:
    """The per-time results stacked along a new leading time axis (T, ...), or None for no items."""
    return torch.stack(items) if items else None
