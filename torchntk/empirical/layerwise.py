"""Empirical NTK of any torch.nn.Module from layer-wise factors, with a per-sample Jacobian only
for the parameters no rule covers.

Rules: nn.Linear (inputs of any shape (..., in): the tokens of a transformer too), nn.Conv1d and
nn.Conv2d (any stride, padding, padding mode, dilation and groups) and nn.Embedding. For one use
of such a layer on one input, with its input positions t = 1..T (tokens, or output positions of
a convolution times its per-sample batch), inputs x_t (in) and output y_t = W x_t (+ b) (out),

    d f_k / d W = sum_t delta_kt x_t^T,    d f_k / d b = sum_t delta_kt,    delta_kt = d f_k / d y_t.

A convolution is this with x_t its unfolded patch (in = C_in / groups * |filter|), per group; an
embedding with x_t the one-hot row of its index (so x_t . x'_s = [i_t = i'_s]). The weight's
share of the kernel is computed in whichever way costs less for that layer:

    (a) Theta_kk'(x, x') += sum_{t, s} (x_t . x'_s) (delta_kt . delta'_k's)
        ~ B1 B2 T^2 (in + k^2 out) per pair of chunks: wins when T is small (T = 1: a plain MLP);
    (b) explicit per-example gradients G (B, k, out in), Theta += G1 G2^T
        ~ B k T in out per input + B1 B2 k^2 in out per pair: wins for long T (convolutions, tokens).

Biases always take (b) (their gradients are only B k out). A parameter that serves several uses
(tied weights, a module called twice) takes (b) with its per-example gradients summed over the
uses, since the Gram of a sum has cross terms between uses. Every other trainable parameter
(normalisation affines, attention's in_proj weights used through F.multi_head_attention_forward,
anything unrecognised, and a recognised layer's parameter used also outside its own forward)
gets per-sample Jacobians, for those parameters only, contracted as `jacobian` does.

The inputs x_t are recorded by forward hooks; the cotangents delta for all k outputs come from
the same reverse pass that gives those Jacobians: ``vmap`` over the samples of ``jacrev`` with
respect to additive zero "probes" placed on each recognised layer's output (and the fallback
parameters). A probe's Jacobian is exactly delta, per sample, since vmap treats each input on its
own; the recognised weights are never differentiated. Cost ~ N k (forward + backward) + the
Grams above; memory per input k (sum of layer outputs + fallback parameters + (b) gradients).

How the model is seen: forward hooks on module instances, not torch.fx / torch.export tracing.
Hooks run on any module (residual blocks, attention containers, control flow around calls, in-place
activations) with no tracing failure, and they see each call with its actual input, which is all
the rules need. What hooks cannot see (a parameter of a recognised layer read directly, e.g. an
output head using ``embedding.weight``) is caught by a torch function mode during a discovery
pass on one input: such a parameter goes to the Jacobian. Hooks are registered on the modules
only for the duration of a call and removed in ``finally``; parameters, buffers and statistics are
never written (the model runs in eval mode, through `FunctionalModel`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jacrev, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from .backends import AUTODIFF_ERRORS, autodiff_error
from .functional import FunctionalModel
from .keywords import Inputs, call
from .structured import NotStructured

_METADATA = frozenset({
    "dim", "size", "numel", "stride", "is_floating_point", "is_complex", "is_contiguous", "element_size",
    "data_ptr", "__len__", "__hash__", "__bool__", "is_sparse", "nelement", "ndimension", "get_device",
})
"""Tensor methods that read only metadata: calling them on a parameter is not a use of its values."""


AUTO_SAVING = 0.25
"""``method="auto"`` takes this method over the Jacobian's only where it saves at least this
fraction of the Jacobian's flops (`LayerwiseMethod.saving`): where it saves nothing (every weight
takes (b), as in convolutional and long-sequence layers) it does the Jacobian's work plus its
hooks, probes and cloned inputs: measured (benchmarks/bench_empirical.py, CPU time) 8-30% more
on its ResNet case and -17% to +3% on its transformer case."""


def auto_layerwise(model: nn.Module, k: int, x1: Tensor) -> LayerwiseMethod | None:
    """The layer-wise method for ``method="auto"``: None where no recognised layer serves a
    trainable parameter, or where it would save less than AUTO_SAVING of the Jacobian's flops."""
    try:
        runner = LayerwiseMethod(model, k, x1)
    except NotStructured:
        return None
    return runner if runner.saving(x1.shape[0]) >= AUTO_SAVING else None


PAIR_BYTES = 256 << 20
"""Temporary memory of one slice of an (a) block over positions (256 MiB): those temporaries grow
like B1 B2 T^2, so rows of the first chunk are taken a slice at a time."""

GRAM_SLOWDOWN = 4
"""How much slower (a)'s batched small products run per flop than (b)'s one large matrix product,
for T > 1 (at T = 1, (a) is matrix products too). Measured on a 2-layer transformer encoder
(d_model 64, 16 tokens, k = 10, 32 inputs, float32, 2 threads): (a) at 0.64 times (b)'s flops
took 1.5-2.7 times as long."""


def _recognised_kind(module: nn.Module) -> str | None:
    """"linear", "conv" or "embedding" for modules whose forward is torch's own (a subclass with
    its own forward computes something else), else None."""
    if isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward:
        return "linear"
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and type(module).forward in (nn.Conv1d.forward, nn.Conv2d.forward):
        return "conv"
    if isinstance(module, nn.Embedding) and type(module).forward is nn.Embedding.forward:
        # max_norm renormalises the weight in place; scale_grad_by_freq scales the gradient by counts
        # within the batch: neither is the gradient of y = W[i] per sample, so both fall back.
        if module.max_norm is None and not module.scale_grad_by_freq:
            return "embedding"
    return None



class LayerOrderError(RuntimeError):
    """The model's recognised layers ran in another order than on the first input (its layer
    structure depends on the input values): the layer-wise plan does not apply."""

@dataclass
class _Use:
    """One call of a recognised module in the forward pass of one input."""

    module: nn.Module
    kind: str
    in_shape: tuple[int, ...]  # per-sample shapes (the model sees a batch of one)
    out_shape: tuple[int, ...]
    weight: str | None = None  # canonical parameter names, when structured
    bias: str | None = None
    mode: str = "b"  # "a" (Grams of inputs and deltas) or "b" (explicit gradients) for the weight
    groups: int = 1
    positions: int = 1  # T
    fan_in: int = 0  # in (per group; the vocabulary size for an embedding)
    fan_out: int = 0  # out (per group)


@dataclass
class _Plan:
    uses: list[_Use] = field(default_factory=list)
    weight_names: list[str] = field(default_factory=list)  # structured parameters, in a fixed order
    fallback: list[str] = field(default_factory=list)


class _UseWatcher(TorchFunctionMode):
    """Records parameters whose values are read outside the forward of a recognised module that
    owns them (the hooks would miss those uses)."""

    def __init__(self, watched: dict[int, str]) -> None:
        super().__init__()
        self.watched, self.active, self.outside = watched, [], set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name not in _METADATA and not (name == "__get__" and getattr(func, "__self__", None) is not None
                                          and getattr(func.__self__, "__name__", "") not in ("T", "mT", "H", "mH",
                                                                                              "data")):
            owned = {id(p) for p in self.active[-1]._parameters.values() if p is not None} if self.active else set()
            for leaf in tree_leaves((args, kwargs)):
                if isinstance(leaf, Tensor) and id(leaf) in self.watched and id(leaf) not in owned:
                    self.outside.add(self.watched[id(leaf)])
        return func(*args, **kwargs)


@contextlib.contextmanager
def _math_attention() -> Iterator[None]:
    """The plain (differentiable, vmappable) attention: no fused encoder fast path, math SDPA."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class LayerwiseMethod:
    """The layer-wise method with per-part Jacobian fallback (see the module docstring); a
    `ChunkMethod` whose features are, per chunk, the (a) layers' inputs and deltas and the
    explicit per-example gradients of everything else.

    Args:
        model: the module (eval mode where that matters).
        k: its number of outputs.
        x1: inputs (N1, ...): one runs the discovery pass, and N1 sizes the (a)/(b) choice.

    Raises:
        NotStructured: no trainable parameter is served by a recognised layer (the Jacobian
            method is then the same computation).
    """

    def __init__(self, model: nn.Module, k: int, x1: Tensor) -> None:
        self.model, self.k = model, k
        self.fmodel = FunctionalModel(model)
        self.plan = self._discover(x1[:1], n=x1.shape[0])
        self.structured_values = {n: self.fmodel.params[n] for n in self.plan.weight_names}
        self.fallback_values = {n: self.fmodel.params[n] for n in self.plan.fallback}
        ref = next(iter(self.fmodel.params.values()))
        self.probes = [torch.zeros(u.out_shape, dtype=ref.dtype, device=ref.device) for u in self.plan.uses]
        self._state: dict[str, Any] = {}

    # --- discovery -------------------------------------------------------------------------------

    def _canonical_names(self) -> dict[int, str]:
        """id(parameter) -> its name in FunctionalModel.params (trainable ones only)."""
        names: dict[int, str] = {}
        for name, p in self.model.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), name)
        return {i: n for i, n in names.items() if n in self.fmodel.params}

    def _discover(self, x: Tensor | Inputs, n: int) -> _Plan:
        names = self._canonical_names()
        candidates = [m for m in self.model.modules() if _recognised_kind(m) is not None]
        watched = {i: name for i, name in names.items()
                   if any(id(p) == i for m in candidates for p in m._parameters.values() if p is not None)}
        calls: list[_Use] = []
        watcher = _UseWatcher(watched)

        def pre_hook(module: nn.Module, args: tuple) -> None:
            watcher.active.append(module)

        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            watcher.active.pop()
            if args and isinstance(args[0], Tensor) and isinstance(out, Tensor):
                calls.append(_Use(module, _recognised_kind(module), tuple(args[0].shape), tuple(out.shape)))
            else:  # an unexpected call signature: this call is not covered, so neither are its parameters
                watcher.outside.update(names[id(p)] for p in module._parameters.values() if id(p) in names)

        handles = []
        try:
            for m in candidates:
                handles.append(m.register_forward_pre_hook(pre_hook))
                handles.append(m.register_forward_hook(hook))
            with torch.no_grad(), _math_attention(), watcher:
                call(self.model, x.clone())  # a clone: an in-place first op must not write into x
        finally:
            for h in handles:
                h.remove()
        # parameters seen through hooks, and how many uses each has
        counts: dict[str, int] = {}
        for use in calls:
            for attr in ("weight", "bias"):
                p = use.module._parameters.get(attr)
                if p is not None and id(p) in names and names[id(p)] not in watcher.outside:
                    setattr(use, attr, names[id(p)])
                    counts[names[id(p)]] = counts.get(names[id(p)], 0) + 1
        uses = [u for u in calls if u.weight is not None or u.bias is not None]
        if not uses:
            raise NotStructured("no trainable parameter is served by nn.Linear, nn.Conv1d, nn.Conv2d or nn.Embedding "
                                "alone (the layer-wise rules would cover nothing); use method='jacobian'.")
        # a module whose parameters are covered must keep its hook; other calls of the same module
        # (all calls of a module share its parameters) are uses too, and are all in ``calls``
        hooked = {id(u.module) for u in uses}
        uses = [u for u in calls if id(u.module) in hooked]
        for u in uses:
            self._shape_use(u)
            u.mode = "b" if u.weight is None or counts[u.weight] > 1 else self._cheaper(u, n)
        structured = {name for u in uses for name in (u.weight, u.bias) if name is not None}
        return _Plan(uses, sorted(structured), [name for name in self.fmodel.params if name not in structured])

    def _shape_use(self, u: _Use) -> None:
        m = u.module
        if u.kind == "linear":
            u.fan_in, u.fan_out = m.in_features, m.out_features
            u.positions = math.prod(u.in_shape[:-1])
        elif u.kind == "embedding":
            u.fan_in, u.fan_out = m.num_embeddings, m.embedding_dim
            u.positions = math.prod(u.in_shape)
        else:
            dims = m.weight.dim() - 2
            u.groups = m.groups
            u.fan_in = m.in_channels // m.groups * math.prod(m.kernel_size)
            u.fan_out = m.out_channels // m.groups
            batch = math.prod(u.out_shape[:-dims - 1])  # 1 for an unbatched input (C, *S)
            u.positions = batch * math.prod(u.out_shape[-dims:])

    def _costs(self, u: _Use, n: int) -> tuple[float, float]:
        """The flop counts of (a) and (b) for one use over n x n pairs of inputs with k^2 output
        pairs (module docstring), (a)'s weighted by GRAM_SLOWDOWN where T > 1."""
        k, t, g, fan_in, fan_out = self.k, u.positions, u.groups, u.fan_in, u.fan_out
        gram = t * t if u.kind == "embedding" else t * t * fan_in
        pair_a = g * (gram + min(t * t * k * k * fan_out, t * t * k * fan_out + t * k * k * fan_out))
        cost_a = n * n * pair_a * (1 if t == 1 else GRAM_SLOWDOWN)
        per_input = k * g * t * (1 if u.kind == "embedding" else fan_in) * fan_out  # forming G
        cost_b = n * per_input + n * n * k * k * g * fan_in * fan_out
        return float(cost_a), float(cost_b)

    def _cheaper(self, u: _Use, n: int) -> str:
        """"a" or "b" for a weight used once: the one with the smaller `_costs`."""
        cost_a, cost_b = self._costs(u, n)
        return "a" if cost_a <= cost_b else "b"

    def saving(self, n: int) -> float:
        """The estimated fraction of the Jacobian method's flops that this method saves on n x n
        inputs: sum over the (a) uses of (b)'s cost minus (a)'s, over the Jacobian's
        N k P (forward and backward) + N k sum_uses T P_use (forming the per-example weight
        gradients) + N^2 k^2 P (contraction). (b) uses and fallback parameters cost the same in both."""
        k = self.k
        p_total = self.fmodel.num_params
        jacobian = n * k * p_total + n * n * k * k * p_total
        saved = 0.0
        for u in self.plan.uses:
            if u.weight is None:
                continue
            cost_a, cost_b = self._costs(u, n)
            jacobian += n * k * u.groups * u.positions * u.fan_out * (1 if u.kind == "embedding" else u.fan_in)
            if u.mode == "a":
                saved += cost_b - cost_a
        return saved / jacobian

    # --- the ChunkMethod -------------------------------------------------------------------------

    def point_bytes(self, element_size: int) -> float:
        """Bytes of features and temporaries per input, to choose the chunk size: the k probe
        Jacobians (deltas) and recorded inputs of every use, the (b) gradients and the fallback
        Jacobians, plus a quarter."""
        total = 0
        for u in self.plan.uses:
            total += self.k * math.prod(u.out_shape) + math.prod(u.in_shape)
            if u.kind == "conv":
                total += u.groups * u.positions * u.fan_in
            if u.mode == "b" and u.weight is not None:
                total += self.k * self.fmodel.params[u.weight].numel()
        total += self.k * sum(self.fallback_values[n].numel() for n in self.plan.fallback)
        return 1.25 * total * element_size

    def _single(self, probes: list[Tensor], fallback: dict[str, Tensor],
                x: Tensor | Inputs) -> tuple[Tensor, list[Tensor]]:
        """f on one input x (no batch axis) -> (k,), with the probes added to the recognised
        layers' outputs; aux: those layers' inputs."""
        self._state = {"probes": probes, "count": 0, "inputs": []}
        out = self.fmodel({**self.structured_values, **fallback}, x.unsqueeze(0)).reshape(self.k)
        if self._state["count"] != len(self.plan.uses):
            raise RuntimeError(f"the model called its recognised layers {self._state['count']} times on this input, "
                               f"but {len(self.plan.uses)} times on the first input: its layer structure depends on "
                               "the input values; use method='jacobian'.")
        return out, self._state["inputs"]

    def _hook(self, module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        state = self._state
        index = state["count"]
        state["count"] += 1
        if index >= len(self.plan.uses) or self.plan.uses[index].module is not module:
            raise LayerOrderError("the model called its recognised layers in another order than on the first "
                                  "input: its layer structure depends on the input values; use method='jacobian'.")
        state["inputs"].append(args[0].clone())  # a clone: a later in-place op must not change it
        return out + state["probes"][index]

    @contextlib.contextmanager
    def _hooks(self) -> Iterator[None]:
        handles = []
        try:
            for module in {id(u.module): u.module for u in self.plan.uses}.values():
                handles.append(module.register_forward_hook(self._hook))
            with _math_attention():
                yield
        finally:
            for h in handles:
                h.remove()
            self._state = {}

    def features(self, x: Tensor | Inputs) -> dict[str, list]:
        """For a chunk x (B, ...): "a", a (kind, inputs (B, g, T, in) or indices (B, 1, T), deltas
        (B, k, g, T, out)) per (a) use; "g", explicit per-example gradients (B, k, P_i), one per
        structured parameter taking (b) and one per fallback parameter."""
        b, k = x.shape[0], self.k
        has_fallback = bool(self.fallback_values)
        argnums = (0, 1) if has_fallback else 0
        with self._hooks():
            try:
                jac, inputs = vmap(jacrev(self._single, argnums=argnums, has_aux=True), in_dims=(None, None, 0))(
                    self.probes, self.fallback_values, x)
            except LayerOrderError:
                raise
            except AUTODIFF_ERRORS as exc:   # an op without a batching rule (an RNN), a custom Function
                raise autodiff_error("layerwise", self.model, exc) from exc
        jac_probes, jac_fallback = jac if has_fallback else (jac, {})
        grads: dict[str, Tensor] = {}
        pairs = []
        for u, delta, inp in zip(self.plan.uses, jac_probes, inputs, strict=True):
            delta = delta.reshape(b, k, *u.out_shape)
            if u.bias is not None:
                g = self._bias_gradient(u, delta)
                grads[u.bias] = grads[u.bias] + g if u.bias in grads else g
            if u.weight is None:
                continue
            if u.mode == "a":
                pairs.append((u.kind, *self._factors(u, inp, delta)))
                continue
            g = self._weight_gradient(u, inp, delta)
            grads[u.weight] = grads[u.weight] + g if u.weight in grads else g
        explicit = [grads[name] for name in self.plan.weight_names if name in grads]
        explicit += [j.reshape(b, k, -1) for j in jac_fallback.values()]
        return {"a": pairs, "g": explicit}

    def _factors(self, u: _Use, inp: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        """The use's inputs (B, g, T, in) (indices (B, 1, T) for an embedding) and deltas (B, k, g, T, out)."""
        b, k, g = inp.shape[0], self.k, u.groups
        if u.kind == "linear":
            return inp.reshape(b, 1, -1, u.fan_in), delta.reshape(b, k, 1, -1, u.fan_out)
        if u.kind == "embedding":
            valid = None if u.module.padding_idx is None else inp != u.module.padding_idx
            idx = inp.reshape(b, 1, -1)
            delta = delta.reshape(b, k, 1, -1, u.fan_out)
            if valid is not None:  # torch's embedding gives the padding row no gradient
                delta = delta * valid.reshape(b, 1, 1, -1, 1).to(delta.dtype)
            return idx, delta
        m = u.module
        dims = m.weight.dim() - 2
        spatial = inp.shape[-dims:]
        a = inp.reshape(-1, m.in_channels, *spatial)  # (B n', C_in, *S): n' the per-sample batch
        a = self._padded(m, a)
        if dims == 1:
            patches = F.unfold(a.unsqueeze(2), (1, m.kernel_size[0]), dilation=(1, m.dilation[0]),
                               stride=(1, m.stride[0]))
        else:
            patches = F.unfold(a, m.kernel_size, dilation=m.dilation, stride=m.stride)
        positions = patches.shape[-1]
        xs = patches.reshape(b, -1, g, u.fan_in, positions).permute(0, 2, 1, 4, 3).reshape(b, g, -1, u.fan_in)
        d = delta.reshape(b, k, -1, g, u.fan_out, positions).permute(0, 1, 3, 2, 5, 4)
        return xs, d.reshape(b, k, g, -1, u.fan_out)

    def _bias_gradient(self, u: _Use, delta: Tensor) -> Tensor:
        """d f_k / d b = sum_t delta_kt per example: (B, k, out)."""
        b, k = delta.shape[:2]
        if u.kind == "linear":
            return delta.reshape(b, k, -1, u.fan_out).sum(2)
        channels = u.module.out_channels  # a convolution: sum over its per-sample batch and positions
        spatial = math.prod(u.out_shape[-(u.module.weight.dim() - 2):])
        return delta.reshape(b, k, -1, channels, spatial).sum((2, 4))

    def _padded(self, m: nn.Module, a: Tensor) -> Tensor:
        """A convolution's input (M, C_in, *S) padded as the module pads it."""
        pads = m._reversed_padding_repeated_twice
        if not any(pads):
            return a
        return F.pad(a, pads, mode="constant" if m.padding_mode == "zeros" else m.padding_mode)

    def _weight_gradient(self, u: _Use, inp: Tensor, delta: Tensor) -> Tensor:
        """d f_k / d W per example, (B, k, P) in the weight's own layout, for a use taking (b)."""
        b, k = delta.shape[:2]
        if u.kind == "linear":
            return torch.einsum("bktd,btc->bkdc", delta.reshape(b, k, -1, u.fan_out),
                                inp.reshape(b, -1, u.fan_in)).reshape(b, k, -1)
        if u.kind == "embedding":
            idx, deltas = self._factors(u, inp, delta)
            flat = deltas[:, :, 0].permute(0, 2, 1, 3).reshape(b, -1, k * u.fan_out)  # (B, T, k d)
            index = idx[:, 0, :, None].expand(-1, -1, k * u.fan_out)
            rows = torch.zeros(b, u.fan_in, k * u.fan_out, dtype=deltas.dtype, device=deltas.device)
            rows.scatter_add_(1, index, flat)  # (B, V, k d): sum_t [i_t = v] delta_kt
            return rows.reshape(b, u.fan_in, k, u.fan_out).permute(0, 2, 1, 3).reshape(b, k, -1)
        # A convolution: torch's own weight gradient, with the B examples (and the k outputs, as
        # output channels) laid out as groups, so no patches are formed: sum over the per-sample
        # batch n' and the positions of delta_k[c, p] times the patch at p.
        m, g = u.module, u.groups
        dims = m.weight.dim() - 2
        spatial, out_spatial = inp.shape[-dims:], u.out_shape[-dims:]
        a = self._padded(m, inp.reshape(-1, m.in_channels, *spatial))  # (B n', C_in, *S_pad)
        n = a.shape[0] // b
        a = a.reshape(b, n, m.in_channels, *a.shape[2:]).transpose(0, 1).reshape(n, b * m.in_channels, *a.shape[2:])
        d = delta.reshape(b, k, n, g, u.fan_out, *out_spatial).permute(2, 0, 3, 1, 4, *range(5, 5 + dims))
        d = d.reshape(n, b * g * k * u.fan_out, *out_spatial)
        weight_grad = torch.nn.grad.conv1d_weight if dims == 1 else torch.nn.grad.conv2d_weight
        w = weight_grad(a, (b * g * k * u.fan_out, m.in_channels // g, *m.kernel_size), d, stride=m.stride,
                        padding=0, dilation=m.dilation, groups=b * g)
        return w.reshape(b, g, k, u.fan_out * u.fan_in).transpose(1, 2).reshape(b, k, -1)

    def _pair_a(self, kind: str, x1: Tensor, d1: Tensor, x2: Tensor, d2: Tensor, full: bool) -> Tensor:
        """sum_{t, s} (x_t . x'_s) (delta_kt . delta'_k's) for every pair of inputs: (B1, B2, k, k)
        with ``full``, else the sum over k of the diagonal, (B1, B2). Rows of the first chunk go in
        slices whose temporaries (B2 g T^2 per row, times k^2 or k out / T) stay within PAIR_BYTES."""
        k, (b1, _, g, t, out), b2 = self.k, d1.shape, d2.shape[0]
        if t > 1:
            per_row = b2 * g * t * max(t, t * k * k if full and t * k <= out else k * out) * d1.element_size()
            rows = max(1, PAIR_BYTES // per_row)
            if rows < b1:
                return torch.cat([self._pair_a_rows(kind, x1[s:s + rows], d1[s:s + rows], x2, d2, full)
                                  for s in range(0, b1, rows)])
        return self._pair_a_rows(kind, x1, d1, x2, d2, full)

    def _pair_a_rows(self, kind: str, x1: Tensor, d1: Tensor, x2: Tensor, d2: Tensor, full: bool) -> Tensor:
        k, (b1, _, g, t, out), b2 = self.k, d1.shape, d2.shape[0]
        if kind == "embedding":  # one-hot rows: x_t . x'_s = [i_t = i'_s]
            gram = (x1[:, None, :, :, None] == x2[None, :, :, None, :]).to(d1.dtype)
        else:
            gram = torch.einsum("igtc,jgsc->ijgts", x1, x2)  # (B1, B2, g, T1, T2)
        if t == 1 and g == 1:  # one position (a dense layer): two matrix products and a product
            scale = gram.reshape(b1, b2)
            if full:
                dd = (d1.reshape(b1 * k, out) @ d2.reshape(b2 * k, out).t()).view(b1, k, b2, k).permute(0, 2, 1, 3)
                return dd * scale[:, :, None, None]
            return (d1.reshape(b1, k * out) @ d2.reshape(b2, k * out).t()) * scale
        if not full:
            return (torch.einsum("ikgtd,jkgsd->ijgts", d1, d2) * gram).sum((2, 3, 4))
        if t * k <= out:  # the deltas' Gram first: B1 B2 g k^2 T^2 entries
            dd = torch.einsum("ikgtd,jlgsd->ijklgts", d1, d2)
            return (dd * gram[:, :, None, None]).sum((4, 5, 6))
        # the input Gram times the second chunk's deltas first: B1 B2 g T k out entries
        h = torch.einsum("ijgts,jlgsd->ijgtld", gram, d2)
        return torch.einsum("ikgtd,ijgtld->ijkl", d1, h)

    def block(self, f1: dict[str, list], f2: dict[str, list], full: bool) -> Tensor:
        """The kernel block of two chunks: (B1, B2, k, k) with ``full``, else the output trace (B1, B2)."""
        k = self.k
        total = None
        for j1, j2 in zip(f1["g"], f2["g"], strict=True):
            b1, b2 = j1.shape[0], j2.shape[0]
            if full:
                part = (j1.reshape(b1 * k, -1) @ j2.reshape(b2 * k, -1).t()).view(b1, k, b2, k).permute(0, 2, 1, 3)
            else:
                part = j1.reshape(b1, -1) @ j2.reshape(b2, -1).t()
            total = part if total is None else total + part
        for (kind, x1, d1), (_, x2, d2) in zip(f1["a"], f2["a"], strict=True):
            part = self._pair_a(kind, x1, d1, x2, d2, full)
            total = part if total is None else total + part
        return total if full else total / k

    def diagonal(self, f1: dict[str, list], f2: dict[str, list], full: bool) -> Tensor:
        """Theta(x1_b, x2_b) for the rows b of two chunks of the same size: (B, k, k) or (B,)."""
        k = self.k
        total = None
        for j1, j2 in zip(f1["g"], f2["g"], strict=True):
            part = torch.bmm(j1, j2.transpose(1, 2)) if full else (j1 * j2).sum((1, 2))
            total = part if total is None else total + part
        for (kind, x1, d1), (_, x2, d2) in zip(f1["a"], f2["a"], strict=True):
            if kind == "embedding":
                gram = (x1[:, :, :, None] == x2[:, :, None, :]).to(d1.dtype)
            else:
                gram = torch.einsum("bgtc,bgsc->bgts", x1, x2)
            h = torch.einsum("bgts,blgsd->bgtld", gram, d2)
            part = torch.einsum("bkgtd,bgtld->bkl", d1, h) if full else torch.einsum("bkgtd,bgtkd->b", d1, h)
            total = part if total is None else total + part
        return total if full else total / k
