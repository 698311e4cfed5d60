"""A subset of a model's trainable parameters: the ``params=`` of the empirical-NTK tools.

The kernel restricted to a set S of parameter tensors sums over their entries only,

    Theta^S_kk'(x, x') = sum_{p in S} d f_k(x) / d theta_p * d f_k'(x') / d theta_p,

so the kernels of a partition of the trainable parameters add up to the full kernel. ``params``
is an iterable of names (as in ``model.named_parameters()``; a tied tensor may be named by any of
its names) or of the nn.Parameter objects themselves, or a predicate ``name -> bool`` (a tensor
is chosen when the predicate holds for one of its names; frozen tensors are never chosen).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

from .functional import FunctionalModel

Selection = Iterable[str | Tensor] | Callable[[str], bool] | None
"""What ``params=`` accepts (see the module docstring); None is every trainable parameter."""


def select(model: nn.Module, params: Any) -> set[int] | None:
    """The ids of the chosen trainable parameter tensors, or None for all of them.

    ValueError for an unknown name, a tensor that is not one of the model's parameters, a frozen
    one named explicitly, or an empty selection; TypeError for anything else than the forms of
    the module docstring.
    """
    if params is None:
        return None
    named = list(model.named_parameters(remove_duplicate=False))
    by_name = {name: p for name, p in named}
    if callable(params) and not isinstance(params, (nn.Module, Tensor)):
        chosen = set()
        for name, p in named:
            verdict = params(name)
            if not isinstance(verdict, bool):
                raise TypeError(f"params as a predicate must return True or False for each parameter name; for "
                                f"{name!r} it returned {type(verdict).__name__}.")
            if verdict and p.requires_grad:
                chosen.add(id(p))
        if not chosen:
            raise ValueError("params selects no trainable parameter: the predicate is False (or the parameter "
                             f"frozen) for every one of {_names(named)}.")
        return chosen
    if isinstance(params, (str, Tensor)) or not isinstance(params, Iterable):
        what = "a single name" if isinstance(params, str) else type(params).__name__
        raise TypeError(f"params must be an iterable of parameter names or nn.Parameter objects (e.g. "
                        f"['fc.weight', 'fc.bias'] or model.fc.parameters()) or a predicate name -> bool; got "
                        f"{what}{' (wrap it in a list)' if isinstance(params, (str, Tensor)) else ''}.")
    ids = {id(p): name for name, p in named}
    chosen = set()
    for item in params:
        if isinstance(item, str):
            if item not in by_name:
                raise ValueError(f"params names {item!r}, which is not a parameter of the model; its parameters "
                                 f"are {_names(named)}.")
            p, name = by_name[item], item
        elif isinstance(item, Tensor):
            if id(item) not in ids:
                raise ValueError(f"params holds a tensor of shape {tuple(item.shape)} that is not a parameter of "
                                 "the model (pass the model's own nn.Parameter objects, or their names).")
            p, name = item, ids[id(item)]
        else:
            raise TypeError(f"params must hold parameter names (str) or nn.Parameter objects; got "
                            f"{type(item).__name__}.")
        if not p.requires_grad:
            raise ValueError(f"params names {name!r}, which is frozen (requires_grad=False) and so not part of the "
                             "empirical NTK; call requires_grad_(True) on it first, or leave it out.")
        chosen.add(id(p))
    if not chosen:
        raise ValueError("params is empty: name at least one trainable parameter (or pass params=None for all).")
    return chosen


def _names(named: list[tuple[str, Tensor]]) -> str:
    names = [name for name, _ in named]
    return ", ".join(repr(n) for n in names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def restrict(fmodel: FunctionalModel, chosen: set[int] | None) -> FunctionalModel:
    """``fmodel`` with the trainable tensors outside ``chosen`` moved to its fixed tensors (in
    place on the FunctionalModel, which the caller owns; the module is not touched)."""
    if chosen is None:
        return fmodel
    for name in list(fmodel.params):
        if id(fmodel.model.get_parameter(name)) not in chosen:
            fmodel.fixed[name] = fmodel.params.pop(name)
    return fmodel
