"""Costs in function space, shared by kernel gradient flow and by training finite networks.

A cost maps the outputs on the N training points, F of shape (N, k), and the targets to a
scalar that is a mean over the points, C(F) = (1/N) sum_i l(F_i, y_i). Its gradient
dC/dF therefore carries the factor 1/N of the paper's inner product, and gradient descent on
the parameters moves the outputs as d/dt f(x) = -Theta(x, X) dC/dF(X)
= -(1/N) sum_i Theta(x, x_i) dl/df(x_i) (docs/conventions.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Loss = Callable[[Tensor, Tensor], Tensor]


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    r""":math:`C = \frac{1}{2N} \sum_i \lVert f(x_i) - y_i \rVert^2`, the paper's least-squares cost.

    Args:
        outputs: :math:`f(X)`, shape (N, k).
        targets: :math:`y`, shape (N, k).
    """
    return 0.5 * (outputs - targets).pow(2).sum(-1).mean()


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    r""":math:`C = -\frac{1}{N} \sum_i \log \operatorname{softmax}(f(x_i))_{y_i}`.

    Args:
        outputs: the logits :math:`f(X)`, shape (N, k).
        targets: integer classes in [0, k), shape (N,), or class probabilities, shape (N, k).
    """
    return F.cross_entropy(outputs, targets)


LOSSES: dict[str, Loss] = {"mse": mse, "cross_entropy": cross_entropy}


def get_loss(loss: str | Loss) -> Loss:
    """A cost by name ("mse", "cross_entropy") or a callable (outputs, targets) -> scalar mean cost."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; use one of {sorted(LOSSES)} or a callable "
                             "(outputs (N, k), targets) -> scalar (a mean over the N points).")
        return LOSSES[loss]
    if not callable(loss):
        raise TypeError(f"loss must be a name {sorted(LOSSES)} or a callable (outputs, targets) -> scalar; "
                        f"got {loss!r}.")
    return loss


def prepare_targets(loss: str | Loss, y: Any, n: int, dtype: torch.dtype, device: torch.device,
                    name: str = "y_train") -> Tensor:
    """Targets as a tensor the cost accepts: (N, k) floats for "mse" ((N,) becomes (N, 1)), integer
    classes (N,) or probabilities (N, k) for "cross_entropy", as given (checked finite) for a callable."""
    t = y.detach() if isinstance(y, Tensor) else torch.as_tensor(y)
    if t.dim() == 0 or t.shape[0] != n:
        raise ValueError(f"{name} must have N = {n} rows (one per training point); got shape {tuple(t.shape)}.")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has NaN or infinite entries; remove or impute them first.")
    t = t.to(device)
    if loss == "cross_entropy" and not t.is_floating_point():
        if t.dim() != 1:
            raise ValueError(f"integer class labels must have shape (N,); got {tuple(t.shape)}.")
        if bool((t < 0).any()):
            raise ValueError(f"{name} has negative class labels; classes must be 0 .. k-1.")
        return t.long()
    if t.is_floating_point() or loss == "mse":
        t = t.to(dtype)
    if loss == "mse" and t.dim() == 1:
        t = t[:, None]
    return t


def output_count(loss: str | Loss, targets: Tensor) -> int:
    """How many outputs k the targets imply (classes for integer labels)."""
    if loss == "cross_entropy" and not targets.is_floating_point():
        return int(targets.max()) + 1
    return 1 if targets.dim() == 1 else targets.shape[1]


def check_targets(loss: str | Loss, targets: Tensor, k: int) -> None:
    """Targets consistent with k outputs (a clear error instead of a failure inside the cost)."""
    if loss == "cross_entropy" and not targets.is_floating_point():
        if int(targets.max()) >= k:
            raise ValueError(f"class label {int(targets.max())} needs at least {int(targets.max()) + 1} outputs; "
                             f"the model has {k}.")
    elif isinstance(loss, str) and (targets.dim() != 2 or targets.shape[1] != k):
        raise ValueError(f"targets have shape {tuple(targets.shape)} but the model has {k} outputs; "
                         f"give (N, {k}) targets.")
