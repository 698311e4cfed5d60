r"""The empirical (finite-width) neural tangent kernel of any torch.nn.Module.

>>> import torch, torchntk as tn
>>> net = tn.mlp(depth=3).network(width=64, out_features=2, seed=0)
>>> x1 = torch.randn(5, 4)
>>> tn.empirical_ntk(net, x1, x2=None, method="auto", outputs="full").shape
torch.Size([5, 5, 2, 2])
>>> tn.empirical_ntk(net, x1, torch.randn(3, 4), outputs="trace").shape
torch.Size([5, 3])

.. math::

    \Theta_{kk'}(x, x') = \sum_p \frac{\partial f_k(x)}{\partial \theta_p}\,
    \frac{\partial f_{k'}(x')}{\partial \theta_p}

summed over the model's trainable parameters (requires_grad=True). At initialisation and as the
widths grow it tends to :math:`\Theta^{(L)} \otimes \mathrm{Id}_k` for our networks (Theorem 1),
the kernel that ``spec.ntk`` computes. Methods:

- "structured": dense networks (`NTKNetwork` in either parameterisation, or nn.Sequential of
  nn.Linear and elementwise activations) from layer-wise Grams, and nn.Sequential stacks of
  convolutions, dense layers, elementwise activations, Flatten and global average pooling from
  per-layer gradients built out of unfolded patches (`conv_method`); never forms the Jacobian.
  It declines where a trainable parameter serves two layers (tied weights: their Gram's cross
  terms are not per-layer) and where a convolution's patches do not reproduce its module.
- "layerwise": any module (`layerwise`): nn.Linear (inputs (..., in), tokens too), nn.Conv1d/2d
  and nn.Embedding contribute layer-wise products of their inputs and back-propagated vectors, or
  per-example gradients, whichever costs less; every other trainable parameter (normalisation,
  attention's in_proj, anything unrecognised) gets per-sample Jacobians of its own; tied weights
  are exact (their per-example gradients are summed over the uses).
- "jacobian": any module; contracts per-sample Jacobians (memory :math:`B k P` per chunk of
  :math:`B` inputs, :math:`P` parameters).
- "ntk_vp": any module; NTK-vector products (vjp then jvp), no Jacobian stored; slow for
  dense networks, for models whose Jacobians do not fit.
- "auto": "structured" where it applies, else "layerwise" where its estimated flops save at least
  a quarter of the Jacobian's (`layerwise.AUTO_SAVING`; layers at one position, such as dense
  layers, tied or not, inside any module), else "jacobian" with a `StructuredFallbackWarning`
  saying what the structured paths declined.

``return_info=True`` also returns an `EmpiricalInfo` (the method used, the chunking);
``max_memory`` bounds features, panel and activations (`memory`). ``forward_kwargs`` passes
per-example keyword tensors to the model's forward, ``model(x, adjacency=A, mask=m)``, sliced with
the inputs in every chunk and every vmap over examples (`keywords`); every method but the
structured one takes them.

Outputs of shape (N,) are one output unit: the kernel is then (N1, N2). ``diagonal=True`` gives
only :math:`\Theta(x_i, x_i)`, in :math:`O(N)`. `empirical_nngp` gives the outputs' outer products
:math:`f_k(x)\, f_{k'}(x')`, the finite-width counterpart of the NNGP kernel.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from .backends import differentiable_kernels
from .blocks import CACHE_BYTES, Counted, assemble, assemble_diagonal
from .conv_method import ConvStructuredMethod
from .conv_recognition import conv_plan
from .functional import FunctionalModel
from .info import EmpiricalInfo, StructuredFallbackWarning
from .jacobian import JacobianMethod
from .keywords import Inputs, attach, call, check_values
from .layerwise import LayerwiseMethod, auto_layerwise
from .memory import choose_chunks, parse_bytes
from .ntk_vp import NTKVectorMethod
from .pntk import pntk_module
from .selection import Selection, restrict, select
from .structured import NotStructured, StructuredMethod, dense_plan

METHODS = ("auto", "structured", "layerwise", "jacobian", "ntk_vp")
OUTPUTS = ("full", "trace")
NTK_OUTPUTS = OUTPUTS + ("pntk",)
FEATURE_BYTES = 2 << 30
"""With CACHE_BYTES the default memory budget (2 + 4 GiB) when ``max_memory`` is not given. Large
chunks matter for the Jacobian contraction: it reads each chunk's (B, k, P) Jacobian once per
block, so its memory traffic falls like 1 / B."""

__all__ = ["empirical_ntk", "empirical_nngp", "EmpiricalInfo", "StructuredFallbackWarning", "METHODS", "OUTPUTS"]
NNGP_BATCH = 1024
"""Inputs per forward pass in `empirical_nngp` by default."""


def empirical_ntk(model: nn.Module, x1: Any, x2: Any | None = None, *, method: str = "auto",
                  outputs: str = "full", diagonal: bool = False, batch_size: int | None = None,
                  params: Selection = None, max_memory: int | str | None = None,
                  forward_kwargs: Any = None, return_info: bool = False) -> Any:
    r"""The empirical NTK of ``model`` between x1 and x2, computed in chunks of inputs,
    :math:`\Theta_{kk'}(x, x') = \sum_p \partial_{\theta_p} f_k(x)\, \partial_{\theta_p} f_{k'}(x')`
    over the trainable parameters.

    Args:
        model: any torch.nn.Module mapping a batch (N, ...) to outputs of shape (N, k), or (N,)
            for a single output. Each input is treated on its own: train-mode BatchNorm or
            Dropout, and any forward that writes a buffer, are a ValueError (call model.eval()).
            The model is left as it was (parameters, requires_grad, buffers); a torchntk network
            built at its first forward is built for x1's per-example shape.
        x1: inputs (N1, ...): a tensor with the model's dtype and device, or a numpy array
            (then converted to them, and the result is numpy).
        x2: inputs (N2, ...), or None for x1 against itself (then only blocks on and above the
            diagonal are computed and the result is exactly symmetric).
        method: "auto" (default), "structured", "layerwise", "jacobian" or "ntk_vp" (see the module
            doc).
        outputs: "full" gives :math:`\Theta` of shape (N1, N2, k, k),
            ``Theta[i, j, k, k']`` :math:`= \nabla_\theta f_k(x_{1,i}) \cdot \nabla_\theta f_{k'}(x_{2,j})`;
            "trace" gives the mean over the k diagonal output pairs,
            :math:`\frac1k \sum_k \Theta_{kk}`, shape (N1, N2) (cheaper: the off-diagonal pairs
            are never formed). In the infinite-width limit both carry the same scalar kernel.
            For outputs of shape (N,) both give (N1, N2). "pntk" gives the kernel of the scalar
            :math:`g(x) = \frac{1}{\sqrt k} \sum_k f_k(x)` (Mohamadi et al. 2023), (N1, N2):
            :math:`\mathrm{pNTK}(x, x') = \frac1k \sum_{k,k'} \Theta_{kk'}(x, x')`, the trace
            kernel plus the mean off-diagonal pairs, at the cost of one output (every method
            applies: see `torchntk.empirical.pntk`).
        diagonal: only :math:`\Theta(x_{1,i}, x_{1,i})` (x2 None) or :math:`\Theta(x_{1,i}, x_{2,i})`
            (x2 with as many rows): shape (N, k, k) ("full") or (N,) ("trace", or outputs of
            shape (N,)); :math:`O(N)` work.
        batch_size: inputs per chunk; by default sized from ``max_memory`` (`memory.plan`).
        max_memory: bytes (an int, or a string such as "4GiB" or "512MB") bounding the working
            memory besides the result: a panel of x1 chunks whose features are kept for reuse, one
            streamed chunk's features and the activations its forward keeps for the backward
            (measured by counting saved tensors on one input), and for "ntk_vp" the tangents of a
            block. By default FEATURE_BYTES + CACHE_BYTES (6 GiB); with ``batch_size`` and no
            ``max_memory`` the panel gets CACHE_BYTES (4 GiB). The kernel does not depend on the
            chunking beyond round-off. When x1's features do not fit in the budget, x2's are
            recomputed once per panel (`EmpiricalInfo.feature_rows` counts them).
        params: None (every trainable parameter), or the parameters the sum over p runs over:
            an iterable of names (as in ``model.named_parameters()``) or of the nn.Parameter
            objects, or a predicate name -> bool (`torchntk.empirical.selection`). The kernels of
            a partition of the parameters add up to the full kernel. The restriction is made in
            the functional view of the model (the module's flags are never touched), so it takes
            the "jacobian" or "ntk_vp" method ("auto" is "jacobian"; "structured" and "layerwise",
            which read the modules' own parameters, are an error).
        forward_kwargs: per-example keyword tensors of the model's forward, as
            ``model(x, **kw)`` takes them (e.g. ``{"adjacency": A, "mask": m}`` for a torchntk
            network): one dict for x1 (x2 None), or a pair (kw1, kw2) for x1 and x2; each tensor
            has one row per input along its first axis (numpy arrays are converted as x is).
            Every chunk of inputs takes the same rows of them, also under vmap over the examples
            (`torchntk.empirical.keywords`). The structured path, which runs the modules itself,
            cannot pass them: "auto" goes to "layerwise" or "jacobian" (and says why in
            ``fallback_reason`` and the warning), and "structured" is an error.
        return_info: also return an `EmpiricalInfo`: the method used (and why "auto" fell back
            to the Jacobian), how torch.func differentiated the model, the chunking and the
            number of feature computations.

    Returns:
        A tensor of the model's dtype on its device (numpy if the inputs were numpy); with
        ``return_info`` a pair (kernel, EmpiricalInfo).

    Warns:
        StructuredFallbackWarning: method="auto" fell back from the structured path to the
            Jacobian; the message names the module or op it did not recognise.

    Models are run with the fused attention fast paths off (`backends.differentiable_kernels`:
    the same function, differentiable by torch.func); where vmap cannot batch a module over
    samples (nn.GRU, nn.LSTM), "jacobian" and "ntk_vp" differentiate the batched forward instead.
    An error inside torch.func is a ValueError naming the method and the alternative.
    """
    if outputs not in NTK_OUTPUTS:
        raise ValueError(f"outputs must be 'full' ((N1, N2, k, k)), 'trace' ((N1, N2), the mean over the k "
                         f"diagonal output pairs) or 'pntk' ((N1, N2), the kernel of the outputs' sum / sqrt(k)), "
                         f"got {outputs!r}.")
    _check_common(model, "trace" if outputs == "pntk" else outputs, batch_size)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    chosen = select(model, params)
    budget = None if max_memory is None else parse_bytes(max_memory)
    _build(model, x1)
    if chosen is not None and method in ("structured", "layerwise"):
        raise ValueError(f"params= restricts the kernel in the functional view of the model, which method={method!r} "
                         "does not use; use method='jacobian' (or 'ntk_vp', or 'auto').")
    dtype, device = _model_dtype_device(model)
    numpy_out, t1, t2 = _inputs(x1, x2, dtype, device, diagonal, forward_kwargs, model)
    with _unchanged(model) as snapshot, differentiable_kernels(model):
        if outputs == "pntk":
            model, outputs = _pntk(model, t1), "trace"
        result, info = _empirical_ntk(model, t1, t2, method, outputs, diagonal, batch_size, budget, snapshot,
                                      chosen)
    if numpy_out:
        result = result.cpu().numpy()
    if info.fallback_reason is not None:
        warnings.warn(f"method='auto' computes this model's NTK by the Jacobian: the structured paths declined "
                      f"({info.fallback_reason.rstrip('.')}). Pass method='jacobian' to silence this.",
                      StructuredFallbackWarning, stacklevel=2)
    return (result, info) if return_info else result


def _pntk(model: nn.Module, t1: Tensor | Inputs) -> nn.Module:
    """The model of g(x) = (1/sqrt(k)) sum_k f_k(x) (`pntk_module`); a one-output model is its own."""
    dtype, device = _model_dtype_device(model)
    k, vector = _output_count(model, t1)
    return model if vector or k == 1 else pntk_module(model, k, dtype, device, keywords=isinstance(t1, Inputs))


def _empirical_ntk(model: nn.Module, t1: Tensor | Inputs, t2: Tensor | Inputs | None, method: str, outputs: str,
                   diagonal: bool, batch_size: int | None, budget: int | None, snapshot: _Snapshot,
                   chosen: set[int] | None = None) -> tuple[Tensor, EmpiricalInfo]:
    dtype = _model_dtype_device(model)[0]
    k, vector = _output_count(model, t1)
    snapshot.check()  # before torch.func meets a buffer written in place
    runner = _method(_Columns(model) if vector else model, method, k, t1, chosen)
    full = outputs == "full"
    chunks = choose_chunks(runner, model, t1, t2, k, dtype=dtype, full=full, diagonal=diagonal, batch_size=batch_size,
                           budget=budget, default_budget=FEATURE_BYTES + CACHE_BYTES, default_panel=CACHE_BYTES)
    batch_size = chunks.batch_size
    counted = Counted(runner)
    with torch.no_grad():
        if diagonal:
            result = assemble_diagonal(counted, t1, t2, k, full, batch_size, dtype)
        else:
            result = assemble(counted, t1, t2, k, full, batch_size, dtype, chunks.panel_bytes)
    if vector and full:
        result = result[..., 0, 0]
    used = "jacobian" if isinstance(runner, JacobianMethod) else "ntk_vp" if isinstance(runner, NTKVectorMethod) \
        else "layerwise" if isinstance(runner, LayerwiseMethod) else "structured"
    info = EmpiricalInfo(method_used=used, fallback_reason=getattr(runner, "fallback_reason", None),
                         autodiff=getattr(runner, "autodiff", None), batch_size=batch_size,
                         panel_bytes=chunks.panel_bytes, max_memory=chunks.budget, feature_bytes=chunks.feature,
                         activation_bytes=int(chunks.activation), estimated_peak=chunks.peak,
                         feature_calls=counted.calls, feature_rows=counted.rows)
    return result, info


def empirical_nngp(model: nn.Module, x1: Any, x2: Any | None = None, *, outputs: str = "full",
                   diagonal: bool = False, batch_size: int | None = None, forward_kwargs: Any = None) -> Any:
    r"""The outputs' outer products :math:`K_{kk'}(x, x') = f_k(x)\, f_{k'}(x')` of one network.

    Averaged over random networks (`torchntk.monte_carlo_kernels`) it estimates the outputs'
    covariance, which tends to the NNGP kernel :math:`\Sigma^{(L)} \otimes \mathrm{Id}_k` as the
    widths grow (Proposition 1; the mean is 0 for networks symmetric under :math:`W \to -W`, as
    ours are at initialisation).

    Args:
        model: any torch.nn.Module mapping (N, ...) to (N, k) or (N,), in eval() mode where that
            matters (train-mode BatchNorm/Dropout and forwards that write buffers are a
            ValueError; the model is left as it was).
        x1: inputs (N1, ...) (tensor of the model's dtype and device, or numpy).
        x2: inputs (N2, ...), or None for x1 against itself.
        outputs: "full" gives (N1, N2, k, k); "trace" the mean over the k units,
            :math:`\frac1k \sum_k f_k(x)\, f_k(x')`, (N1, N2). Outputs of shape (N,) give (N1, N2) either way.
        diagonal: only x1_i against x1_i (or x2_i): (N, k, k) or (N,).
        batch_size: inputs per forward pass (default NNGP_BATCH, 1024), run without gradients.
        forward_kwargs: per-example keyword tensors of the model's forward, one dict for x1 (x2
            None) or a pair (kw1, kw2), each tensor with one row per input, sliced with the
            inputs into every pass (as in `empirical_ntk`).

    Returns:
        A tensor of the model's dtype on its device (numpy if the inputs were numpy).
    """
    _check_common(model, outputs, batch_size)
    _build(model, x1)
    with _unchanged(model) as snapshot:
        return _empirical_nngp(model, x1, x2, outputs, diagonal, batch_size, snapshot, forward_kwargs)


def _empirical_nngp(model: nn.Module, x1: Any, x2: Any, outputs: str, diagonal: bool, batch_size: int | None,
                    snapshot: _Snapshot, forward_kwargs: Any) -> Any:
    dtype, device = _model_dtype_device(model)
    numpy_out, t1, t2 = _inputs(x1, x2, dtype, device, diagonal, forward_kwargs, model)
    k, vector = _output_count(model, t1)
    snapshot.check()
    batch = batch_size or NNGP_BATCH

    def forward(x: Tensor | Inputs) -> Tensor:
        with torch.no_grad():
            # clones: a model whose first op is in place would write into the caller's inputs
            out = torch.cat([call(model, x[s : s + batch].clone()) for s in range(0, x.shape[0], batch)])
        return out.reshape(x.shape[0], k)

    f1 = forward(t1)
    f2 = f1 if t2 is None else forward(t2)
    if diagonal:
        result = f1[:, :, None] * f2[:, None, :] if outputs == "full" else (f1 * f2).mean(1)
    elif outputs == "full":
        result = f1[:, None, :, None] * f2[None, :, None, :]
    else:
        result = f1 @ f2.t() / k
    if vector and outputs == "full":
        result = result[..., 0, 0]
    return result.cpu().numpy() if numpy_out else result


class _Columns(nn.Module):
    """Outputs (N,) as (N, 1): the kernels of a one-output model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, **kwargs: Tensor) -> Tensor:
        return self.model(x, **kwargs).unsqueeze(1)


def _check_arguments(model: Any, outputs: str, batch_size: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be 'full' ((N1, N2, k, k)) or 'trace' ((N1, N2), the mean over the k "
                         f"diagonal output pairs), got {outputs!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")


TRAIN_MODE_MODULES = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
"""Modules whose training-mode forward couples the inputs of a batch (batch statistics, updated
running statistics) or draws random masks."""


def _check_common(model: Any, outputs: str, batch_size: Any) -> None:
    _check_arguments(model, outputs, batch_size)
    for name, module in model.named_modules():
        if module.training and isinstance(module, TRAIN_MODE_MODULES) and getattr(module, "p", 1.0) != 0:
            what = "draws random masks" if isinstance(module, nn.modules.dropout._DropoutNd) else \
                "normalises by batch statistics and updates its running statistics"
            where = f"the module {name!r}" if name else "the model"
            raise ValueError(f"{where} ({type(module).__name__}) is in training mode, where it {what}; the empirical "
                             "kernels treat each input on its own: call model.eval() first.")


def _build(model: nn.Module, x1: Any) -> None:
    """Draws the layers of a network built at its first forward (a torchntk NTKNetwork of an
    architecture description) for x1's per-example shape, as its first forward would."""
    if getattr(model, "body", True) is None and callable(getattr(model, "build", None)):
        shape = getattr(x1, "shape", None)
        if shape is None or len(shape) < 2:
            raise ValueError("this network is built at its first forward: give x1 of shape (N, ...) (or call the "
                             "network once, or build it with input_shape=).")
        model.build(tuple(int(n) for n in shape[1:]))


class _Snapshot:
    """The model's nn.Parameter objects, their requires_grad and its buffers' values, to put back."""

    def __init__(self, model: nn.Module) -> None:
        self.params = [(m, key, p, p.requires_grad) for m in model.modules() for key, p in m._parameters.items()
                       if p is not None]
        self.buffers = [(m, key, b, b.clone()) for m in model.modules() for key, b in m._buffers.items()
                        if b is not None and not is_lazy(b)]  # a lazy buffer is drawn at the first forward

    def restore(self) -> list[str]:
        """Puts everything back; returns the names of the buffers whose values had changed."""
        for m, key, p, grad in self.params:
            m._parameters[key] = p
            if p.requires_grad != grad:
                p.requires_grad_(grad)
        changed = []
        for m, key, b, saved in self.buffers:
            m._buffers[key] = b
            if not torch.equal(b, saved):
                with torch.no_grad():
                    b.copy_(saved)
                changed.append(key)
        return changed

    def check(self) -> None:
        """ValueError (after putting them back) if a forward changed a buffer: running statistics
        or counters would make the kernels depend on the order of the inputs."""
        changed = self.restore()
        if changed:
            raise ValueError(f"the model's forward changes its buffers ({', '.join(sorted(set(changed)))}): call "
                             "model.eval() first, so that each input is treated on its own.")


@contextlib.contextmanager
def _unchanged(model: nn.Module) -> Iterator[_Snapshot]:
    """Leaves the model as it was however the computation ends (`_Snapshot`); a changed buffer is
    an error once the computation has succeeded."""
    snapshot = _Snapshot(model)
    try:
        yield snapshot
    except BaseException:
        snapshot.restore()
        raise
    snapshot.check()


def _inputs(x1: Any, x2: Any, dtype: torch.dtype, device: torch.device, diagonal: bool,
            forward_kwargs: Any = None, model: nn.Module | None = None) -> tuple[bool, Tensor | Inputs,
                                                                                Tensor | Inputs | None]:
    """(numpy out, x1, x2) checked and converted, with their keyword tensors attached (`attach`)
    and, for a torchntk ``model``, its side inputs checked on every row (`check_values`)."""
    numpy_out = isinstance(x1, np.ndarray) and (x2 is None or isinstance(x2, np.ndarray))
    t1 = _as_input(x1, "x1", dtype, device)
    t2 = None if x2 is None else _as_input(x2, "x2", dtype, device)
    if t2 is not None and t2.shape[1:] != t1.shape[1:]:
        raise ValueError(f"x1 and x2 must have the same shape per input: x1 has {tuple(t1.shape[1:])}, "
                         f"x2 has {tuple(t2.shape[1:])}.")
    if diagonal and t2 is not None and t2.shape[0] != t1.shape[0]:
        raise ValueError(f"diagonal=True pairs x1_i with x2_i, so x1 and x2 need as many rows; got {t1.shape[0]} "
                         f"and {t2.shape[0]}.")
    t1, t2 = attach(t1, t2, forward_kwargs, dtype=dtype, device=device)
    if model is not None:
        for t in (t1, t2):
            check_values(model, t)
    return numpy_out, t1, t2


def _method(model: nn.Module, method: str, k: int, x1: Tensor | Inputs, chosen: set[int] | None = None) -> Any:
    """The method's runner; "auto" falling back to the Jacobian gives it the reason. With a
    parameter selection ``chosen`` (ids), only the functional methods apply; with keyword
    tensors (x1 an `Inputs`), all but the structured ones."""
    reason = None
    if method in ("auto", "structured") and chosen is None:
        if isinstance(x1, Inputs):
            reason = (f"the model takes forward_kwargs ({', '.join(x1.kwargs)}), which the structured path cannot "
                      "pass: it runs the modules itself, not model.forward.")
            if method == "structured":
                raise ValueError(f"method='structured' does not apply: {reason} Use method='layerwise', 'jacobian' "
                                 "or 'ntk_vp' (or 'auto').")
        else:
            try:
                ops = dense_plan(model)
            except NotStructured as dense_reason:
                try:
                    return ConvStructuredMethod(conv_plan(model), k, x1, model)
                except NotStructured as conv_reason:
                    reason = str(dense_reason if "no convolution" in str(conv_reason) else conv_reason)
                    if method == "structured":
                        raise ValueError(
                            "method='structured' applies to dense networks (torchntk NTKNetwork, or nn.Sequential of "
                            "nn.Linear and elementwise activations) and to nn.Sequential stacks of convolutions, "
                            "dense layers, elementwise activations, nn.Flatten and global average pooling; but "
                            f"{reason} Use method='jacobian' (or 'ntk_vp' when the Jacobians do not fit in "
                            "memory).") from None
            else:
                if x1.dim() != 2:
                    raise ValueError(f"a dense network takes inputs of shape (N, n0); got x1 of shape "
                                     f"{tuple(x1.shape)}.")
                return StructuredMethod(ops, k)
        layerwise = auto_layerwise(model, k, x1)  # None: it would not save enough
        if layerwise is not None:
            try:   # one input: a model that vmap cannot batch goes to the Jacobian's batched path
                layerwise.features(x1[:1])
            except ValueError as exc:
                reason = f"{reason.rstrip('.')}; and the layer-wise path failed: {exc}"
            else:
                return layerwise
    if method == "layerwise":
        return LayerwiseMethod(model, k, x1)
    fmodel = restrict(FunctionalModel(model), chosen)
    return NTKVectorMethod(fmodel, k) if method == "ntk_vp" else JacobianMethod(fmodel, k, fallback_reason=reason)


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (requires_grad=True): its empirical NTK is zero.")
    floating = [p for p in trainable if p.is_floating_point()]
    first = floating[0] if floating else trainable[0]
    return first.dtype, first.device


def _as_input(x: Any, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers; got a numpy array of dtype {x.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(x))
        t = t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
    elif isinstance(x, Tensor):
        t = x
        if t.is_floating_point() and t.dtype != dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but the model's parameters are {dtype}; "
                            f"use {name}.to({dtype}) (or model.to({t.dtype})).")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but the model is on {device}; use {name}.to('{device}').")
    else:
        raise TypeError(f"{name} must be a torch.Tensor or a numpy array of shape (N, ...), got {type(x).__name__}.")
    if t.dim() < 1 or t.shape[0] == 0:
        raise ValueError(f"{name} must have a leading batch axis with at least one input; got shape {tuple(t.shape)}.")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has NaN or infinite entries; remove or impute them first.")
    return t.detach()


def _output_count(model: nn.Module, x: Tensor | Inputs) -> tuple[int, bool]:
    """(k, whether the outputs are (N,)) from a forward on two inputs, checking that outputs are
    (N, k) or (N,) (also builds lazy layers)."""
    probe = x[:2].clone()  # a model whose first op is in place must not write into the caller's x
    try:
        with torch.no_grad():
            y = call(model, probe)
    except (TypeError, ValueError):
        raise
    except Exception as exc:  # e.g. a shape mismatch inside the model
        hint = " (x1 is 1-D: give one row per input, e.g. x.reshape(-1, 1) or x.reshape(1, -1))" \
            if x.dim() == 1 else ""
        raise ValueError(f"the model failed on the first inputs, of shape {tuple(probe.shape)}{hint}: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(y, Tensor):
        raise ValueError(f"the model must return one tensor of shape (N, k); it returned {type(y).__name__} "
                         "(wrap it in a module that returns the output you want).")
    if y.dim() not in (1, 2) or y.shape[0] != probe.shape[0]:
        hint = " (flatten the outputs, e.g. return y.flatten(1))" if y.dim() > 2 else ""
        raise ValueError(f"the model must map N inputs to outputs of shape (N, k) or (N,); on {probe.shape[0]} "
                         f"input(s) it returned shape {tuple(y.shape)}{hint}.")
    if not y.is_floating_point():
        raise ValueError(f"the model's outputs must be floating point, got {y.dtype}.")
    return (1, True) if y.dim() == 1 else (y.shape[1], False)
