"""The side inputs a call can carry beside its data: one registry for every edge of the package.

A side input is per-example data that a description reads beside ``x`` (N, C, *positions):

- ``adjacency``: each graph's weighted arcs, (N, V, V) floats (``A[n, i, j]`` the arc i -> j) or
  an integer edge list (N, E, 2); required exactly when a layer (`Aggregate`) reads it;
- ``mask``: which positions hold data, boolean (N, *positions) (True: real); optional for any
  description of inputs with positions.

Both are indexed by example along their first axis, so a subset of the rows of ``x`` takes the
same rows of every side input (`rows`). The kernels' keywords (``spec.kernels(..., adjacency=,
mask=)``), the finite networks' (``net(x, adjacency=, mask=)``), Monte Carlo, the empirical NTK's
``forward_kwargs``, the stores, the scikit-learn adapters and the command line all take the
names listed here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SideInput:
    """One side input: its keyword, what it holds (for messages and help), and whether a
    description may go without it when no layer reads it (``optional``)."""

    name: str
    holds: str
    optional: bool
    row_shape: Callable[[tuple[int, ...]], tuple[int, ...]] | None = None
    """One example's side input in its dense form, from the per-example input shape (C, *positions);
    a ValueError for inputs it cannot go with."""
    to_dense: Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor] | None = None
    """(N, ...) as given -> its dense form (N, *row_shape) in float64, for packing into table rows."""
    from_dense: Callable[[torch.Tensor], torch.Tensor] | None = None
    """The dense float64 form back to what the kernels take (ValueError for values it cannot hold)."""
    neutral: Callable[[int, tuple[int, ...]], torch.Tensor] | None = None
    """For an optional side input: the value (count, *row_shape) that changes nothing, given to the
    inputs that come without one when the others have one."""
    check: Callable[[Any, str, int, tuple[int, ...]], torch.Tensor] | None = None
    """``check(value, label, count, input_shape)``: the kernels' own check and conversion of the
    side input of ``count`` inputs of per-example shape (C, *positions), a ValueError starting
    with ``label`` otherwise; for the edges (files, tables) to check a whole array up front."""


def _graph_nodes(input_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(input_shape) != 2:
        raise ValueError(f"an adjacency goes with graphs, inputs (C, V) of C channels on V nodes; the inputs are "
                         f"{tuple(input_shape)}.")
    return input_shape[1], input_shape[1]


def _dense_adjacency(a: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """An adjacency (N, V, V), or an integer edge list (N, E, 2) (an arc listed k times weighs k,
    an entry with a negative end is padding), as dense float64 weights (N, V, V)."""
    nodes = _graph_nodes(input_shape)[0]
    if a.is_floating_point() or a.dtype == torch.bool:
        return a.to(torch.float64)
    if a.dim() != 3 or a.shape[2] != 2:
        raise ValueError(f"adjacency is an integer array, so it is read as an edge list (N, E, 2), but its shape is "
                         f"{tuple(a.shape)}.")
    if a.numel() and int(a.max()) >= nodes:
        raise ValueError(f"adjacency has an arc to or from node {int(a.max())}, but the graphs have {nodes} nodes.")
    real = (a >= 0).all(dim=2)                                           # (N, E): padding has a negative end
    graph = torch.arange(a.shape[0]).unsqueeze(1).expand_as(real)
    dense = torch.zeros(a.shape[0], nodes, nodes, dtype=torch.float64)
    dense.index_put_((graph[real], a[..., 0][real], a[..., 1][real]), torch.ones(int(real.sum()),
                     dtype=torch.float64), accumulate=True)
    return dense


def _mask_from_dense(m: torch.Tensor) -> torch.Tensor:
    if not ((m == 0) | (m == 1)).all():
        raise ValueError("the mask's columns must hold only 0 and 1 (False and True); they hold other values.")
    return m != 0


def _positions(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(input_shape) < 2:
        raise ValueError(f"a mask marks positions, but the inputs {tuple(input_shape)} have none (vectors); masks go "
                         "with sequences (C, L), images (C, H, W) or graphs (C, V).")
    return tuple(input_shape[1:])


def _check_adjacency(a: Any, label: str, count: int, input_shape: tuple[int, ...]) -> torch.Tensor:
    from .engine.graph import as_adjacency

    try:
        nodes = _graph_nodes(tuple(input_shape))[0]
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None
    return as_adjacency(a, label, count, nodes, dtype=torch.float64, device=torch.device("cpu"))


def _check_mask(m: Any, label: str, count: int, input_shape: tuple[int, ...]) -> torch.Tensor:
    from .engine.mask import as_mask

    return as_mask(m, label, count, tuple(input_shape[1:]), device=torch.device("cpu"))


SIDE_INPUTS: tuple[SideInput, ...] = (
    SideInput("adjacency", "each graph's adjacency (N, V, V), A[n, i, j] the weight of the arc i -> j, or an "
              "integer edge list (N, E, 2)", optional=False, row_shape=_graph_nodes, to_dense=_dense_adjacency,
              from_dense=lambda a: a, check=_check_adjacency),
    SideInput("mask", "which positions hold data, boolean (N, *positions), True for real data", optional=True,
              row_shape=_positions, to_dense=lambda m, shape: m.to(torch.float64), from_dense=_mask_from_dense,
              neutral=lambda count, shape: torch.ones(count, *_positions(shape), dtype=torch.bool),
              check=_check_mask),
)
NAMES: tuple[str, ...] = tuple(s.name for s in SIDE_INPUTS)


def given(side: Mapping[str, Any] | None) -> dict[str, Any]:
    """The side inputs that were given (not None), checked to be known names (TypeError otherwise)."""
    side = dict(side or {})
    unknown = set(side) - set(NAMES)
    if unknown:
        raise TypeError(f"unknown side input(s) {sorted(unknown)}; the side inputs are {list(NAMES)}.")
    return {k: v for k, v in side.items() if v is not None}


def rows(side: Mapping[str, Any], index: Any) -> dict[str, Any]:
    """The side inputs of the examples ``index`` (a slice, an index tensor or array): the same
    rows of each, as ``x[index]`` takes of the data."""
    return {k: v[index] for k, v in side.items()}


def split(side: Mapping[str, Any], paired: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(x1's side inputs, x2's or None) from a call's: with x2 (``paired``) each side input is a
    tuple (for x1, for x2), as ``spec.kernels(x1, x2, adjacency=(A1, A2))`` takes it; without, one
    value for x1. ValueError naming the side input for the other form."""
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    for name, value in side.items():
        pair = isinstance(value, tuple)
        if not paired and pair:
            raise ValueError(f"x2 is None, so give one {name} for x1 ({name}=value with one row per input of x1), "
                             f"not a tuple of {len(value)}.")
        if paired and (not pair or len(value) != 2):
            raise ValueError(f"with x1 and x2, give one {name} for each, a tuple {name}=(for x1, for x2), each "
                             "with one row per input.")
        first[name], second[name] = (value if paired else (value, None))
    return first, (second if paired else None)


def check_rows(side: Mapping[str, Any], count: int, label: str) -> None:
    """TypeError unless each side input is a tensor or array, ValueError unless it has ``count``
    rows, one per input of ``label`` ("x1", "x2"), in their order."""
    for name, value in side.items():
        shape = getattr(value, "shape", None)
        if shape is None:
            raise TypeError(f"{name} (of {label}) must be a torch tensor or numpy array, got {type(value).__name__}.")
        if len(shape) == 0 or shape[0] != count:
            raise ValueError(f"{name} (of {label}) has shape {tuple(shape)}, but {label} holds {count} inputs; give "
                             f"one {name} per input along the first axis, in the inputs' order.")


BY_NAME: dict[str, SideInput] = {s.name: s for s in SIDE_INPUTS}


def read_by(spec: Any) -> tuple[str, ...]:
    """The side inputs a layer of the description ``spec`` reads (its ``side_inputs``), in the
    registry's order: exactly those a call must give when they are not optional."""
    names: set[str] = set()
    stack = [spec]
    while stack:   # the description's layers, not data
        layer = stack.pop()
        names.update(getattr(layer, "side_inputs", ()))
        stack.extend(layer.sublayers() if hasattr(layer, "sublayers") else ())
    return tuple(name for name in NAMES if name in names)


def problems(spec: Any, names: Any) -> tuple[list[str], list[str]]:
    """(missing, unread): the side inputs the description reads but ``names`` lacks, and those
    in ``names`` that no layer reads and that are not optional (a call with either fails)."""
    read, names = read_by(spec), set(names)
    missing = [name for name in read if name not in names]
    unread = [name for name in NAMES if name in names and name not in read and not BY_NAME[name].optional]
    return missing, unread


def keywords(side1: Mapping[str, Any] | None, side2: Mapping[str, Any] | None, x1: Any,
             x2: Any | None = None) -> dict[str, Any]:
    """The side-input keywords of ``spec.kernels(x1, x2, **keywords)`` from each input's own
    side inputs (name -> (N1, ...) and (N2, ...)): one value each for x2 None, else a pair
    (side1's, side2's). An optional side input that only one of x1, x2 has is given to the
    other as its ``neutral`` value (a mask: every position real); a required one is a ValueError."""
    side1, side2 = given(side1), given(side2)
    if x2 is None:
        if side2:
            raise ValueError(f"side inputs {sorted(side2)} were given for x2, but x2 is None.")
        return side1
    out = {}
    for name in NAMES:
        if name not in side1 and name not in side2:
            continue
        pair = []
        for side, x, which in ((side1, x1, "x1"), (side2, x2, "x2")):
            if name in side:
                pair.append(side[name])
            elif BY_NAME[name].neutral is not None:
                pair.append(BY_NAME[name].neutral(x.shape[0], tuple(x.shape[1:])))
            else:
                other = "x2" if which == "x1" else "x1"
                raise ValueError(f"{name} was given for {other} but not for {which}; give one for each ("
                                 f"{BY_NAME[name].holds}).")
        out[name] = tuple(pair)
    return out


def packed_width(name: str, input_shape: tuple[int, ...]) -> int:
    """The number of table columns one example's side input ``name`` takes (its dense form)."""
    return math.prod(BY_NAME[name].row_shape(tuple(input_shape)))
