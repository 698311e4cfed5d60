"""Empirical NTK of a convolutional network from per-layer factors: the Jacobian is never formed.

The model is read as a chain of operations by `conv_recognition.conv_plan`. With the gradients of
a convolution in `conv_ops` (d f_k / d W = w_s delta_k U^T, U the unfolded patches), each layer's
per-example gradients are one batched matrix product delta (k C_out, P) @ U^T (P, C_in |F|) (no
vmap, no k-fold forward), and its share of the kernel is a Gram of those gradients. The deltas of
all k outputs come from one backward pass over a batch of B k vectors (transposed convolutions).

Above the highest convolution the deltas keep a factored form, delta_k[b, c, p] = R[k, c] g[b, c, p]
(R from the dense read-out and global pooling, g the product of the activations' slopes): then
the per-example gradient is R[k, c] H[b, c, (i, d)] with H = g @ U^T, independent of k, and

    Theta_kk'(x, x') += sum_c R[k, c] R[k', c] (w_s^2 H(x)[c] . H(x')[c] + b_s^2 u(x)[c] u(x')[c]),  u = sum_p g,

which costs a k-th of the general case. Dense layers are handled as in `structured`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .blocks import accumulator, gram
from .conv_ops import ConvOp, FlattenOp, MaxPoolOp, Op, PoolOp
from .structured import DenseOp, ElementwiseOp, NotStructured

# -- the back-propagated vectors, in three forms ------------------------------------------------


class Rows(NamedTuple):
    """delta[b, k, ...] = rows[k, ...] * gate[b, ...] (gate None: ones), broadcasting singleton
    axes to ``shape``, the per-input shape of the layer's output."""

    rows: Tensor
    gate: Tensor | None
    shape: tuple[int, ...]

    def materialize(self, batch: int) -> Tensor:
        """delta as one tensor (batch, k, *shape)."""
        k = self.rows.shape[0]
        if self.gate is None:
            return self.rows.expand(k, *self.shape).unsqueeze(0).expand(batch, k, *self.shape)
        return self.rows.unsqueeze(0) * self.gate.unsqueeze(1).expand(batch, 1, *self.shape)


class Full(NamedTuple):
    """delta (B, k, *shape) for each input."""

    delta: Tensor


IDENTITY = None  # the model's outputs themselves: delta_k = e_k


class DenseTerm(NamedTuple):
    """A dense layer's factors for a chunk: its inputs and the delta at its output."""

    inputs: Tensor | None  # a (B, n_in) when W trains
    delta: Any             # IDENTITY, Rows or Full at the layer's output (B, n_out)


class ChannelTerm(NamedTuple):
    """A convolution whose delta is R[k, c] g[b, c, p]: H = w_s g @ U^T (B, C, C_in |F|) or None,
    u = b_s sum_p g (B, C) or None, and R (k, C)."""

    h: Tensor | None
    u: Tensor | None
    rows: Tensor


class GradientTerm(NamedTuple):
    """A convolution's per-example gradients (B, k, P_l) (weights, then biases)."""

    grads: Tensor


class ChunkFeatures(NamedTuple):
    """The features of a chunk of ``batch`` inputs: one term per trainable layer, lowest first."""

    batch: int
    terms: list[DenseTerm | ChannelTerm | GradientTerm]


class ConvStructuredMethod:
    """The per-layer-factor method for convolutional chains (see the module docstring); a
    `ChunkMethod` whose features are `ChunkFeatures`.

    Args:
        ops: the chain of operations, as `conv_plan` gives it.
        k: the number of outputs.
        probe: inputs (at least one) on which the chain must reproduce ``model``'s outputs
            (else NotStructured), and which fix each op's per-input shape.
        model: the model the chain was read from.

    Raises:
        ValueError: no parameter of the chain is trainable.
        NotStructured: the chain's shapes or outputs do not match the model's.
    """

    def __init__(self, ops: list[Op], k: int, probe: Tensor, model: nn.Module) -> None:
        self.ops, self.k = ops, k
        trainable = [i for i, op in enumerate(ops) if isinstance(op, (ConvOp, DenseOp)) and op.trainable]
        if not trainable:
            raise ValueError("the model has no trainable parameters: the empirical NTK would be zero.")
        self.lowest = trainable[0]
        self.shapes = self._check(probe, model)

    def _check(self, probe: Tensor, model: nn.Module) -> list[tuple[int, ...]]:
        """Per-input shapes at each op's input; the chain must reproduce the model on the probe."""
        shapes: list[tuple[int, ...]] = []
        a = probe[:1]
        with torch.no_grad():
            for op in self.ops:
                shapes.append(tuple(a.shape[1:]))
                if isinstance(op, ConvOp) and a.dim() != op.dims + 2:
                    raise NotStructured(f"a convolution takes (N, C, ...) with {op.dims} spatial axes, got "
                                        f"{tuple(a.shape)}.")
                if isinstance(op, ConvOp):
                    _check_convolution(op, a)
                if isinstance(op, DenseOp) and a.dim() != 2:
                    raise NotStructured(f"a dense layer receives inputs of shape {tuple(a.shape)}, not (N, n).")
                if isinstance(op, MaxPoolOp) and a.dim() != op.dims + 2:
                    raise NotStructured(f"max pooling over {op.dims} axes receives inputs of shape {tuple(a.shape)}.")
                if isinstance(op, PoolOp) and a.dim() < 3:
                    raise NotStructured(f"global pooling receives inputs of shape {tuple(a.shape)}.")
                a = self._apply(op, a)
            want = model(probe[:1])
        if a.shape != want.shape or not torch.allclose(a, want, rtol=1e-5, atol=1e-6 * float(want.abs().max() + 1)):
            raise NotStructured("its layers, applied one after the other, do not reproduce the model's outputs.")
        shapes.append(tuple(a.shape[1:]))
        return shapes

    @staticmethod
    def _apply(op: Op, a: Tensor) -> Tensor:
        if isinstance(op, (ConvOp, DenseOp)):
            return op.forward(a)
        if isinstance(op, ElementwiseOp):
            return op.fn(a)
        if isinstance(op, FlattenOp):
            return a.flatten(1)
        return op.module(a)  # pooling

    def point_bytes(self, element_size: int) -> float:
        """Estimated bytes of features and temporaries per input (activations and deltas of k
        outputs, per-example gradients, unfolded patches), to choose the chunk size."""
        k = self.k
        activations = sum(math.prod(shape) for shape in self.shapes)
        grads = sum(op.weight.numel() + op.weight.shape[0] for op in self.ops if isinstance(op, ConvOp))
        patches = sum(op.weight[0].numel() * math.prod(self.shapes[i + 1][1:])
                      for i, op in enumerate(self.ops) if isinstance(op, ConvOp))
        return (3.0 * k * activations + k * grads + patches) * element_size

    def features(self, x: Tensor) -> ChunkFeatures:
        """One forward pass of the chunk x (B, C, *S) and one backward pass of its B k deltas: a
        `DenseTerm`, `ChannelTerm` or `GradientTerm` per trainable layer.

        Raises:
            ValueError: the chain's outputs are not (B, k).
        """
        batch = x.shape[0]
        saved: dict[int, Tensor] = {}
        a = x
        for position, op in enumerate(self.ops):
            if isinstance(op, ElementwiseOp) and position > self.lowest:
                a, saved[position] = op.value_and_slope(a)  # sigma' where a trainable layer lies below
                continue
            if isinstance(op, MaxPoolOp) and position > self.lowest:
                a, saved[position] = op.forward_with_indices(a)  # where each window's maximum lies
                continue
            if isinstance(op, (ConvOp, DenseOp)) and op.trainable and position >= self.lowest:
                saved[position] = op.patches(a) if isinstance(op, ConvOp) and op.train_weight else a
            a = self._apply(op, a)
        if a.dim() != 2 or a.shape[1] != self.k:
            raise ValueError(f"the network's outputs have shape {tuple(a.shape)}, not (N, {self.k}).")
        terms: list = []
        delta: Any = IDENTITY
        for position in range(len(self.ops) - 1, self.lowest - 1, -1):
            op = self.ops[position]
            in_shape, out_shape = self.shapes[position], self.shapes[position + 1]
            if isinstance(op, (ConvOp, DenseOp)) and op.trainable:
                terms.append(self._term(op, saved[position], delta, batch, out_shape))
            if position == self.lowest:
                break
            delta = self._pull(op, delta, saved.get(position), batch, in_shape, out_shape)
        terms.reverse()
        return ChunkFeatures(batch, terms)

    def _term(self, op: ConvOp | DenseOp, saved: Tensor, delta: Any, batch: int, out_shape: tuple[int, ...]):
        if isinstance(op, DenseOp):
            return DenseTerm(saved if op.train_weight else None, delta)
        channels, positions = out_shape[0], math.prod(out_shape[1:])
        if isinstance(delta, Rows) and all(n == 1 for n in delta.rows.shape[2:]):
            gate = delta.gate
            gate = torch.ones((batch, channels, positions), dtype=delta.rows.dtype, device=delta.rows.device) \
                if gate is None else gate.expand(batch, *out_shape).reshape(batch, channels, positions)
            h = torch.bmm(gate, saved.transpose(1, 2)).mul_(op.c) if op.train_weight else None
            u = gate.sum(-1).mul_(op.s) if op.train_bias else None
            return ChannelTerm(h, u, delta.rows.reshape(self.k, channels))
        d = delta.materialize(batch) if isinstance(delta, Rows) else delta.delta
        d = d.reshape(batch, self.k * channels, positions)
        parts = []
        if op.train_weight:
            parts.append(torch.bmm(d, saved.transpose(1, 2)).mul_(op.c).reshape(batch, self.k, -1))
        if op.train_bias:
            parts.append(d.sum(-1).mul_(op.s).reshape(batch, self.k, channels))
        return GradientTerm(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))

    def _pull(self, op: Op, delta: Any, slope: Tensor | None, batch: int, in_shape: tuple[int, ...],
              out_shape: tuple[int, ...]) -> Any:
        """The delta at the op's input from the delta at its output."""
        k = self.k
        if isinstance(op, ElementwiseOp):
            if delta is IDENTITY:
                return Rows(torch.eye(k, dtype=slope.dtype, device=slope.device), slope, out_shape)
            if isinstance(delta, Rows):
                return Rows(delta.rows, slope if delta.gate is None else delta.gate * slope, out_shape)
            return Full(delta.delta * slope.unsqueeze(1))
        if isinstance(op, DenseOp):
            if delta is IDENTITY:
                return Rows(op.weight * op.c, None, in_shape)
            if isinstance(delta, Rows) and delta.gate is None:
                return Rows(op.pullback(delta.rows), None, in_shape)
            d = delta.materialize(batch) if isinstance(delta, Rows) else delta.delta
            return Full(op.pullback(d.reshape(batch * k, -1)).view(batch, k, -1))
        if isinstance(op, FlattenOp):
            if delta is IDENTITY:
                like = _op_like(self.ops)
                return Rows(torch.eye(k, dtype=like.dtype, device=like.device).reshape(k, *in_shape), None, in_shape)
            if isinstance(delta, Rows):
                gate = None if delta.gate is None else delta.gate.reshape(batch, *in_shape)
                return Rows(delta.rows.reshape(k, *in_shape), gate, in_shape)
            return Full(delta.delta.reshape(batch, k, *in_shape))
        if isinstance(op, MaxPoolOp):
            d = delta.materialize(batch) if isinstance(delta, Rows) else delta.delta
            d = d.reshape(batch * k, *out_shape)
            return Full(op.pullback(d, slope, in_shape).view(batch, k, *in_shape))
        if isinstance(op, PoolOp):
            scale = 1.0 / math.prod(in_shape[1:]) if op.mean else 1.0
            if isinstance(delta, Rows) and all(n == 1 for n in delta.rows.shape[2:]) and \
                    (delta.gate is None or all(n == 1 for n in delta.gate.shape[2:])):
                return Rows(delta.rows * scale, delta.gate, in_shape)  # still broadcast over positions
            d = delta.materialize(batch) if isinstance(delta, Rows) else delta.delta
            return Full(d.expand(batch, k, *in_shape) * scale)
        # a convolution
        if isinstance(delta, Rows) and delta.gate is None:  # the same for every input
            rows = delta.rows.expand(k, *out_shape).contiguous()
            return Rows(op.pullback(rows, in_shape), None, in_shape)
        d = delta.materialize(batch) if isinstance(delta, Rows) else delta.delta
        d = d.reshape(batch * k, *out_shape)
        return Full(op.pullback(d, in_shape).view(batch, k, *in_shape))

    # -- kernel blocks ------------------------------------------------------------------------

    def block(self, f1: ChunkFeatures, f2: ChunkFeatures, full: bool) -> Tensor:
        """The sum over trainable layers of their gradient Grams: (B1, B2, k, k) with ``full``,
        else the output trace (1/k) sum_k, (B1, B2)."""
        b1, b2, k = f1.batch, f2.batch, self.k
        like = _op_like(self.ops)
        out = torch.zeros((b1, k, b2, k) if full else (b1, b2), dtype=like.dtype, device=like.device)
        term_ops = [op for op in self.ops[self.lowest:] if isinstance(op, (ConvOp, DenseOp)) and op.trainable]
        for op, t1, t2 in zip(term_ops, f1.terms, f2.terms, strict=True):
            if isinstance(t1, GradientTerm):  # reductions over k P_l terms: blocked (`gram`)
                acc = accumulator(out.dtype)
                if full:
                    g = gram(t1.grads.reshape(b1 * k, -1), t2.grads.reshape(b2 * k, -1), acc)
                    out.add_(g.to(out.dtype).view(b1, k, b2, k))
                else:
                    out.add_(gram(t1.grads.reshape(b1, -1), t2.grads.reshape(b2, -1), acc).div_(k).to(out.dtype))
            elif isinstance(t1, ChannelTerm):
                m = _channel_gram(t1, t2)  # (C, B1, B2)
                if full:
                    rr = (t1.rows.t()[:, :, None] * t1.rows.t()[:, None, :]).reshape(-1, k * k)  # (C, k k)
                    g = m.permute(1, 2, 0).reshape(b1 * b2, -1) @ rr
                    out.add_(g.view(b1, b2, k, k).permute(0, 2, 1, 3))
                else:
                    weights = (t1.rows * t1.rows).sum(0)
                    out.add_(torch.tensordot(weights, m, dims=1).div_(k))
            else:
                _dense_block(op, t1, t2, b1, b2, k, full, out)
        return out.permute(0, 2, 1, 3) if full else out

    def diagonal(self, f1: ChunkFeatures, f2: ChunkFeatures, full: bool) -> Tensor:
        """Theta(x1_b, x2_b) for the rows b of two chunks of the same size: (B, k, k) or (B,)."""
        b, k = f1.batch, self.k
        like = _op_like(self.ops)
        out = torch.zeros((b, k, k) if full else (b,), dtype=like.dtype, device=like.device)
        term_ops = [op for op in self.ops[self.lowest:] if isinstance(op, (ConvOp, DenseOp)) and op.trainable]
        for op, t1, t2 in zip(term_ops, f1.terms, f2.terms, strict=True):
            if isinstance(t1, GradientTerm):
                if full:
                    out.add_(torch.bmm(t1.grads, t2.grads.transpose(1, 2)))
                else:
                    out.add_((t1.grads * t2.grads).sum((1, 2)).div_(k))
            elif isinstance(t1, ChannelTerm):
                m = torch.zeros((b, t1.rows.shape[1]), dtype=like.dtype, device=like.device)
                if t1.h is not None:
                    m.add_((t1.h * t2.h).sum(-1))
                if t1.u is not None:
                    m.add_(t1.u * t2.u)
                if full:
                    rr = (t1.rows.t()[:, :, None] * t1.rows.t()[:, None, :]).reshape(-1, k * k)
                    out.add_((m @ rr).view(b, k, k))
                else:
                    out.add_((m @ (t1.rows * t1.rows).sum(0)).div_(k))
            else:
                scale = _dense_input_gram(op, t1.inputs, t2.inputs, b, None)
                d = t1.delta
                if d is IDENTITY:
                    if full:
                        out.diagonal(dim1=1, dim2=2).add_(scale.unsqueeze(-1))
                    else:
                        out.add_(scale)
                    continue
                d1 = d.materialize(b) if isinstance(d, Rows) else d.delta
                d2 = t2.delta.materialize(b) if isinstance(t2.delta, Rows) else t2.delta.delta
                if full:
                    out.add_(torch.bmm(d1, d2.transpose(1, 2)).mul_(scale[:, None, None]))
                else:
                    out.add_((d1 * d2).sum((1, 2)).mul_(scale).div_(k))
        return out


def _check_convolution(op: ConvOp, a: Tensor) -> None:
    """NotStructured unless the patches and pullback of ``op`` are those of its module at input a
    (one input): the value from the patches, and both gradients of a random vector through the
    module by autograd. The final-output check alone cannot see a wrong padding or stride here,
    since the value is computed by the module itself."""
    with torch.enable_grad():
        leaf = a.detach().clone().requires_grad_(True)
        z = op.module(leaf)
        weight = op.module.weight
        generator = torch.Generator(device=z.device).manual_seed(0)
        delta = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        wanted = [leaf] + ([weight] if weight.requires_grad else [])
        grads = torch.autograd.grad(z, wanted, delta)
    patches = op.patches(a)  # (1, C_in |F|, P)
    w = op.weight.reshape(op.weight.shape[0], -1)
    value = (w @ patches[0]).mul_(op.c)
    if op.bias is not None:
        value.add_(op.bias[:, None], alpha=op.s)
    d = delta.reshape(1, op.weight.shape[0], -1)
    pairs = [(value, z.detach().reshape(value.shape)), (op.pullback(delta, tuple(a.shape[1:])), grads[0])]
    if weight.requires_grad:
        pairs.append(((d[0] @ patches[0].t()).mul_(op.c), grads[1].reshape(w.shape)))
    for got, want in pairs:
        scale = float(want.abs().max()) + 1e-30
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale):
            raise NotStructured(f"its convolution {type(op.module).__name__} does not match the unfolded-patch form "
                                "(stride, padding or filter read differently than the module applies them).")


def _op_like(ops: list[Op]) -> Tensor:
    """The first weighted op's weight, whose dtype and device the kernel blocks take."""
    return next(op.weight for op in ops if isinstance(op, (ConvOp, DenseOp)))


def _channel_gram(t1: ChannelTerm, t2: ChannelTerm) -> Tensor:
    """M[c, b1, b2] = H1[b1, c] . H2[b2, c] + u1[b1, c] u2[b2, c]."""
    m = None
    if t1.h is not None:
        m = torch.bmm(t1.h.transpose(0, 1), t2.h.permute(1, 2, 0))
    if t1.u is not None:
        bias = t1.u.t()[:, :, None] * t2.u.t()[:, None, :]
        m = bias if m is None else m.add_(bias)
    return m


def _dense_input_gram(op: DenseOp, a1: Tensor | None, a2: Tensor | None, b1: int, b2: int | None) -> Tensor:
    """c^2 a . a' + s^2 over the layer's trainable parameters: (B1, B2), or (B,) when b2 is None
    (the diagonal)."""
    shape = (b1,) if b2 is None else (b1, b2)
    if op.train_weight:
        gram = (a1 * a2).sum(-1) if b2 is None else a1 @ a2.t()
        gram = gram.mul_(op.c * op.c)
        return gram.add_(op.s * op.s) if op.train_bias else gram
    return torch.full(shape, op.s * op.s, dtype=op.weight.dtype, device=op.weight.device)


def _dense_block(op: DenseOp, t1: DenseTerm, t2: DenseTerm, b1: int, b2: int, k: int, full: bool,
                 out: Tensor) -> None:
    scale = _dense_input_gram(op, t1.inputs, t2.inputs, b1, b2)
    d1, d2 = t1.delta, t2.delta
    if d1 is IDENTITY:
        if full:
            out.diagonal(dim1=1, dim2=3).add_(scale.unsqueeze(-1))
        else:
            out.add_(scale)
        return
    if isinstance(d1, Rows) and d1.gate is None:  # the same delta for every input
        rr = d1.rows.reshape(k, -1) @ d1.rows.reshape(k, -1).t()
        if full:
            out.add_(scale[:, None, :, None] * rr[None, :, None, :])
        else:
            out.add_(scale * (rr.trace() / k))
        return
    m1 = d1.materialize(b1) if isinstance(d1, Rows) else d1.delta
    m2 = d2.materialize(b2) if isinstance(d2, Rows) else d2.delta
    acc = accumulator(out.dtype)
    if full:
        g = gram(m1.reshape(b1 * k, -1), m2.reshape(b2 * k, -1), acc).to(out.dtype)
        out.add_(g.view(b1, k, b2, k).mul_(scale[:, None, :, None]))
    else:
        out.add_(gram(m1.reshape(b1, -1), m2.reshape(b2, -1), acc).to(out.dtype).mul_(scale).div_(k))
