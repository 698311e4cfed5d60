"""The pNTK: the empirical NTK of the outputs' scaled sum (Mohamadi et al., 2023).

For a model f with k outputs, g(x) = (1/sqrt(k)) sum_k f_k(x) has the scalar kernel

    pNTK(x, x') = grad g(x) . grad g(x') = (1/k) sum_{k, k'} Theta_kk'(x, x'),

of shape (N1, N2): the mean of all k^2 output pairs of the full kernel, i.e. the trace kernel
(1/k) sum_k Theta_kk plus (1/k) sum_{k != k'} Theta_kk'. It costs as much as one output.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..networks import NTKNetwork


def pntk_module(model: nn.Module, k: int, dtype: torch.dtype, device: torch.device) -> nn.Sequential:
    """nn.Sequential(model, readout) computing g(x) = (1/sqrt(k)) sum_k f_k(x), shape (N, 1).

    The readout is a frozen nn.Linear(k, 1) of weights 1/sqrt(k) and no bias, so it adds no
    parameter to the kernel and every method of `empirical_ntk` applies: a torchntk network or an
    nn.Sequential chain stays a chain (its modules are shared, not copied, and not modified).
    ``model`` maps (N, ...) to (N, k).
    """
    readout = nn.Linear(k, 1, bias=False, dtype=dtype, device=device)
    readout.weight.requires_grad_(False)
    with torch.no_grad():
        readout.weight.fill_(1.0 / math.sqrt(k))
    if isinstance(model, NTKNetwork) and isinstance(model.body, nn.Sequential):
        # its forward is its body once built (the caller has checked the inputs through the network)
        return nn.Sequential(*model.body, readout)
    if isinstance(model, nn.Sequential):
        return nn.Sequential(*model, readout)
    return nn.Sequential(model, readout)
