"""The kernel maps of the layers, on `KernelState`s (one tile at a time).

    affine (Dense, Conv):   Sigma' = w^2 L(K) + b^2,       Theta' = w^2 L(Theta) + Sigma'
      standard:                                            Theta' = n_in L(K) + w^2 L(Theta) + 1
    linear (pooling):       Sigma' = L(K),                 Theta' = L(Theta)
    nonlinearity:           Sigma' = E[s(u) s(v)],         Theta' = Theta * E[s'(u) s'(v)]
    normalisation:          Sigma' = K / sqrt(v1 v2),      Theta' = Theta / sqrt(v1 v2)

with L a linear map on the trailing (spatial) dims and (u, v) the centred Gaussian pair of
covariance [[v1, K], [K, v2]] at each pair of positions. The same map is applied to the
self-pairs that the state carries; on a block of x against itself they are re-read from the
block afterwards (see state.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from ..activations import Activation
from ..numerics import safe_rsqrt
from . import layout
from .mask import MASK
from .state import KernelState

Map = Callable[[Tensor, int], Tensor]
"""A linear map on kernel tensors: f(t, prefix) -> t' (acts on the dims after the prefix)."""


def scaled(t: Tensor, w2, b2) -> Tensor:
    """w2 * t + b2, in place when nothing is differentiated (t is a fresh temporary, or a tensor of
    the state being replaced, which the layer owns)."""
    if not torch.is_grad_enabled() and not isinstance(w2, Tensor) and not isinstance(b2, Tensor):
        if w2 != 1:
            t.mul_(w2)
        return t.add_(b2) if b2 != 0 else t
    return w2 * t + b2


def affine(state: KernelState, w2, b2, f: Map, *, fan_in: float | None = None, **changes) -> KernelState:
    """A layer with fresh weights and bias: Sigma' = w2 f(K) + b2, Theta' = w2 f(Theta) + Sigma'
    (the NTK parameterisation). With ``fan_in`` c, the standard parameterisation (weights and
    bias at their initial scales, so their gradients carry no weight_std or bias_std):
    Theta' = c f(K) + w2 f(Theta) + 1, the 1 from the bias, whatever its scale."""
    if fan_in is not None:
        return _standard_affine(state, w2, b2, f, fan_in, changes)
    nngp = scaled(f(state.nngp, state.prefix), w2, b2)
    ntk = state.ntk
    if ntk is not None:
        if ntk.dim() == 0:          # the input: no parameters below, Theta' = Sigma'
            ntk = nngp.clone()
        else:
            ntk = scaled(f(ntk, state.prefix), w2, 0.0)
            ntk = ntk.add_(nngp) if not torch.is_grad_enabled() else ntk + nngp
    selves = state.self_states()
    if selves is not None:
        selves = tuple(_replace_nngp(s, scaled(f(s.nngp, 1), w2, b2)) for s in selves)
    return state.with_selves(nngp, ntk, selves, **changes)


def _standard_affine(state: KernelState, w2, b2, f: Map, fan_in: float, changes: dict) -> KernelState:
    mapped = f(state.nngp, state.prefix)
    ntk = state.ntk
    if ntk is not None:
        ntk = fan_in * mapped + 1.0 if ntk.dim() == 0 else fan_in * mapped + scaled(f(ntk, state.prefix), w2, 1.0)
    nngp = scaled(mapped, w2, b2)     # last: it may overwrite ``mapped`` in place
    selves = state.self_states()
    if selves is not None:
        selves = tuple(_replace_nngp(s, scaled(f(s.nngp, 1), w2, b2)) for s in selves)
    return state.with_selves(nngp, ntk, selves, **changes)


def linear(state: KernelState, f: Map, **changes) -> KernelState:
    """A parameter-free linear layer (pooling): the same map on every kernel."""
    ntk = state.ntk
    if ntk is not None and ntk.dim() > 0:
        ntk = f(ntk, state.prefix)
    selves = state.self_states()
    if selves is not None:
        selves = tuple(_replace_nngp(s, f(s.nngp, 1)) for s in selves)
    return state.with_selves(f(state.nngp, state.prefix), ntk, selves, **changes)


def nonlinearity(state: KernelState, act: Activation) -> KernelState:
    """Sigma' = E[s(u) s(v)] and Theta' = Theta E[s'(u) s'(v)] at every pair of positions."""
    need_ntk = state.ntk is not None
    v1, v2 = state.variance_pair()
    selves = state.self_states()
    ess, edd = act.expectations(v1, v2, state.nngp, derivative=need_ntk, overwrite=True)
    ntk = None
    if need_ntk:
        ntk = state.ntk.mul_(edd) if not torch.is_grad_enabled() and state.ntk.dim() > 0 else state.ntk * edd
    if selves is not None:
        selves = tuple(_replace_nngp(s, _self_expectation(s, act)) for s in selves)
    return state.with_selves(ess, ntk, selves)


def _self_expectation(s: KernelState, act: Activation) -> Tensor:
    w1, w2 = s.variance_pair()
    return act.expectations(w1, w2, s.nngp, derivative=False, overwrite=True)[0]


def normalise(state: KernelState, eps: float, axes: tuple[int, ...] = ()) -> KernelState:
    """Divide every kernel by sqrt((v1 + eps)(v2 + eps)), v the variances at each position, or
    their mean over the spatial ``axes`` (0 the first position axis) normalised together (over
    the real positions under a mask, `torchntk.engine.mask`); after
    Flatten, v is the mean variance over all positions (the normalisation runs over all
    C * H * W features of an input)."""
    def scale(s: KernelState) -> Tensor:
        v1, v2 = s.variance_pair()
        if s.flat and s.spatial:
            dims1 = tuple(range(s.prefix, v1.dim()))
            v1, v2 = v1.mean(dim=dims1, keepdim=True), v2.mean(dim=dims1, keepdim=True)
        elif axes:
            # in the full layout position axis a holds dims (p_a, q_a); v1 is singleton in q_a and
            # v2 in p_a, so a mean over both is each one's mean over its own positions
            step = 2 if s.full else 1
            dims = tuple(d for a in axes for d in range(s.prefix + step * a, s.prefix + step * a + step))
            masks = s.side.get(MASK)
            if masks is None:
                v1, v2 = v1.mean(dim=dims, keepdim=True), v2.mean(dim=dims, keepdim=True)
            else:   # the mean over real positions: padding holds zero variance, and is not counted
                c1 = layout.rows(masks[0].to(v1.dtype), s.spatial, s.full, s.prefix).sum(dim=dims, keepdim=True)
                c2 = layout.cols(masks[1].to(v2.dtype), s.spatial, s.full, s.prefix).sum(dim=dims, keepdim=True)
                v1 = v1.sum(dim=dims, keepdim=True) / c1.clamp(min=1)
                v2 = v2.sum(dim=dims, keepdim=True) / c2.clamp(min=1)
        # each side's 1 / sqrt(v + eps) on its own small tensor, then one broadcast product: the
        # root and quotient of the full (v1 + eps)(v2 + eps) would each take a pass over the block
        return safe_rsqrt(v1 + eps) * safe_rsqrt(v2 + eps)

    def times(t: Tensor, factor: Tensor) -> Tensor:
        # the state's own tensor may be overwritten when nothing is differentiated
        if not torch.is_grad_enabled():     # factor broadcasts against t, never beyond it
            return t.mul_(factor)
        return t * factor

    factor = scale(state)
    ntk = state.ntk
    if ntk is not None and ntk.dim() > 0:
        ntk = times(ntk, factor)
    selves = state.self_states()
    if selves is not None:
        selves = tuple(_replace_nngp(s, times(s.nngp, scale(s))) for s in selves)
    return state.with_selves(times(state.nngp, factor), ntk, selves)


def readout(state: KernelState, mean: Callable[[Tensor, int], Tensor]) -> KernelState:
    """From spatial kernels to vector kernels by a mean over positions (Flatten + Dense, GAP)."""
    return linear(state, mean, spatial=0, full=False, flat=False)


def _replace_nngp(s: KernelState, nngp: Tensor) -> KernelState:
    return replace(s, nngp=nngp)
