"""Global self-attention over the positions of sequences and images, at infinite width.

With the positions flattened (P of them) and K the input's covariance over pairs of positions,
the attention weights of an input x are deterministic in the limit (query and key weights tied,
logits scaled by 1 / n_key, heads and widths to infinity):

    G(x)(p, q) = mechanism(query_key_std * (K(x, x)(p, q) + positional_std^2 [p = q]))

(softmax over q, or identity / abs / relu entrywise; the positional term with
``positional="sum"`` only), and the kernels of the output are

    Sigma'(x, x') = value_std^2 G(x) K(x, x') G(x')^T + bias_std^2
    Theta'(x, x') = value_std^2 G(x) (Theta(x, x') + 2 K(x, x')) G(x')^T + bias_std^2

(the value and output weights each contribute value_std^2 G K G^T; the key weights' share
vanishes). These are neural-tangents' ``stax.GlobalSelfAttention(..., linear_scaling=True)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from .._finite import check_scale
from ..networks.attention import MECHANISMS, NTKSelfAttention, attention_weights
from .base import BuildContext, Layer, Scale, number, show, square
from .maps import scaled
from .mask import MASK
from .signal import Signal, fail
from .state import KernelState

POSITIONAL = (None, "sum")
"""The positional embeddings of `SelfAttention`: none, or random ones added to the keys' input."""


def _sandwich(t: Tensor, ga: Tensor, gb: Tensor) -> Tensor:
    """ga[a] t[a, b] gb[b]^T for every pair: t (n1, n2, P, P), ga (n1, P, P), gb (n2, P, P).

    As two batched GEMMs over whole rows and columns of the block, (P, P) by (P, n2 P) for each
    row a and (n1 P, P) by (P, P) for each column b, rather than n1 n2 products of P x P
    matrices, which run several times slower; each needs its operand transposed once."""
    n1, n2, p, _ = t.shape
    left = torch.matmul(ga, t.transpose(1, 2).reshape(n1, p, n2 * p))           # (a, p, b, q')
    right = left.view(n1, p, n2, p).permute(2, 0, 1, 3).reshape(n2, n1 * p, p)  # (b, a p, q')
    return torch.bmm(right, gb.transpose(1, 2)).view(n2, n1, p, p).transpose(0, 1).contiguous()


def _to_flat(t: Tensor, spatial: int, prefix: int) -> Tensor:
    """(prefix, H, H', W, W') -> (prefix, P, P): the full layout with positions flattened."""
    order = list(range(prefix)) + [prefix + 2 * a for a in range(spatial)] + [prefix + 2 * a + 1
                                                                                for a in range(spatial)]
    t = t.permute(order)
    positions = math.prod(t.shape[prefix:prefix + spatial])
    return t.reshape(*t.shape[:prefix], positions, positions)


def _from_flat(t: Tensor, sizes: tuple[int, ...], prefix: int) -> Tensor:
    """The inverse of `_to_flat` for spatial sizes ``sizes``."""
    spatial = len(sizes)
    t = t.reshape(*t.shape[:prefix], *sizes, *sizes)
    order = list(range(prefix)) + [i for a in range(spatial) for i in (prefix + a, prefix + spatial + a)]
    return t.permute(order).contiguous()


class SelfAttention(Layer):
    r"""Global self-attention over all positions of (N, C, L) or (N, C, H, W) inputs, in the
    NTK parameterisation, at infinite width: neural-tangents'
    ``stax.GlobalSelfAttention(..., linear_scaling=True)`` with query and key weights tied and
    logits scaled by :math:`1/n_\text{key}`.

    With the :math:`P` positions flattened, :math:`K` the input's covariance over pairs of
    positions and :math:`\Theta` its NTK, the attention weights of input :math:`x` are

    .. math::

        G(x) = \operatorname{mechanism}\big(\sigma_{qk}\,(K(x, x) + \sigma_e^2 I_P)\big)
        \in \mathbb R^{P \times P}

    (softmax over each row, or identity / abs / relu entrywise; :math:`\sigma_e^2 I_P` only
    with ``positional="sum"``), and

    .. math::

        \Sigma'(x, x') = \sigma_v^2\, G(x)\, K(x, x')\, G(x')^\top + \beta^2, \qquad
        \Theta'(x, x') = \sigma_v^2\, G(x)\, \big(\Theta(x, x') + 2 K(x, x')\big)\, G(x')^\top + \beta^2 .

    The finite layer (`torchntk.networks.NTKSelfAttention`) of width :math:`w` has
    :math:`H = \lfloor\sqrt w\rfloor` heads of :math:`\lfloor w / H\rfloor` channels each.

    Args:
        mechanism: "softmax", "identity", "abs" or "relu", the map from logits to weights.
        query_key_std: :math:`\sigma_{qk}`, neural-tangents' ``W_query_std * W_key_std``.
        value_std: :math:`\sigma_v`, neural-tangents' ``W_value_std * W_out_std``.
        bias_std: :math:`\beta`, the scale of the output bias (0: none, neural-tangents' ``b_std=None``).
        positional: None, or "sum": random positional embeddings of variance :math:`\sigma_e^2`,
            independent across positions, added to the input of the keys (not the values):
            neural-tangents' ``pos_emb_type="SUM"``, ``pos_emb_decay_fn=None``, ``val_pos_emb=False``.
        positional_std: :math:`\sigma_e`, neural-tangents' ``W_pos_emb_std``.
    """

    weighted = True

    def __init__(self, *, mechanism: str = "softmax", query_key_std: Scale = 1.0, value_std: Scale = 1.0,
                 bias_std: Scale = 0.0, positional: str | None = None, positional_std: Scale = 1.0) -> None:
        self.mechanism, self.positional = mechanism, positional
        self.query_key_std, self.value_std, self.bias_std = query_key_std, value_std, bias_std
        self.positional_std = positional_std

    def __repr__(self) -> str:
        return (f"SelfAttention(mechanism={self.mechanism!r}, query_key_std={show(self.query_key_std)}, "
                f"value_std={show(self.value_std)}, bias_std={show(self.bias_std)}, positional={self.positional!r}, "
                f"positional_std={show(self.positional_std)})")

    def to_dict(self) -> dict[str, Any]:
        return {"layer": "SelfAttention", "mechanism": self.mechanism, "query_key_std": number(self.query_key_std),
                "value_std": number(self.value_std), "bias_std": number(self.bias_std),
                "positional": self.positional, "positional_std": number(self.positional_std)}

    def _check(self, where: str) -> None:
        if self.mechanism not in MECHANISMS:
            raise fail(where, f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}.")
        if self.positional not in POSITIONAL:
            raise fail(where, f"positional must be None (no positional embeddings) or 'sum', got {self.positional!r}.")
        for name in ("query_key_std", "value_std", "bias_std", "positional_std"):
            value = getattr(self, name)
            if isinstance(value, Tensor):
                if value.numel() != 1 or not value.is_floating_point():
                    raise fail(where, f"{name} must be a real scalar, got a tensor of shape {tuple(value.shape)}.")
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise fail(where, f"{name} must be a real number, got {type(value).__name__}.")
            try:
                check_scale(name, float(value))
            except ValueError as exc:
                raise fail(where, str(exc)) from None

    def signal(self, sig: Signal, where: str) -> Signal:
        self._check(where)
        if sig.spatial == 0 or sig.flat:
            raise fail(where, f"attends over positions: it needs (N, C, L) or (N, C, H, W) inputs, but it got "
                              f"{sig.describe()}. Put it before Flatten / GlobalAvgPool, on sequences or images.")
        return sig.after_weights()

    def need(self, full_out):
        return True

    def _weights(self, self_pairs: Tensor, spatial: int, keys: Tensor | None) -> Tensor:
        """G (n, P, P) from the inputs' self-covariances (n, *S) in the full layout; ``keys``
        the inputs' mask (n, *positions), whose padding positions get no weight, or None."""
        cov = _to_flat(self_pairs, spatial, 1)
        if self.positional == "sum":
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            cov = cov + square(self.positional_std) * eye
        return attention_weights(self.query_key_std * cov, self.mechanism,
                                 None if keys is None else keys.reshape(keys.shape[0], -1))

    def kernel(self, state: KernelState, full_out) -> KernelState:
        spatial, prefix = state.spatial, state.prefix
        sizes = tuple(state.nngp.shape[prefix:][::2])
        m1, m2 = state.side.get(MASK, (None, None))
        g1 = self._weights(state.rows_self(), spatial, m1)
        g2 = g1 if (prefix == 1 or state.same) else self._weights(state.cols_self(), spatial, m2)
        w2, b2 = square(self.value_std), square(self.bias_std)

        def weigh(t: Tensor, ga: Tensor, gb: Tensor, pre: int) -> Tensor:
            """ga t gb^T per pair, on the flattened positions."""
            flat = _to_flat(t, spatial, pre)
            flat = _sandwich(flat, ga, gb) if pre == 2 else ga @ flat @ gb.transpose(-1, -2)
            return _from_flat(flat, sizes, pre)

        weighed = weigh(state.nngp, g1, g2, prefix)
        ntk = state.ntk
        if ntk is not None and ntk.dim() == 0:      # the input: Theta = 0
            ntk = w2 * (2 * weighed) + b2
        elif ntk is not None:
            # G (Theta + 2 K) G^T: one product, Theta + 2 K formed in the state's own tensor
            inner = ntk.add_(state.nngp, alpha=2) if not torch.is_grad_enabled() else ntk + 2 * state.nngp
            ntk = scaled(weigh(inner, g1, g2, prefix), w2, b2)
        nngp = scaled(weighed, w2, b2)
        self1, self2 = state.self1, state.self2
        if state.self_states() is not None:
            self1 = scaled(weigh(self1, g1, g1, 1), w2, b2)
            self2 = scaled(weigh(self2, g2, g2, 1), w2, b2)
        out = replace(state, nngp=nngp, ntk=ntk, self1=self1, self2=self2)
        return out if full_out else out.to_diagonal()

    def build(self, sig: Signal, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        width, index = ctx.next_layer()
        return NTKSelfAttention(channels, width, tuple(sig.shape), mechanism=self.mechanism,
                                query_key_std=number(self.query_key_std), value_std=number(self.value_std),
                                bias_std=number(self.bias_std), positional=self.positional,
                                positional_std=number(self.positional_std), parameterization="ntk",
                                seed=ctx.seed, index=index, dtype=ctx.dtype, device=ctx.device), width
