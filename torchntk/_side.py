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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SideInput:
    """One side input: its keyword, what it holds (for messages and help), and whether a
    description may go without it when no layer reads it (``optional``)."""

    name: str
    holds: str
    optional: bool


SIDE_INPUTS: tuple[SideInput, ...] = (
    SideInput("adjacency", "each graph's adjacency (N, V, V), A[n, i, j] the weight of the arc i -> j, or an "
              "integer edge list (N, E, 2)", optional=False),
    SideInput("mask", "which positions hold data, boolean (N, *positions), True for real data", optional=True),
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
