"""Side inputs (adjacency, mask) carried in the rows of a 2-D X, for scikit-learn, which passes
only X to estimators, kernels, cross-validation and searches.

`pack_rows` lays out each example as one row: its input flattened (C * prod(positions) values),
then each side input's dense form flattened, in the order of `torchntk._side.SIDE_INPUTS`:

- ``adjacency``: the (V, V) arc weights (an integer edge list is turned into them: an arc
  listed k times weighs k), V * V columns;
- ``mask``: 1.0 at real positions and 0.0 at padding, prod(positions) columns.

The estimators and kernels given ``spec`` and ``input_shape`` unpack the rows by that
description (`unpack_rows`): the side inputs a layer reads are always there (an `Aggregate`'s
adjacency), and an optional one (a mask) is there exactly when X has its columns. Every
subset of rows (a fold, a bootstrap) keeps each example's side inputs with it.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch

from .. import _side
from .._inputs import as_batch, as_side_tensor


def pack_rows(x: Any, **side_inputs: Any) -> np.ndarray:
    """One row per example, its input and side inputs side by side, for scikit-learn.

    Args:
        x: inputs (N, C, *positions), e.g. graphs (N, C, V) or sequences (N, C, L); a tensor or
            numpy array.
        **side_inputs: by name (`torchntk._side`): ``adjacency=`` (N, V, V) weights or an integer
            edge list (N, E, 2); ``mask=`` boolean (N, *positions). Each is checked as
            ``spec.kernels`` checks it.

    Returns:
        X, float64 (N, C * prod(positions) + V * V [adjacency] + prod(positions) [mask]): row n
        is ``x[n].ravel()``, then each given side input's dense form raveled, in the order
        adjacency, mask. Give the estimator or kernel ``input_shape=x.shape[1:]`` and the
        network description to unpack it.

    Example:
        >>> import numpy as np
        >>> from torchntk.sklearn import pack_rows
        >>> x, mask = np.zeros((4, 2, 6)), np.arange(6) < np.array([[6], [3], [4], [2]])
        >>> pack_rows(x, mask=mask).shape       # 2 * 6 input values, then 6 mask flags
        (4, 18)
    """
    side = _side.given(side_inputs)
    t = as_batch(x, "x", torch.float64)
    if side and t.dim() < 3:
        raise ValueError(f"x has shape {tuple(t.shape)}: side inputs go with inputs that have positions, (N, C, "
                         "*positions) such as graphs (N, C, V) or sequences (N, C, L).")
    shape = tuple(t.shape[1:])
    columns = [t.reshape(t.shape[0], -1)]
    for name in _side.NAMES:
        if name in side:
            entry = _side.BY_NAME[name]
            entry.check(side[name], name, t.shape[0], shape)
            dense = entry.to_dense(as_side_tensor(side[name], name, entry.holds).cpu(), shape)
            columns.append(dense.reshape(t.shape[0], -1))
    return torch.cat([c.cpu() for c in columns], dim=1).numpy()


def unpack_rows(X: np.ndarray, spec: Any, input_shape: tuple[int, ...] | None) -> tuple[np.ndarray, dict]:
    """(x (N, prod(input_shape)), side inputs by name) of rows written by `pack_rows`, by the
    description ``spec`` and the per-example shape ``input_shape`` (None: X as it is, no side
    inputs). The side inputs ``spec`` reads are required; optional ones are present when X has
    their columns. A ValueError says which widths X could have when it has none of them."""
    read = _side.read_by(spec)
    if input_shape is None:
        if read:
            raise ValueError(f"the network reads {read[0]}, which travels in the rows of X (pack_rows): give "
                             "input_shape=x.shape[1:] too, so that the rows can be unpacked.")
        return X, {}
    shape = tuple(input_shape)
    base = math.prod(shape)
    optional = [name for name in _side.NAMES if name not in read and _side.BY_NAME[name].optional]
    fixed = base + sum(_side.packed_width(name, shape) for name in read)
    fits = []
    for count in range(len(optional) + 1):  # subsets of the (few) optional side inputs
        for names in itertools.combinations(optional, count):
            if fixed + sum(_side.packed_width(name, shape) for name in names) == X.shape[1]:
                fits.append(set(names))
    if len(fits) != 1:
        layouts = [f"{fixed} ({' + '.join(['the inputs', *read])})"]
        layouts += [f"{fixed + _side.packed_width(name, shape)} (with {name})" for name in optional]
        if fits:
            raise ValueError(f"X has {X.shape[1]} columns, which fits several layouts of input_shape {shape} for this "
                             f"network ({', or '.join(layouts)}); it cannot be unpacked.")
        raise ValueError(f"X has {X.shape[1]} columns, but input_shape {shape} needs {', or '.join(layouts)} for "
                         "this network; pack inputs with side inputs by torchntk.sklearn.pack_rows(x, ...).")
    present = [name for name in _side.NAMES if name in read or name in fits[0]]
    side, start = {}, base
    for name in present:
        width = _side.packed_width(name, shape)
        block = torch.from_numpy(np.ascontiguousarray(X[:, start:start + width]))
        side[name] = _side.BY_NAME[name].from_dense(block.reshape(X.shape[0], *_side.BY_NAME[name].row_shape(shape)))
        start += width
    return X[:, :base], side
