"""Multi-head self-attention of finite networks, the layer whose infinite-width kernels
`torchntk.engine.attention.SelfAttention` computes.

For an input a of shape (N, C, *positions) with its P positions flattened, head h has tied
query / key weights W_h (C, d) and value weights V_h (C, d); the output weights O are
(C_out, H, d). In the NTK parameterisation (all weights iid N(0, 1)):

    keys_h   = (a + positional_std e) W_h                                   (N, P, d)
    G_h      = mechanism(query_key_std / (C d) keys_h keys_h^T)             (N, P, P)
    heads_h  = G_h a V_h                                                    (N, P, d)
    out      = value_std / sqrt(C H d) sum_h heads_h O_h^T + bias_std b     (N, C_out, P)

(neural-tangents' ``stax.GlobalSelfAttention(..., linear_scaling=True)``), with softmax over
the key positions (those that hold data, under a mask: `torchntk.engine.mask`), and e (C, P)
the positional embeddings (a parameter, as there) when
``positional="sum"``. The heads and their width follow the layer's width w: H = floor(sqrt(w))
heads of d = floor(w / H) channels each, so both grow without bound as w does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .modules import current_mask, real_only
from .weighted import layer_generator

MECHANISMS = ("softmax", "identity", "abs", "relu")
"""The maps from attention logits to attention weights."""


def attention_heads(width: int) -> tuple[int, int]:
    """(heads H, channels per head d) of a self-attention layer of width ``width``:
    H = floor(sqrt(width)), d = floor(width / H)."""
    heads = max(1, math.isqrt(int(width)))
    return heads, max(1, int(width) // heads)


def attention_weights(logits: Tensor, mechanism: str, keys: Tensor | None = None) -> Tensor:
    """The attention weights from logits (..., P, P): softmax over the last axis (the key
    positions), or the identity, abs or relu entrywise. ``keys``: a boolean (n, P) mask of the
    key positions that hold data (logits (n, ..., P, P)); padding keys get weight 0 (a logit of
    -inf before the softmax), as neural-tangents masks them."""
    if keys is not None:
        keep = keys.reshape(keys.shape[0], *([1] * (logits.dim() - 2)), keys.shape[-1])
        if mechanism == "softmax":
            logits = logits.masked_fill(~keep, -math.inf)
    if mechanism == "softmax":
        weights = torch.softmax(logits, dim=-1)
    elif mechanism == "abs":
        weights = logits.abs()
    elif mechanism == "relu":
        weights = torch.relu(logits)
    else:
        weights = logits
    if keys is not None and mechanism != "softmax":
        weights = weights * keep.to(weights.dtype)
    return weights


class NTKSelfAttention(nn.Module):
    r"""Multi-head global self-attention in the NTK parameterisation (module docstring).

    Attributes:
        key: (H, C_in, d), the tied query / key weights.
        value: (H, C_in, d).
        out: (C_out, H, d).
        bias: (C_out,).
        positional: (C_in, *positions), the positional embeddings (only with ``positional="sum"``).
        parameterization: "ntk" (weights iid N(0, 1), scales in the forward) or "standard"
            (the scales drawn into the weights: key ~ N(0, query_key_std / (C_in d)),
            value ~ N(0, 1), out ~ N(0, value_std^2 / (C_in H d)), bias ~ N(0, bias_std^2),
            embeddings ~ N(0, positional_std^2); the same function from the same seed).
    """

    def __init__(self, in_channels: int, out_channels: int, positions: tuple[int, ...], *, mechanism: str,
                 query_key_std: float, value_std: float, bias_std: float, positional: str | None,
                 positional_std: float, parameterization: str, seed: int, index: int, dtype: torch.dtype,
                 device) -> None:
        super().__init__()
        heads, head_width = attention_heads(out_channels)
        self.mechanism, self.index, self.parameterization = mechanism, index, parameterization
        self.heads, self.head_width = heads, head_width
        generator = layer_generator(seed, index)

        def draw(*shape):
            return torch.randn(*shape, generator=generator, dtype=torch.float64)
        key, value = draw(heads, in_channels, head_width), draw(heads, in_channels, head_width)
        out, bias = draw(out_channels, heads, head_width), draw(out_channels)
        emb = draw(in_channels, *positions) if positional == "sum" else None
        logit_scale = float(query_key_std) / (in_channels * head_width)
        out_scale = float(value_std) / math.sqrt(in_channels * heads * head_width)
        emb_scale, bias_scale = float(positional_std), float(bias_std)
        if parameterization == "standard":
            # keys enter the logits twice: each copy carries the square root of the logit scale
            key, out, bias = key * math.sqrt(logit_scale), out * out_scale, bias * bias_scale
            emb = None if emb is None else emb * emb_scale
            logit_scale = out_scale = emb_scale = bias_scale = 1.0
        self.logit_scale, self.out_scale = logit_scale, out_scale
        self.emb_scale, self.bias_scale = emb_scale, bias_scale
        self.key = nn.Parameter(key.to(dtype=dtype, device=device))
        self.value = nn.Parameter(value.to(dtype=dtype, device=device))
        self.out = nn.Parameter(out.to(dtype=dtype, device=device))
        self.bias = nn.Parameter(bias.to(dtype=dtype, device=device))
        self.positional = None if emb is None else nn.Parameter(emb.to(dtype=dtype, device=device))

    def forward(self, a: Tensor) -> Tensor:
        a = real_only(a)
        n, channels, *positions = a.shape
        if self.positional is not None and tuple(positions) != tuple(self.positional.shape[1:]):
            raise ValueError(f"this self-attention layer's positional embeddings cover positions "
                             f"{tuple(self.positional.shape[1:])}, but its input has {tuple(positions)}; build the "
                             "network for this input shape (spec.network(..., input_shape=...)).")
        flat = a.reshape(n, channels, -1)
        keyed = flat if self.positional is None else flat + self.emb_scale * self.positional.reshape(channels, -1)
        keys = torch.einsum("ncp,hcd->nhpd", keyed, self.key)
        mask = current_mask()
        weights = attention_weights(self.logit_scale * (keys @ keys.transpose(-1, -2)), self.mechanism,
                                    None if mask is None else mask.reshape(n, -1))
        values = torch.einsum("ncp,hcd->nhpd", flat, self.value)
        heads = weights @ values                                   # (N, H, P, d)
        out = torch.einsum("nhpd,ohd->nop", heads, self.out) * self.out_scale
        out = out + (self.bias * self.bias_scale)[:, None]
        return out.reshape(n, -1, *positions)

    def extra_repr(self) -> str:
        return (f"{self.key.shape[1]}, {self.out.shape[0]}, heads={self.heads}, head_width={self.head_width}, "
                f"mechanism={self.mechanism!r}, positional={self.positional is not None}, "
                f"parameterization={self.parameterization!r}")
