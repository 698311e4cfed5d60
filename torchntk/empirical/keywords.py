r"""Per-example keyword tensors of a model's forward: the ``forward_kwargs=`` of the empirical tools.

A model whose forward reads per-example data beside x, ``model(x, adjacency=A, mask=m)``, has
the empirical NTK

.. math::

    \Theta_{kk'}(x_i, x'_j) = \nabla_\theta f_k(x_i; \mathrm{kw}_i) \cdot \nabla_\theta f_{k'}(x'_j; \mathrm{kw}'_j),

with ``kw`` a dict name -> tensor whose first axis is the N inputs (row i goes with x[i]): one
dict for x1 alone, a pair (kw1, kw2) for x1 and x2. `attach` checks them and bundles each with its
inputs into an `Inputs`, which every method then treats as it treats x: a chunk of rows takes the
same rows of each keyword tensor (`torchntk._side.rows`), and as a pytree it is split by
``vmap`` over the examples along with x, so ``jacrev``, ``jvp`` and ``vjp`` see one example's x
and keywords at a time. `call` runs ``model(x, **kw)``. Without keywords the inputs stay plain
tensors and nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils import _pytree

from .._side import NAMES, rows


class Inputs:
    """A batch x (N, ...) with its per-example keyword tensors (each (N, ...)), indexed, cloned and
    reshaped together, as one pytree (x first, then the keywords in their order).

    ``shape``, ``dtype``, ``device``, ``dim()`` and ``element_size()`` are x's, so code that sizes
    chunks from x reads the same numbers; ``nbytes`` counts the keywords too.
    """

    __slots__ = ("x", "kwargs")

    def __init__(self, x: Tensor, kwargs: Mapping[str, Tensor]) -> None:
        self.x, self.kwargs = x, dict(kwargs)

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.kwargs.items())
        return f"Inputs(x={tuple(self.x.shape)}, {kw})"

    @property
    def shape(self) -> torch.Size:
        """x's shape."""
        return self.x.shape

    @property
    def dtype(self) -> torch.dtype:
        """x's dtype."""
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        """x's device."""
        return self.x.device

    def dim(self) -> int:
        """x's number of axes."""
        return self.x.dim()

    def element_size(self) -> int:
        """Bytes per entry of x."""
        return self.x.element_size()

    @property
    def nbytes(self) -> int:
        """Bytes of x and of every keyword tensor."""
        return sum(t.numel() * t.element_size() for t in (self.x, *self.kwargs.values()))

    def __getitem__(self, index: Any) -> Inputs:
        return Inputs(self.x[index], rows(self.kwargs, index))

    def clone(self) -> Inputs:
        """Copies of x and of the keywords: a forward that writes into its inputs writes into these."""
        return Inputs(self.x.clone(), {k: v.clone() for k, v in self.kwargs.items()})

    def unsqueeze(self, dim: int) -> Inputs:
        """A batch of one from one example (no batch axis): every tensor gains axis ``dim``."""
        return Inputs(self.x.unsqueeze(dim), {k: v.unsqueeze(dim) for k, v in self.kwargs.items()})


def _flatten(b: Inputs) -> tuple[list[Tensor], tuple[str, ...]]:
    return [b.x, *b.kwargs.values()], tuple(b.kwargs)


def _unflatten(leaves: Any, names: tuple[str, ...]) -> Inputs:
    leaves = list(leaves)
    return Inputs(leaves[0], dict(zip(names, leaves[1:], strict=True)))


_pytree.register_pytree_node(Inputs, _flatten, _unflatten, serialized_type_name="torchntk.empirical.keywords.Inputs")


def call(model: nn.Module, x: Tensor | Inputs) -> Any:
    """``model(x, **kw)`` for an `Inputs`, ``model(x)`` for a tensor."""
    if isinstance(x, Inputs):
        return model(x.x, **x.kwargs)
    return model(x)


def check_values(model: nn.Module, x: Tensor | Inputs) -> None:
    """A torchntk network's own check of its side inputs (``check_side_inputs``: shapes and
    values) on every row of x, outside any transform: the forwards that the methods vmap over
    the examples can read only their shapes. Other models check what they check in their forward
    (a check of values under vmap fails, and the methods then run the batched forward)."""
    check = getattr(model, "check_side_inputs", None)
    if isinstance(x, Inputs) and callable(check) and set(x.kwargs) <= set(NAMES):
        check(x.x, **x.kwargs)


def attach(t1: Tensor, t2: Tensor | None, forward_kwargs: Any, *, dtype: torch.dtype,
           device: torch.device) -> tuple[Tensor | Inputs, Tensor | Inputs | None]:
    """(x1, x2) with their keyword tensors attached (`Inputs`), or as they are without keywords.

    ``forward_kwargs`` is None, one dict for x1 (x2 None), or a pair (kw1, kw2) of dicts with the
    same names for x1 and x2. Each value is a tensor (floating ones of the model's dtype, on its
    device) or a numpy array (converted; floating ones to ``dtype``) whose first axis has one row
    per input of its x. TypeError / ValueError naming the keyword otherwise. The caller's tensors
    are not copied here but never written: the model sees clones (`Inputs.clone`).
    """
    if forward_kwargs is None:
        return t1, t2
    pair = isinstance(forward_kwargs, (tuple, list))
    if t2 is None and pair:
        raise ValueError(f"x2 is None, so forward_kwargs is one dict for x1 (name -> tensor with {t1.shape[0]} "
                         f"rows), not a {type(forward_kwargs).__name__} of {len(forward_kwargs)}.")
    if t2 is not None and not (pair and len(forward_kwargs) == 2):
        raise ValueError("with x1 and x2, forward_kwargs is a pair (kw1, kw2), one dict for the inputs of each "
                         f"(rows of x1: {t1.shape[0]}, of x2: {t2.shape[0]}); got "
                         f"{type(forward_kwargs).__name__}{'' if not pair else f' of {len(forward_kwargs)}'}.")
    if t2 is None:
        return Inputs(t1, _checked(forward_kwargs, "forward_kwargs", t1.shape[0], "x1", dtype, device)), None
    kw1 = _checked(forward_kwargs[0], "forward_kwargs[0]", t1.shape[0], "x1", dtype, device)
    kw2 = _checked(forward_kwargs[1], "forward_kwargs[1]", t2.shape[0], "x2", dtype, device)
    if set(kw1) != set(kw2):
        raise ValueError(f"forward_kwargs[0] and forward_kwargs[1] must name the same keywords, the model's forward "
                         f"takes them for x1 and for x2; got {sorted(kw1)} and {sorted(kw2)}.")
    return Inputs(t1, kw1), Inputs(t2, {k: kw2[k] for k in kw1})


def _checked(kwargs: Any, label: str, count: int, x_name: str, dtype: torch.dtype,
             device: torch.device) -> dict[str, Tensor]:
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{label} must be a dict of keyword name -> per-example tensor, got {type(kwargs).__name__}.")
    out = {}
    for name, value in kwargs.items():
        where = f"{label}[{name!r}]"
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"{label} has the key {name!r}; keys are the names of keyword arguments of the model's "
                            "forward.")
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise TypeError(f"{where} must hold numbers or booleans; got a numpy array of dtype {value.dtype}.")
            t = torch.from_numpy(np.array(value))   # a copy: never a view of the caller's array
            t = t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
        elif isinstance(value, Tensor):
            t = value.detach()
            if t.is_floating_point() and t.dtype != dtype:
                raise TypeError(f"{where} has dtype {t.dtype} but the model's parameters are {dtype}; use "
                                f".to({dtype}).")
            if t.device != device:
                raise ValueError(f"{where} is on {t.device} but the model is on {device}; use .to('{device}').")
        else:
            raise TypeError(f"{where} is a {type(value).__name__}, not a per-example tensor; forward_kwargs holds "
                            "tensors with one row per input. Fix other arguments in the model itself (a wrapper "
                            "module, or functools.partial of its forward).")
        if t.dim() == 0 or t.shape[0] != count:
            raise ValueError(f"{where} has shape {tuple(t.shape)}, but {x_name} holds {count} inputs: a keyword "
                             f"tensor is per example, its first axis the {count} rows of {x_name} in their order.")
        out[name] = t
    return out
