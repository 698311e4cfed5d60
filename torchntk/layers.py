"""The dense layer of the NTK parameterisation and the layer protocol.

A layer of a network description transforms a `KernelState` (``apply``); finite networks build
their modules from the same layer objects, so theory and experiment share one description.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from ._finite import check_scale
from .activations import Activation
from .kernel_state import KernelState

Scale = float | Tensor


def _square(scale: Scale, like: Tensor) -> Scale:
    if isinstance(scale, Tensor):
        return scale.to(dtype=like.dtype, device=like.device) ** 2
    return float(scale) ** 2


def _affine(t: Tensor, w2: Scale, b2: Scale) -> Tensor:
    """w2 * t + b2, in place when nothing needs gradients (t is always a fresh temporary)."""
    if not torch.is_grad_enabled() and not isinstance(w2, Tensor) and not isinstance(b2, Tensor):
        if w2 != 1:
            t.mul_(w2)
        return t.add_(b2) if b2 != 0 else t
    return w2 * t + b2


class Dense:
    """a~(l+1) = (weight_std / sqrt(n_l)) W a(l) + bias_std * b, with W, b iid N(0, 1).

    On kernels (docs/conventions.md, Proposition 1 and Theorem 1):

        Sigma' = weight_std^2 * K + bias_std^2          (K the covariance of a(l))
        Theta' = weight_std^2 * Theta_K + Sigma'        (Theta_K the NTK of a(l))

    Args:
        bias_std: beta, the scale of the bias (the paper's experiments use 0.1).
        weight_std: sigma_w (the paper's is 1). Either may be a scalar tensor with
            requires_grad=True to differentiate kernels in it.
    """

    def __init__(self, bias_std: Scale = 0.1, weight_std: Scale = 1.0) -> None:
        self.bias_std = bias_std
        self.weight_std = weight_std

    def __repr__(self) -> str:
        return f"Dense(bias_std={_show(self.bias_std)}, weight_std={_show(self.weight_std)})"

    def check(self) -> None:
        """Raise unless both scales are finite, non-negative real scalars."""
        for name in ("bias_std", "weight_std"):
            value = getattr(self, name)
            if isinstance(value, Tensor):
                if value.numel() != 1 or not value.is_floating_point():
                    raise TypeError(f"{name} must be a real scalar, got a tensor of shape {tuple(value.shape)} "
                                    f"and dtype {value.dtype}.")
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {type(value).__name__}.")
            check_scale(name, value)  # finite, >= 0, finite square (torchntk/_finite.py)

    def apply(self, k: KernelState) -> KernelState:
        """The layer's map on a kernel state (the class docstring's Sigma' and Theta'), with the
        variances mapped alike: var' = weight_std^2 var + bias_std^2. Shapes are kept."""
        w2, b2 = _square(self.weight_std, k.nngp), _square(self.bias_std, k.nngp)
        nngp = _affine(k.nngp, w2, b2)
        ntk = None
        if k.ntk is not None:  # a 0-dim ntk is the input's zero: it cannot hold a matrix in place
            ntk = _affine(k.ntk, w2, 0.0).add_(nngp) if k.ntk.dim() and not torch.is_grad_enabled() \
                else w2 * k.ntk + nngp
        if k.diagonal:
            return KernelState(nngp, ntk, nngp, nngp)
        if k.same:
            return _same_block(nngp, ntk)
        return KernelState(nngp, ntk, w2 * k.var1 + b2, w2 * k.var2 + b2)


def apply_activation(act: Activation, k: KernelState) -> KernelState:
    """K = E[s(u) s(v)], Theta_K = Theta * E[s'(u) s'(v)] for (u, v) ~ N(0, Sigma) (Theorem 1)."""
    need_ntk = k.ntk is not None
    # The state owns its nngp, so the activation may overwrite it (the diagonal path too: there
    # var1 and var2 are that same tensor, which keeps its arithmetic identical to the blocks').
    ess, edd = act.expectations(k.var1, k.var2, k.nngp, derivative=need_ntk, overwrite=True)
    ntk = None
    if need_ntk:
        ntk = k.ntk.mul_(edd) if not torch.is_grad_enabled() and k.ntk.dim() > 0 else k.ntk * edd
    if k.diagonal:
        return KernelState(ess, ntk, ess, ess)
    if k.same:
        return _same_block(ess, ntk)
    var1, _ = act.expectations(k.var1, k.var1, k.var1.clone(), derivative=False, overwrite=True)
    var2, _ = act.expectations(k.var2, k.var2, k.var2.clone(), derivative=False, overwrite=True)
    return KernelState(ess, ntk, var1, var2)


def _same_block(nngp: Tensor, ntk: Tensor | None) -> KernelState:
    """A diagonal block's variances are its own diagonal (exactly, see KernelState.same)."""
    var = nngp.diagonal().clone()
    return KernelState(nngp, ntk, var[:, None], var[None, :], same=True)


def _show(scale: Scale) -> str:
    return f"{scale.item():g}" if isinstance(scale, Tensor) else f"{scale:g}"
