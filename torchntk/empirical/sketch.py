"""Sketched empirical NTK: per-example gradients projected to d dimensions by a seeded Gaussian.

With J(x) the (k, P) Jacobian of the outputs in the P trainable parameters and R a (P, d) matrix
of independent N(0, 1/d) entries,

    Phi(x) = J(x) R   (k, d),        K_hat_ab(x, x') = Phi_a(x) . Phi_b(x') = J_a(x) R R^T J_b(x')^T.

E[R R^T] = Id_P, so K_hat is unbiased: E[K_hat] = Theta. For one entry, with K = Theta_ab(x, x'),
K_1 = Theta_aa(x, x) and K_2 = Theta_bb(x', x'), K_hat is a sum of d independent products of a
correlated Gaussian pair, so

    Var(K_hat) = (K^2 + K_1 K_2) / d,     |K_hat - K| <= c sqrt((K^2 + K_1 K_2) / d)

with probability about that of a Gaussian within c standard deviations (the sum is near-Gaussian
for d of tens or more; Chebyshev gives at least 1 - 1/c^2 for any d). This is the "after kernel"
of TRAK (Park et al., 2023): a kernel of rank at most d k, from features of size d per output.

R is never stored. Each parameter tensor's rows of R are drawn in segments of SEGMENT_ROWS rows,
each from its own generator seeded by (seed, the tensor's name, the segment), and regenerated for
every chunk of inputs: memory is one chunk's Jacobian and features plus one segment (SEGMENT_ROWS
x d), and a tensor's rows of R do not depend on which other parameters are selected (so the
sketches of a partition of the parameters add up to the sketch of all of them). The same seed
gives the same numbers on the same device and dtype (torch's generators differ between CPU and
CUDA).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import NTK_OUTPUTS, _build, _check_common, _Columns, _inputs, _model_dtype_device, _output_count, _unchanged
from .blocks import default_batch_size
from .functional import FunctionalModel
from .jacobian import JacobianMethod
from .keywords import Inputs
from .pntk import pntk_module
from .selection import Selection, restrict, select

__all__ = ["gradient_sketch", "sketched_ntk", "SEGMENT_ROWS", "SKETCH_BYTES"]

SEGMENT_ROWS = 1 << 14
"""Rows of R drawn by one generator (and held at once): 16384 x d numbers."""
SKETCH_BYTES = 1 << 30
"""Default memory for one chunk's Jacobian (1 GiB); ``batch_size`` overrides it."""


def gradient_sketch(model: nn.Module, x: Any, *, dim: int, seed: int, outputs: str = "full",
                    params: Selection = None, batch_size: int | None = None, forward_kwargs: Any = None) -> Any:
    """Per-example projected gradients Phi = J R (see the module docstring).

    Args:
        model: any torch.nn.Module mapping (N, ...) to (N, k) or (N,), with the checks of
            `torchntk.empirical_ntk` (eval mode where it matters; the model is left unchanged).
        x: inputs (N, ...), a tensor of the model's dtype and device or a numpy array (then the
            result is numpy).
        dim: d, the sketch's dimension (>= 1); the kernel's relative error falls like 1/sqrt(d).
        seed: seed of R (an integer >= 0); the same seed gives the same R for every call.
        outputs: "full", Phi of shape (N, k, d); "pntk", the sketch of
            g = (1/sqrt(k)) sum_a f_a, shape (N, d), equal to (1/sqrt(k)) sum_a Phi[:, a]
            (the same R). A model with outputs (N,) gives (N, d) either way.
        params: the parameters J runs over (names, nn.Parameter objects or a predicate
            name -> bool, as in `torchntk.empirical_ntk`); None for every trainable one.
        batch_size: inputs per chunk; by default the most whose Jacobians fit in SKETCH_BYTES.
        forward_kwargs: per-example keyword tensors of the model's forward (``model(x, **kw)``),
            one dict name -> tensor with one row per input, sliced with x into every chunk (as
            in `torchntk.empirical_ntk`).

    Returns:
        Phi in the model's dtype on its device (numpy if x was numpy). Work per chunk of B
        inputs: its Jacobians, B k P d multiply-adds and P d Gaussian draws.
    """
    if outputs not in ("full", "pntk"):
        raise ValueError(f"outputs must be 'full' ((N, k, d)) or 'pntk' ((N, d)) for a gradient sketch; got "
                         f"{outputs!r} (the trace kernel comes from the full sketch: sketched_ntk(..., "
                         "outputs='trace')).")
    _check_sketch(dim, seed)
    _check_common(model, "full", batch_size)
    chosen = select(model, params)
    _build(model, x)
    dtype, device = _model_dtype_device(model)
    numpy_out, t, _ = _inputs(x, None, dtype, device, False, forward_kwargs, model)
    with _unchanged(model) as snapshot:
        k, vector = _output_count(model, t)
        snapshot.check()
        phi = _sketch(model, t, k, vector, outputs == "pntk", chosen, dim, seed, batch_size)
    return phi.cpu().numpy() if numpy_out else phi


def sketched_ntk(model: nn.Module, x1: Any, x2: Any | None = None, *, dim: int, seed: int, outputs: str = "full",
                 params: Selection = None, batch_size: int | None = None, forward_kwargs: Any = None) -> Any:
    """The sketched empirical NTK Phi(x1) Phi(x2)^T, an unbiased estimate of `empirical_ntk`.

    Args:
        model, dim, seed, params, batch_size: as in `gradient_sketch` (one R for x1 and x2).
        x1: inputs (N1, ...) (tensor or numpy); x2: inputs (N2, ...), or None for x1 itself.
        outputs: "full", (N1, N2, k, k) with K_hat[i, j, a, b] = Phi_a(x1_i) . Phi_b(x2_j);
            "trace", (1/k) sum_a K_hat[..., a, a], (N1, N2); "pntk", the sketched pNTK, (N1, N2).
            Outputs of shape (N,) give (N1, N2).
        forward_kwargs: per-example keyword tensors of the model's forward, one dict for x1 (x2
            None) or a pair (kw1, kw2) for x1 and x2, each tensor with one row per input (as in
            `torchntk.empirical_ntk`).

    Returns:
        The kernel in the model's dtype on its device (numpy if the inputs were numpy). Each
        entry is within c sqrt((K^2 + K_1 K_2) / d) of the exact one with high probability (the
        module docstring).
    """
    if outputs not in NTK_OUTPUTS:
        raise ValueError(f"outputs must be one of {NTK_OUTPUTS}, got {outputs!r}.")
    _check_sketch(dim, seed)
    _check_common(model, "full", batch_size)
    chosen = select(model, params)
    _build(model, x1)
    dtype, device = _model_dtype_device(model)
    numpy_out, t1, t2 = _inputs(x1, x2, dtype, device, False, forward_kwargs, model)
    with _unchanged(model) as snapshot:
        k, vector = _output_count(model, t1)
        snapshot.check()
        pntk = outputs == "pntk"
        phi1 = _sketch(model, t1, k, vector, pntk, chosen, dim, seed, batch_size)
        phi2 = phi1 if t2 is None else _sketch(model, t2, k, vector, pntk, chosen, dim, seed, batch_size)
    if vector or pntk:
        result = phi1 @ phi2.t()
    elif outputs == "full":
        result = torch.einsum("iad,jbd->ijab", phi1, phi2)
    else:
        result = torch.einsum("iad,jad->ij", phi1, phi2) / k
    return result.cpu().numpy() if numpy_out else result


def _check_sketch(dim: Any, seed: Any) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer (the sketch's dimension d), got {dim!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")


def _sketch(model: nn.Module, x: Tensor | Inputs, k: int, vector: bool, pntk: bool, chosen: set[int] | None, dim: int,
            seed: int, batch_size: int | None) -> Tensor:
    """Phi (N, k, d), or (N, d) for the pNTK or outputs (N,)."""
    if vector:
        inner, width = _Columns(model), 1
    elif pntk and k > 1:
        inner, width = pntk_module(model, k, x.dtype, x.device, keywords=isinstance(x, Inputs)), 1
    else:
        inner, width = model, k
    fmodel = restrict(FunctionalModel(inner), chosen)
    # R's rows are keyed by the user's names for the tensors, whatever module wraps the model
    names = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), name)
    keys = [names[id(fmodel.model.get_parameter(name))] for name in fmodel.params]
    method = JacobianMethod(fmodel, width)
    n = x.shape[0]
    if batch_size is None:
        batch_size = default_batch_size(n, method.point_bytes(x.element_size()), SKETCH_BYTES)
    out = torch.zeros((n, width, dim), dtype=x.dtype, device=x.device)
    scale = 1.0 / math.sqrt(dim)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            jacobians = method.features(x[rows])              # one (B, k, P_t) per tensor
            acc = out[rows]                                   # a view: filled in place
            for key, jac in zip(keys, jacobians, strict=True):
                for segment, first in enumerate(range(0, jac.shape[2], SEGMENT_ROWS)):
                    last = min(first + SEGMENT_ROWS, jac.shape[2])
                    block = _gaussian_rows(seed, key, segment, last - first, dim, x.dtype, x.device)
                    acc += (jac[:, :, first:last] @ block).mul_(scale)
    return out[:, 0] if vector or pntk else out


def _gaussian_rows(seed: int, key: str, segment: int, rows: int, dim: int, dtype: torch.dtype,
                   device: torch.device) -> Tensor:
    """A (rows, dim) block of standard Gaussians from the generator of (seed, tensor name, segment)."""
    name = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    state = np.random.SeedSequence([seed, name, segment]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state))
    return torch.randn((rows, dim), generator=gen, dtype=dtype, device=device)
