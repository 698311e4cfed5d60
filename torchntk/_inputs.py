"""Input checks at the public edge: tensors or numpy arrays in, clear errors for bad data."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

_FLOAT_DTYPES = (torch.float32, torch.float64)


def check_dtype(dtype: Any) -> torch.dtype:
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be torch.float64 (the default) or torch.float32, got {dtype!r}.")
    return dtype


def as_features(x: Any, name: str, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """x as a finite (N, d) tensor of ``dtype`` (on ``device`` if given, else where it lies).

    Accepts torch tensors, numpy arrays and nested sequences of numbers.
    """
    t = _real_tensor(x, name, "(N, d)")
    if t.dim() != 2:
        hint = " (for N scalar inputs use x.reshape(-1, 1); for one input use x.reshape(1, -1))" \
            if t.dim() == 1 else ""
        raise ValueError(f"{name} must have shape (N, d) with one row per input; got shape {tuple(t.shape)}{hint}.")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}; it needs at least one row and one feature.")
    return _finite_on(t, name, dtype, device)


def _real_tensor(x: Any, name: str, shapes: str) -> Tensor:
    """x as a tensor of real numbers (not yet converted); ``shapes`` names the accepted layouts."""
    if isinstance(x, Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"{name} must be a torch.Tensor or a numpy array of shape {shapes}; "
                            f"got {type(x).__name__} ({exc}).") from exc
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers; got a numpy array of dtype {arr.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers; got dtype {t.dtype}.")
    return t


def as_side_tensor(a: Any, name: str, expects: str) -> Tensor:
    """A side input (an adjacency, a mask) as a torch tensor, not yet checked or converted: a
    tensor as it is, a numpy array copied (never a view of the caller's). ``expects`` describes
    the accepted form, for the TypeError of anything else (lists, object arrays)."""
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            raise TypeError(f"{name} must be {expects}, got an object array.")
        return torch.from_numpy(np.array(a))
    if not isinstance(a, Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array, {expects}, got {type(a).__name__}.")
    return a


def is_traced(t: Tensor) -> bool:
    """Whether forward-mode AD or a torch.func transform (jvp, vmap, ...) is watching t: its
    values then cannot be read in Python (``bool(t.all())``), only its shape."""
    from torch._C._functorch import is_functorch_wrapped_tensor
    from torch.autograd.forward_ad import unpack_dual

    return is_functorch_wrapped_tensor(t) or unpack_dual(t).tangent is not None


def _finite_on(t: Tensor, name: str, dtype: torch.dtype, device: torch.device | None) -> Tensor:
    """t on ``device`` (an error if elsewhere) as ``dtype``; an error naming the first NaN or inf:
    by row and column for (N, d), by example and position for images and other layouts."""
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name} is on {t.device} but the other input is on {device}; move both to one "
                         f"device (e.g. {name}.to('{device}')).")
    t = t.to(dtype=dtype)
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        count = int((~finite).sum())
        where = (f"row {bad[0]}, column {bad[1]}" if t.dim() == 2
                 else f"example {bad[0]}, position {tuple(bad[1:])} of its {tuple(t.shape[1:])}")
        raise ValueError(f"{name} has {count} NaN or infinite entries (the first at {where}); remove or impute "
                         "them first.")
    return t


def to_output(t: Tensor, numpy_out: bool) -> Any:
    return t.detach().cpu().numpy() if numpy_out else t


def as_batch(x: Any, name: str, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """x as a finite tensor of ``dtype`` with one example per row of its first axis:
    (N, d) vectors, (N, C, L) sequences, (N, C, H, W) images or (N, C, D, H, W) volumes."""
    if isinstance(x, Tensor) or isinstance(x, np.ndarray):
        rank = x.dim() if isinstance(x, Tensor) else x.ndim
    else:
        rank = np.ndim(x)
    if rank == 2:
        return as_features(x, name, dtype, device)
    if rank not in (3, 4, 5):
        raise ValueError(f"{name} must have shape (N, d), (N, C, L), (N, C, H, W) or (N, C, D, H, W); got {rank} "
                         f"dimension(s).")
    t = _real_tensor(x, name, "(N, d), (N, C, L), (N, C, H, W) or (N, C, D, H, W)")
    if any(n == 0 for n in t.shape):
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}.")
    return _finite_on(t, name, dtype, device)


def as_pair_batches(x1: Any, x2: Any | None, dtype: torch.dtype) -> tuple[Tensor, Tensor | None, bool]:
    """Checked (x1, x2) of any supported rank (see `as_batch`), and whether numpy came in."""
    return _pair(x1, x2, dtype, as_batch)


def _pair(x1: Any, x2: Any | None, dtype: torch.dtype, read) -> tuple[Tensor, Tensor | None, bool]:
    check_dtype(dtype)
    numpy_in = isinstance(x1, np.ndarray) and (x2 is None or isinstance(x2, np.ndarray))
    t1 = read(x1, "x1", dtype)
    if x2 is None:
        return t1, None, numpy_in
    t2 = read(x2, "x2", dtype, device=t1.device)
    if t2.shape[1:] != t1.shape[1:]:
        if t1.dim() == 2 and t2.dim() == 2:
            raise ValueError(f"x1 and x2 must have the same number of features: x1 has {t1.shape[1]}, "
                             f"x2 has {t2.shape[1]}.")
        raise ValueError(f"x1 and x2 must have the same per-example shape: x1 is {tuple(t1.shape)}, "
                         f"x2 is {tuple(t2.shape)}.")
    return t1, t2, numpy_in


def check_pairwise_output(spec: Any, x: Tensor, what: str) -> None:
    """Raise ValueError unless ``spec`` maps each example of ``x`` (N, ...) to an output without
    positions, so that its kernel is one number per pair of examples: ``what`` (a kernel matrix,
    a store, a regression) holds exactly that, and a description ending in a Conv, whose kernel
    has one entry per pair of output positions too, would otherwise fail deep inside with a
    shape error. An ill-formed description raises its own ArchitectureError here."""
    analyse = getattr(spec, "analyse", None)
    if analyse is None or x.dim() < 2:
        return
    out = analyse(tuple(int(n) for n in x.shape[1:]))
    if getattr(out, "shape", ()) != ():
        raise ValueError(f"{what} holds one kernel value per pair of examples, but this network's output keeps "
                         f"positions {tuple(out.shape)} (its kernel has an entry per pair of positions too): end it "
                         "with a readout, Flatten() or GlobalAvgPool() then Dense(); spec.kernels(x) gives the "
                         "per-position kernels.")
