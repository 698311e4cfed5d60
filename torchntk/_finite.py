"""What the kernel recursion can represent, and one guard that no non-finite kernel gets out.

Representable (checked where a network description is built):

- ``weight_std`` and ``bias_std``: finite, >= 0, with a finite square in float64
  (at most about 1.3e154), since every Dense layer multiplies by weight_std^2 and adds bias_std^2;
- ``depth``: at most `MAX_DEPTH` dense layers.

Even representable settings can overflow: the kernel's scale grows (for activations with
|sigma(u)| <= |u|) at most like prod_l weight_std_l^2 ~ weight_std^(2 depth), times the first
layer's x.x' / n0. Entries of 1e160 in float64 (1e20 in float32) already overflow the Gram
matrix; depth 2000 with weight_std 2 overflows float64 by the end. Rather than return NaN or
inf silently, every kernel entry point passes its results through `check_finite_kernels`,
which raises `KernelOverflowError` naming the likely cause and what to do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

MAX_DEPTH = 10_000
"""Most dense layers a network description may have. Deep enough for any study of depth
(critically initialised networks are studied to a few thousand layers); beyond it the
recursion's cost and round-off grow without purpose, and a typo such as 10**20 would hang."""

MAX_SCALE = math.sqrt(torch.finfo(torch.float64).max) / 2
"""Largest weight_std / bias_std accepted: its square must be finite in float64 (about 6.7e153)."""


class KernelOverflowError(RuntimeError):
    """A kernel came out with inf or NaN entries although its inputs were finite."""


def check_scale(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` (a weight_std or bias_std) is finite, >= 0 and has a
    finite square in float64 (at most `MAX_SCALE`)."""
    if not value >= 0 or not value <= MAX_SCALE:
        raise ValueError(f"{name} must be finite and >= 0, at most {MAX_SCALE:.3g} (its square must be a finite "
                         f"float64), got {value}. Scales this large overflow the kernel; typical values are 0-10.")


def check_depth(depth: Any) -> int:
    """``depth`` as an int in [1, MAX_DEPTH], or a TypeError / ValueError saying what is allowed."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        try:
            import numpy as np
            ok = isinstance(depth, np.integer)
        except ImportError:  # pragma: no cover - numpy is a dependency
            ok = False
        if not ok:
            raise TypeError(f"depth must be an integer >= 1 and <= {MAX_DEPTH}, got {depth!r}.")
    depth = int(depth)
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be >= 1 and <= {MAX_DEPTH} (the number of dense layers; 1 is a random "
                         f"affine map), got {depth}.")
    return depth


def all_finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite, without allocating an (N1, N2) mask: amax and
    amin propagate NaN, and are +-inf exactly when an entry is."""
    if t.numel() == 0:
        return True
    t = t.detach()
    return bool(torch.isfinite(torch.amax(t))) and bool(torch.isfinite(torch.amin(t)))


def _traced(t: Tensor) -> bool:
    """Inside torch.func transforms (vmap, grad, jvp) a data-dependent check is impossible."""
    from torch._C._functorch import is_functorch_wrapped_tensor

    return is_functorch_wrapped_tensor(t)


def check_finite_kernels(nngp: Tensor | None, ntk: Tensor | None, context: Any,
                         inputs: Iterable[Tensor | None] = ()) -> None:
    """Raise `KernelOverflowError` if the NNGP or NTK result holds inf or NaN entries.

    Call it on the results of every kernel computation whose inputs were checked finite.

    Args:
        nngp, ntk: the computed kernels (any shape), or None for a kernel not computed.
        context: what was computed: a network description (anything with ``weighted_layers()``
            whose layers carry ``weight_std`` / ``bias_std``; the message then estimates the
            growth weight_std^(2 depth)), or a string.
        inputs: the (finite) input tensors, used to estimate the first layer's scale x.x' / n0.
    """
    results = [(name, k) for name, k in (("NNGP", nngp), ("NTK", ntk)) if k is not None]
    if any(_traced(k) for _, k in results):
        return
    bad = [(name, k) for name, k in results if not all_finite(k)]
    if not bad:
        return
    name, k = bad[0]
    count = int((~torch.isfinite(k.detach())).sum())
    dtype = k.dtype
    limit = torch.finfo(dtype).max
    what = context if isinstance(context, str) else repr(context)
    if len(what) > 160:
        what = what[:160] + "...)"
    causes = _causes(context, [t for t in inputs if t is not None], math.log10(limit))
    advice = ("Rescale the inputs (e.g. standardise them: --standardize on the command line), lower weight_std "
              "(sqrt(2) keeps a ReLU network's scale constant with depth) or bias_std, or use fewer layers")
    if dtype != torch.float64:
        advice += f"; or compute in float64 (its range ends at 1.8e308, {dtype}'s at {limit:.3g})"
    raise KernelOverflowError(
        f"the {name} kernel of {what} has {count} inf or NaN entries of {k.numel()} although the inputs are "
        f"finite: the kernel recursion overflowed {str(dtype).removeprefix('torch.')} (largest number "
        f"{limit:.3g}). {causes}{advice}.")


def _causes(context: Any, inputs: Sequence[Tensor], log_limit: float) -> str:
    """A sentence estimating log10 of the kernel's scale: the inputs' x.x'/n0 times
    prod_l weight_std_l^2 (the growth with depth), plus the largest bias_std^2; each factor is
    named when it is large (above a quarter of the range's exponent), all of them otherwise."""
    factors: list[tuple[float, str]] = []
    if inputs:
        biggest = max(float(t.detach().abs().amax()) for t in inputs if t.numel())
        if biggest > 0:
            log_input = 2 * math.log10(biggest)  # x.x'/n0 <= max|x|^2
            factors.append((log_input, f"the largest input entry is {biggest:.3g}, so x.x'/n0 reaches up to "
                                       f"1e{log_input:.0f}"))
    layers = context.weighted_layers() if hasattr(context, "weighted_layers") else None
    if layers is not None:
        weights = [w for w in (_value(getattr(layer, "weight_std", None)) for layer in layers) if w is not None]
        biases = [b for b in (_value(getattr(layer, "bias_std", None)) for layer in layers) if b is not None]
        if weights and all(w > 0 for w in weights):
            log_growth = sum(2 * math.log10(w) for w in weights)
            factors.append((log_growth, f"the kernel's scale grows like weight_std^(2 depth), here the product of "
                                        f"weight_std^2 over {len(weights)} weighted layers is 1e{log_growth:.0f}"))
        if biases and max(biases) > 0:
            log_bias = 2 * math.log10(max(biases))
            factors.append((log_bias, f"bias_std^2 is 1e{log_bias:.0f}"))
    if not factors:
        return ""
    large = [text for log, text in factors if log > log_limit / 4] or [text for _, text in factors]
    return "Estimated cause: " + "; ".join(large) + ". "


def _value(scale: Any) -> float | None:
    if isinstance(scale, Tensor):
        return float(scale.detach().item()) if scale.numel() == 1 else None
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        return float(scale)
    return None
