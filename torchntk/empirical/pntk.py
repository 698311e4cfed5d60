"""The pNTK: the empirical NTK of the outputs' scaled sum (Mohamadi et al., 2023).

For a model f with k outputs, g(x) = (1/sqrt(k)) sum_k f_k(x) has the scalar kernel

    pNTK(x, x') = grad g(x) . grad g(x') = (1/k) sum_{k, k'} Theta_kk'(x, x'),

of shape (N1, N2): the mean of all k^2 output pairs of the full kernel, i.e. the trace kernel
(1/k) sum_k Theta_kk plus (1/k) sum_{k != k'} Theta_kk'. It costs as much as one output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..networks import NTKNetwork


def pntk_module(model: nn.Module, k: int, dtype: torch.dtype, device: torch.device, *,
                keywords: bool = False) -> nn.Module:
    """nn.Sequential(model, readout) computing g(x) = (1/sqrt(k)) sum_k f_k(x), shape (N, 1).

    The readout is a frozen nn.Linear(k, 1) of weights 1/sqrt(k) and no bias, so it adds no
    parameter to the kernel and every method of `empirical_ntk` applies: a torchntk network or an
    nn.Sequential chain stays a chain (its modules are shared, not copied, and not modified).
    ``model`` maps (N, ...) to (N, k). With ``keywords`` (a forward that takes per-example
    keyword tensors, ``model(x, **kw)``) it is a module that passes them on to ``model``'s own
    forward instead (an nn.Sequential passes nothing but x).
    """
    readout = nn.Linear(k, 1, bias=False, dtype=dtype, device=device)
    readout.weight.requires_grad_(False)
    with torch.no_grad():
        readout.weight.fill_(1.0 / math.sqrt(k))
    if keywords:
        return _Summed(model, readout)
    if isinstance(model, NTKNetwork) and isinstance(model.body, nn.Sequential):
        # its forward is its body once built (the caller has checked the inputs through the network)
        return nn.Sequential(*model.body, readout)
    if isinstance(model, nn.Sequential):
        return nn.Sequential(*model, readout)
    return nn.Sequential(model, readout)


class _Summed(nn.Module):
    """readout(model(x, **kw)): the pNTK's model for a forward with keyword tensors."""

    def __init__(self, model: nn.Module, readout: nn.Linear) -> None:
        super().__init__()
        self.model, self.readout = model, readout

    def forward(self, x: Tensor, **kwargs: Tensor) -> Tensor:
        return self.readout(self.model(x, **kwargs))
