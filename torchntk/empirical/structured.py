"""Empirical NTK of a dense network from layer-wise Grams: the Jacobian is never formed.

A dense layer z = c a W^T + s b (c = weight_std / sqrt(n_in), s = bias_std in the NTK
parameterisation; c = s = 1 for nn.Linear or the standard one) has d f_k / d W_ij = c delta_ki a_j
and d f_k / d b_i = s delta_ki, with delta_k = d f_k / d z the back-propagated vector of output k.
Summing the products over that layer's parameters gives its share of the kernel:

    Theta_kk'(x, x') = sum_layers (delta_k(x) . delta_k'(x')) * (c^2 a(x) . a(x') + s^2)

The deltas of all k outputs come from one batched backward pass, delta(l-1) = (delta(l) M) o
sigma'(z(l-1)) with M = c W, shape (B, k, n_l) per layer; each block of the kernel is then a few
matrix products. Two shortcuts: the last layer's delta is the identity (its share is
Id_k (x) (c^2 A + s^2)), and the one below it is M_L[k, j] sigma'(z_j), so the output trace of its
Gram is (sigma'(x) o m) . sigma'(x') with m_j = sum_k M_L[k, j]^2, without the k-fold backward.
Cost ~ N k sum n_l n_(l-1) (backward) + N1 N2 k^2 sum n_l (Grams; N1 N2 k sum n_l for the trace).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..networks.modules import Elementwise
from ..networks.network import NTKNetwork
from ..networks.weighted import NTKDense
from .blocks import accumulator, gram


class NotStructured(ValueError):
    """The model is not a chain of dense layers and elementwise activations."""


ELEMENTWISE_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid,
    nn.Softplus, nn.Softsign, nn.Hardtanh, nn.ReLU6, nn.Hardsigmoid, nn.Hardswish, nn.LogSigmoid,
    nn.Tanhshrink, nn.Identity,
)
"""torch.nn activations that act elementwise (so their Jacobian is diagonal)."""


@dataclass(frozen=True)
class DenseOp:
    """z = c a W^T + s b: d z / d W_ij = c delta_i a_j and d z / d b_i = s delta_i.

    ``weight``, ``bias`` are the raw parameters (bias None if absent); ``train_weight`` and
    ``train_bias`` say which ones count in the kernel (requires_grad).
    """

    weight: Tensor
    bias: Tensor | None
    c: float
    s: float
    train_weight: bool
    train_bias: bool

    @property
    def trainable(self) -> bool:
        """Whether the weight or the bias counts in the kernel (requires_grad)."""
        return self.train_weight or self.train_bias

    def forward(self, a: Tensor) -> Tensor:
        """z = c a W^T + s b for inputs a (B, n_in): (B, n_out)."""
        if self.bias is None:
            return a @ self.weight.t() if self.c == 1.0 else (a @ self.weight.t()).mul_(self.c)
        return torch.addmm(self.bias, a, self.weight.t(), beta=self.s, alpha=self.c)

    def pullback(self, delta: Tensor) -> Tensor:
        """delta (..., n_out) -> delta M, M = c W: the vector at the layer's input."""
        out = delta @ self.weight
        return out if self.c == 1.0 else out.mul_(self.c)


@dataclass(frozen=True)
class ElementwiseOp:
    """An elementwise nonlinearity; sigma' comes from autograd through ``fn`` itself, as training
    and the other methods see it (the same value at kinks, in the same dtype)."""

    fn: Callable[[Tensor], Tensor]

    def value_and_slope(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(sigma(z), sigma'(z)) from one forward and one backward pass."""
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            value = self.fn(leaf)
            (slope,) = torch.autograd.grad(value, leaf, torch.ones_like(value))
        return value.detach(), slope


def check_untied(model: nn.Module) -> None:
    """NotStructured if a trainable parameter serves more than one layer of the chain ``model``
    (one module listed twice in an nn.Sequential, or a Parameter assigned to two modules).

    The layer-wise methods add each layer's own gradient Gram; a tied parameter's gradient is
    the sum over its uses, whose Gram has cross terms between the layers that they never form.
    """
    seen: dict[int, int] = {}
    for position, leaf in enumerate(_leaves(model)):
        for param in leaf.parameters():
            if param.requires_grad and seen.setdefault(id(param), position) != position:
                raise NotStructured(f"a parameter of shape {tuple(param.shape)} is used by more than one layer "
                                    f"(tied weights, in {type(leaf).__name__}).")


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The modules of a chain in the order a Sequential runs them, repeats kept."""
    if isinstance(module, NTKNetwork):
        return [] if module.body is None else _leaves(module.body)
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def elementwise_op(module: nn.Module) -> ElementwiseOp:
    """The ElementwiseOp of a torch.nn activation; one built with inplace=True acts through an
    out-of-place copy, since the slopes come from autograd on a leaf (which an in-place op would
    overwrite) and the chain's first op would otherwise write into the caller's inputs."""
    if getattr(module, "inplace", False):
        module = copy.copy(module)
        module.inplace = False
    return ElementwiseOp(module)


def dense_plan(model: nn.Module) -> list[DenseOp | ElementwiseOp]:
    """The chain of dense and elementwise operations of ``model``, or NotStructured saying why.

    Applies to `torchntk.NTKNetwork` of a fully-connected description (either parameterisation,
    any nesting) and to nn.Sequential of nn.Linear and elementwise torch.nn activations (nested
    Sequentials are flattened), without tied parameters (`check_untied`).
    """
    check_untied(model)
    if isinstance(model, NTKNetwork):
        if model.body is None or (model.dense and model.dense[0].fan_in is None):
            raise NotStructured("the network is not built yet (call it once, or pass in_features= or input_shape=).")
        return _sequential_ops(model.body)
    if isinstance(model, nn.Sequential):
        return [op for module in model for op in _sequential_ops(module)]
    raise NotStructured(f"{type(model).__name__} is neither a torchntk NTKNetwork nor an nn.Sequential of "
                        "nn.Linear and elementwise activations.")


def _sequential_ops(module: nn.Module) -> list[DenseOp | ElementwiseOp]:
    if isinstance(module, nn.Sequential):
        return [op for child in module for op in _sequential_ops(child)]
    if isinstance(module, nn.Linear):
        bias = module.bias
        return [DenseOp(module.weight.detach(), None if bias is None else bias.detach(), 1.0, 1.0,
                        module.weight.requires_grad, bias is not None and bias.requires_grad)]
    if isinstance(module, NTKDense):
        return [DenseOp(module.weight.detach(), module.bias.detach(), module.weight_scale, module.bias_scale,
                        module.weight.requires_grad, module.bias.requires_grad)]
    if isinstance(module, Elementwise):
        return [ElementwiseOp(module.activation)]
    if isinstance(module, ELEMENTWISE_MODULES):
        return [elementwise_op(module)]
    if any(p.requires_grad for p in module.parameters()):
        raise NotStructured(f"it contains {type(module).__name__}, which has trainable parameters and is not "
                            "nn.Linear.")
    raise NotStructured(f"it contains {type(module).__name__}, which is not nn.Linear nor a known elementwise "
                        "activation.")


class LayerTerm(NamedTuple):
    """One dense layer's factors for a chunk of B inputs.

    inputs: a(x), (B, n_in), or None when W is frozen. The back-propagated vectors are, in one of
    three forms: ``delta`` (B, k, n_out); or ``rows`` (k, n_out) times ``gate`` (B, n_out), i.e.
    delta[b, k, j] = rows[k, j] * gate[b, j] (gate None: ones); or all None for the identity.
    """

    inputs: Tensor | None
    delta: Tensor | None
    rows: Tensor | None
    gate: Tensor | None


class ChunkFeatures(NamedTuple):
    """The features of a chunk of ``batch`` inputs: a `LayerTerm` per dense layer."""

    batch: int
    terms: list[LayerTerm]  # one per dense layer from the lowest trainable one up


class StructuredMethod:
    """The layer-wise Gram method for dense chains (see the module docstring); a `ChunkMethod`
    whose features are `ChunkFeatures`.

    Args:
        ops: the chain of operations, as `dense_plan` gives it.
        k: the number of outputs.

    Raises:
        ValueError: no parameter of the chain is trainable.
    """

    def __init__(self, ops: list[DenseOp | ElementwiseOp], k: int) -> None:
        self.ops, self.k = ops, k
        self.dense = [op for op in ops if isinstance(op, DenseOp)]
        trainable = [i for i, op in enumerate(ops) if isinstance(op, DenseOp) and op.trainable]
        if not trainable:
            raise ValueError("the model has no trainable parameters: the empirical NTK would be zero.")
        self.lowest = trainable[0]
        self.term_ops = [op for op in ops[self.lowest:] if isinstance(op, DenseOp)]

    def point_bytes(self, element_size: int) -> float:
        """Estimated bytes per input of the deltas (k per layer output), inputs and temporaries,
        to choose the chunk size."""
        widths = sum(op.weight.shape[0] + op.weight.shape[1] for op in self.dense)
        return 3.0 * self.k * widths * element_size  # deltas, inputs and matmul temporaries

    def features(self, x: Tensor) -> ChunkFeatures:
        """One forward pass of the chunk x (B, n_0) and one batched backward pass of its k deltas:
        each dense layer's inputs a(x) and back-propagated vectors, from the lowest trainable layer up."""
        inputs: list[Tensor] = []
        slopes: list[Tensor | None] = []
        a = x
        for position, op in enumerate(self.ops):
            if isinstance(op, DenseOp):
                inputs.append(a)
                a = op.forward(a)
            else:
                if position > self.lowest:  # sigma' is only needed where a trainable layer lies below
                    a, slope = op.value_and_slope(a)
                    slopes.append(slope)
                else:
                    slopes.append(None)
                    a = op.fn(a)
        return ChunkFeatures(x.shape[0], self._backward(inputs, slopes, x.shape[0]))

    def _backward(self, inputs: list[Tensor], slopes: list[Tensor | None], batch: int) -> list[LayerTerm]:
        k = self.k
        delta = rows = gate = None
        terms: list[LayerTerm] = []
        dense_index, slope_index = len(inputs), len(slopes)
        for position in range(len(self.ops) - 1, self.lowest - 1, -1):
            op = self.ops[position]
            if isinstance(op, ElementwiseOp):
                slope_index -= 1
                d = slopes[slope_index]
                if delta is not None:
                    delta = delta.mul_(d.unsqueeze(1))  # delta is always a fresh product here
                else:
                    rows = torch.eye(k, dtype=d.dtype, device=d.device) if rows is None else rows
                    gate = d if gate is None else gate * d
                continue
            dense_index -= 1
            a = inputs[dense_index] if op.train_weight else None
            terms.append(LayerTerm(a, delta, rows, gate))
            if position == self.lowest:
                break
            if delta is not None:
                delta = op.pullback(delta.reshape(batch * k, -1)).view(batch, k, -1)
            elif gate is not None:
                delta = op.pullback((rows.unsqueeze(0) * gate.unsqueeze(1)).reshape(batch * k, -1)).view(batch, k, -1)
                rows = gate = None
            else:  # still the same for every input
                rows = op.weight * op.c if rows is None else op.pullback(rows)
        terms.reverse()
        return terms

    def block(self, f1: ChunkFeatures, f2: ChunkFeatures, full: bool) -> Tensor:
        """sum over layers of (delta_k(x) . delta_k'(x')) (c^2 a(x) . a(x') + s^2): (B1, B2, k, k)
        with ``full``, else the output trace (1/k) sum_k, (B1, B2)."""
        b1, b2, k = f1.batch, f2.batch, self.k
        like = self.term_ops[0].weight
        out = torch.zeros((b1, k, b2, k) if full else (b1, b2), dtype=like.dtype, device=like.device)
        for op, t1, t2 in zip(self.term_ops, f1.terms, f2.terms, strict=True):
            if not op.trainable:
                continue
            scale = _input_gram(op, t1.inputs, t2.inputs, b1, b2)
            identity = t1.delta is None and t1.rows is None
            if identity:
                if full:
                    out.diagonal(dim1=1, dim2=3).add_(scale.unsqueeze(-1))
                else:
                    out.add_(scale)
            elif full:
                g = gram(_delta(t1, b1).reshape(b1 * k, -1), _delta(t2, b2).reshape(b2 * k, -1),
                         accumulator(out.dtype)).to(out.dtype)
                out.add_(g.view(b1, k, b2, k).mul_(scale[:, None, :, None]))
            elif t1.delta is None:
                # trace of a rows-times-gate Gram: sum_j (sum_k rows_kj^2) gate1_j gate2_j
                weights = (t1.rows * t1.rows).sum(0)
                # (gates are None for both chunks or for neither: it depends on the layers only)
                g = weights.sum() if t1.gate is None else (t1.gate * weights) @ t2.gate.t()
                out.add_(g * scale / k)
            else:
                g = gram(t1.delta.reshape(b1, -1), t2.delta.reshape(b2, -1), accumulator(out.dtype)).to(out.dtype)
                out.add_(g.mul_(scale).div_(k))
        return out.permute(0, 2, 1, 3) if full else out


    def diagonal(self, f1: ChunkFeatures, f2: ChunkFeatures, full: bool) -> Tensor:
        """Theta(x1_b, x2_b) for the rows b of two chunks of the same size: (B, k, k) or (B,)."""
        b, k = f1.batch, self.k
        like = self.term_ops[0].weight
        out = torch.zeros((b, k, k) if full else (b,), dtype=like.dtype, device=like.device)
        for op, t1, t2 in zip(self.term_ops, f1.terms, f2.terms, strict=True):
            if not op.trainable:
                continue
            if op.train_weight:
                scale = (t1.inputs * t2.inputs).sum(-1).mul_(op.c * op.c)
                scale = scale.add_(op.s * op.s) if op.train_bias else scale
            else:
                scale = torch.full((b,), op.s * op.s, dtype=op.weight.dtype, device=op.weight.device)
            if t1.delta is None and t1.rows is None:
                if full:
                    out.diagonal(dim1=1, dim2=2).add_(scale.unsqueeze(-1))
                else:
                    out.add_(scale)
            elif full:
                out.add_(torch.bmm(_delta(t1, b), _delta(t2, b).transpose(1, 2)).mul_(scale[:, None, None]))
            elif t1.delta is None:
                weights = (t1.rows * t1.rows).sum(0)
                g = weights.sum() if t1.gate is None else (t1.gate * t2.gate * weights).sum(-1)
                out.add_(g * scale / k)
            else:
                out.add_((t1.delta * t2.delta).sum((1, 2)).mul_(scale).div_(k))
        return out


def _delta(term: LayerTerm, batch: int) -> Tensor:
    if term.delta is not None:
        return term.delta
    if term.gate is None:
        return term.rows.unsqueeze(0).expand(batch, -1, -1)
    return term.rows.unsqueeze(0) * term.gate.unsqueeze(1)


def _input_gram(op: DenseOp, a1: Tensor | None, a2: Tensor | None, b1: int, b2: int) -> Tensor:
    """c^2 a(x) . a(x') + s^2 over the layer's trainable parameters, (B1, B2)."""
    if op.train_weight:
        gram = (a1 @ a2.t()).mul_(op.c * op.c)
        return gram.add_(op.s * op.s) if op.train_bias else gram
    return torch.full((b1, b2), op.s * op.s, dtype=op.weight.dtype, device=op.weight.device)
