"""The fitted model (`KernelModel`): fit to data and predict as an infinitely wide network trained
by gradient flow (see the package doc); its files are written and read by `files`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import _side
from .._inputs import as_side_tensor
from ..engine.serial import Serial
from .files import ARRAY_NAMES, read_model, save_model
from .settings import ModelSettings

KernelFn = Callable[..., dict]
"""``fn(spec, x1, x2, kinds=("nngp", "ntk"), side1=..., side2=...) -> {kind: (N1, N2) tensor}``; x2
None for x1 against itself; side1 and side2 (name -> (N1, ...) / (N2, ...) tensors, `torchntk._side`)
are passed only when the model has side inputs."""


def direct_kernels(spec: Serial, x1: torch.Tensor, x2: torch.Tensor | None, *,
                   kinds: Sequence[str] = ("nngp", "ntk"), side1: dict | None = None,
                   side2: dict | None = None) -> dict[str, torch.Tensor]:
    """The kernels in one call of `Serial.kernels` (the default `KernelFn`), with the side
    inputs of x1 and x2 (`torchntk._side.keywords`)."""
    side = _side.keywords(side1, side2, x1, x2)
    if "ntk" in kinds:
        nngp, ntk = spec.kernels(x1, x2, **side)
        return {"nngp": nngp, "ntk": ntk}
    return {"nngp": spec.nngp(x1, x2, **side)}


class KernelModel:
    """An infinite-width network's predictor fitted to (x, y); see the package docstring (torchntk.model_io).

    Build it with `fit` or `load`. Attributes (numpy float64): x_train (N, d) and y_train
    (N, k) as given; x_mean, x_scale (d,) and y_mean, y_scale (k,), the standardisation applied
    before the kernel (zeros and ones when off); eigenvalues (N,) and eigenvectors (N, N) of
    K(X, X) + ridge * I (K the NTK, or the NNGP kernel for kernel="nngp"), nngp_train (N, N).
    ``classes``: for a classifier (``task="classification"``), its K labels, sorted, as a numpy
    array of ints or strings, and y_train holds their one-hot codes (N, K); None for a regression.
    ``side_train``: the training inputs' side inputs by name (adjacency (N, V, V) or (N, E, 2),
    mask (N, *positions); `torchntk._side`), empty when the network reads none and none was given.
    """

    def __init__(self, settings: ModelSettings, arrays: dict[str, np.ndarray], feature_names: Sequence[str],
                 target_names: Sequence[str], classes: Sequence[Any] | None = None,
                 side_train: dict[str, np.ndarray] | None = None) -> None:
        self.settings = settings.check()
        for name in ARRAY_NAMES:
            setattr(self, name, arrays[name])
        self.side_train = dict(side_train or {})
        self.feature_names = tuple(feature_names)
        self.target_names = tuple(target_names)
        self.classes = None if classes is None else np.asarray(list(classes))
        from ..dynamics import GradientFlow

        self.flow = GradientFlow.from_eigh(self.eigenvalues, self.eigenvectors, self._scaled_y(),
                                           nngp_train=self.nngp_train, ridge=settings.ridge)

    # -- fitting and predicting ---------------------------------------------------------

    @classmethod
    def fit(cls, x: Any, y: Any, settings: ModelSettings, *, task: str = "regression", standardize_x: bool = False,
            standardize_y: bool = False, feature_names: Sequence[str] | None = None,
            target_names: Sequence[str] | None = None, kernels: KernelFn = direct_kernels,
            side_inputs: dict[str, Any] | None = None) -> KernelModel:
        """Fit to inputs x (N, d) and targets y (N,) or (N, k).

        ``task="regression"`` fits y's values. ``task="classification"`` takes y as class
        labels, shape (N,), integers or strings (at least two distinct): with the K labels
        sorted into ``classes``, the network is trained on their one-hot codes centred at
        1/K (1 - 1/K on its own class, -1/K elsewhere, since the network's outputs have mean 0
        at initialisation), `predict` returns the K scores in one-hot units (1 at the label
        of a training point), and `predict_labels` their argmax. The codes are not
        standardised (standardize_y must be False).

        standardize_x / standardize_y centre each column and divide it by its standard
        deviation (constant columns by 1) before the kernel sees it; predictions are returned
        in the original units. ``kernels`` computes the kernel matrices (e.g. in blocks with a
        progress bar); by default one call of `Serial.kernels`. With an architecture, x may also
        be (N, C, *positions): it is stored flattened and its per-example shape becomes the
        settings' input_shape (which it must match if one is set).

        ``side_inputs``: the training inputs' side inputs by name, e.g. ``{"adjacency": A}`` with
        A (N, V, V) for a network with `torchntk.Aggregate`, ``{"mask": m}`` with m (N, *positions);
        required exactly as `Serial.kernels` requires them, copied, and saved with the model.
        """
        settings = settings.check()
        if task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")
        x, settings = _flatten_batch(x, settings)
        x = _as_matrix(x, "x")
        side = _side_arrays(side_inputs, settings, x.shape[0], "x")
        classes = None
        if task == "classification":
            if standardize_y:
                raise ValueError("standardize_y does not apply to classification: the one-hot codes of the classes "
                                 "are fitted as they are; leave it False.")
            classes, y = _one_hot(y, x.shape[0])
            target_names = ["class"] if target_names is None else target_names
            y_mean, y_scale = np.full(len(classes), 1.0 / len(classes)), np.ones(len(classes))
        else:
            y = _as_matrix(y, "y", column=True)
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; give one target row per input "
                                 "row.")
            y_mean, y_scale = column_moments(y, standardize_y, target_names)
        x_mean, x_scale = column_moments(x, standardize_x, feature_names)
        xs = settings.kernel_inputs(torch.from_numpy((x - x_mean) / x_scale))
        k = kernels(settings.spec(), xs, None, kinds=("nngp", "ntk") if settings.kernel == "ntk" else ("nngp",),
                    **_side_keywords(side, None))
        nngp = k["nngp"]
        train = k["ntk"] if settings.kernel == "ntk" else nngp
        from ..dynamics import GradientFlow

        flow = GradientFlow(train, torch.from_numpy((y - y_mean) / y_scale), nngp_train=nngp, ridge=settings.ridge)
        # The saved model needs the eigendecomposition anyway; take it first so that the check below
        # reuses it (predicting t = inf first would add a Cholesky factorisation).
        eigenvalues, eigenvectors = flow.eigenvalues, flow.eigenvectors
        flow.predict(settings.time, cov=None)  # O(N^2): a singular t = inf limit fails here, not at predict time
        arrays = {"x_train": x, "y_train": y, "x_mean": x_mean, "x_scale": x_scale, "y_mean": y_mean,
                  "y_scale": y_scale, "eigenvalues": eigenvalues.cpu().numpy(),
                  "eigenvectors": eigenvectors.cpu().numpy(), "nngp_train": nngp.cpu().numpy()}
        names_x = feature_names if feature_names is not None else [str(i) for i in range(x.shape[1])]
        names_y = target_names if target_names is not None else [str(i) for i in range(y.shape[1])]
        if classes is not None and len(names_y) != 1:
            raise ValueError(f"a classifier has one target (its labels); got target_names {list(names_y)!r}.")
        return cls(settings, arrays, names_x, names_y, classes, side)

    def predict(self, x: Any, *, time: float | None = None, kernels: KernelFn = direct_kernels,
                side_inputs: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), each of shape (M, k), at inputs x (M, d), in the targets' units.

        mean_t(x) = T_t(x) y and std_t(x) = sqrt(cov_t(x, x)) of `torchntk.GradientFlow` at the
        model's time (or ``time``); the std is that of the network's output over random
        initialisations, the same for each output up to the target's scale. With an input shape,
        x may also be (M, *input_shape). ``side_inputs``: the side inputs of x by name, as `fit`
        took them (an adjacency is required when the network reads one; a mask that only the
        training or only the test inputs have counts every position of the others as real).
        """
        x, _ = _flatten_batch(x, self.settings)
        x = _as_matrix(x, "x")
        if x.shape[1] != self.x_train.shape[1]:
            raise ValueError(f"x has {x.shape[1]} feature(s) but the model was fitted on {self.x_train.shape[1]}.")
        side = _side_arrays(side_inputs, self.settings, x.shape[0], "x")
        t = self.settings.time if time is None else time
        spec = self.settings.spec()
        xs = self.settings.kernel_inputs(torch.from_numpy((x - self.x_mean) / self.x_scale))
        xt = self.settings.kernel_inputs(torch.from_numpy((self.x_train - self.x_mean) / self.x_scale))
        k = kernels(spec, xs, xt, kinds=("nngp", "ntk") if self.settings.kernel == "ntk" else ("nngp",),
                    **_side_keywords(side, self.side_train))
        cross_nngp = k["nngp"]
        cross = k["ntk"] if self.settings.kernel == "ntk" else cross_nngp
        prior = spec.nngp(xs, diagonal=True, **_side.keywords(_tensors(side), None, xs))
        pred = self.flow.predict(t, ntk_test_train=cross, nngp_test_train=cross_nngp, nngp_test=prior, cov="diag",
                                 train_cov=False)
        mean = pred.mean[0].cpu().numpy() * self.y_scale + self.y_mean
        std = np.sqrt(pred.var[0].cpu().numpy())[:, None] * self.y_scale
        return mean, std

    def predict_labels(self, x: Any, *, time: float | None = None, kernels: KernelFn = direct_kernels) -> np.ndarray:
        """A classifier's labels at inputs x (M, d): ``classes[argmax(mean)]``, shape (M,), of the
        classes' type (ints stay ints, strings strings); `predict` gives the scores themselves."""
        if self.classes is None:
            raise ValueError("predict_labels needs a classifier (fitted with task='classification'); this model is a "
                             "regression: use predict.")
        mean, _ = self.predict(x, time=time, kernels=kernels)
        return self.classes[np.argmax(mean, axis=1)]

    def training_accuracy(self, *, time: float | None = None) -> float:
        """A classifier's fraction of training points whose predicted label (argmax of the
        trained network's mean output there, at the model's time or ``time``) is their own;
        O(N^2) from the stored eigendecomposition."""
        if self.classes is None:
            raise ValueError("training_accuracy needs a classifier (fitted with task='classification').")
        t = self.settings.time if time is None else time
        train_mean = self.flow.predict(t, cov=None).train_mean[0].cpu().numpy()
        return float(np.mean(np.argmax(train_mean, axis=1) == np.argmax(self.y_train, axis=1)))

    def _scaled_y(self) -> np.ndarray:
        return (self.y_train - self.y_mean) / self.y_scale

    # -- plain-data storage -------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` and ``arrays.npz`` into ``directory`` (created if needed).

        Refuses a non-empty directory that is not already a torchntk model, so that saving
        never mixes into (or overwrites) someone else's files.
        """
        arrays = {name: getattr(self, name) for name in ARRAY_NAMES}
        return save_model(directory, self.settings, arrays, self.feature_names, self.target_names, self.classes,
                          self.side_train)

    @classmethod
    def load(cls, directory: str | Path) -> KernelModel:
        """Read a model written by `save`, without pickle; a ValueError says why if it is not one.

        Every field of model.json is checked for type and range, the arrays for shape, dtype and
        finiteness, and the sha256 content fingerprint recorded at save time over both is
        verified, so a hand-edited setting, permuted names or arrays from another model are
        refused. (The fingerprint detects changes; it does not authenticate the writer.)
        """
        settings, arrays, feature_names, target_names, classes, side = read_model(directory)
        return cls(settings, arrays, feature_names, target_names, classes, side)


def _side_arrays(side_inputs: dict[str, Any] | None, settings: ModelSettings, n: int,
                 what: str) -> dict[str, np.ndarray]:
    """The side inputs of ``n`` inputs as private numpy copies (floats as float64, integers as
    int64, bools as bool), after checking that they are the ones the network needs: a
    ValueError names a missing required one, one no layer reads, or a wrong number of rows."""
    side = _side.given(side_inputs)
    missing, unread = _side.problems(settings.spec(), side)
    if missing:
        name = missing[0]
        raise ValueError(f"the network reads {name} (a layer such as Aggregate), but none was given for {what}: pass "
                         f"side_inputs={{{name!r}: ...}}, {_side.BY_NAME[name].holds}.")
    if unread:
        raise ValueError(f"side input {unread[0]!r} was given, but no layer of the network reads it; leave it out.")
    out = {}
    for name, value in side.items():
        t = as_side_tensor(value, name, _side.BY_NAME[name].holds).detach().cpu()
        if t.dim() < 2 or t.shape[0] != n:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but {what} holds {n} inputs; give one {name} per "
                             f"input, in the inputs' order, ({n}, ...).")
        dtype = torch.bool if t.dtype == torch.bool else torch.float64 if t.is_floating_point() else torch.int64
        out[name] = t.to(dtype).numpy().copy()
    return out


def _tensors(side: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(a) for name, a in side.items()}


def _side_keywords(side1: dict[str, np.ndarray], side2: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """side1= and side2= for a `KernelFn`, only when there are side inputs (so that a kernel
    function written without them keeps working for models that have none)."""
    if not side1 and not side2:
        return {}
    return {"side1": _tensors(side1), "side2": None if side2 is None else _tensors(side2)}


def _one_hot(labels: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes (K,), one-hot codes (N, K) float64) of class labels (N,): integers or strings."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"class labels must be one per row, shape (N,); got shape {arr.shape}.")
    if arr.dtype.kind == "O" and arr.size and (arr.astype(str) == arr).all():  # e.g. a pandas column of str
        arr = arr.astype(str)
    if arr.dtype.kind not in "iuUS":
        hint = (" (if they are class numbers stored as floats, pass labels.astype(int))"
                if arr.dtype.kind == "f" else "")
        raise TypeError(f"class labels must be integers or strings; got dtype {arr.dtype}{hint}.")
    if arr.shape[0] != n:
        raise ValueError(f"x has {n} rows but there are {arr.shape[0]} labels; give one label per input row.")
    classes, codes = np.unique(arr.astype(str) if arr.dtype.kind == "S" else arr, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"classification needs at least two classes; every label is {classes[0]!r}.")
    return classes, np.eye(len(classes))[codes]


def _flatten_batch(x: Any, settings: ModelSettings) -> tuple[Any, ModelSettings]:
    """(N, C, *positions) inputs of an architecture as (N, d) rows, and the settings with that
    per-example shape as input_shape; anything else unchanged (checked later)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if np.ndim(x) <= 2 or settings.spec().starts_with_dense():
        return x, settings
    x = np.asarray(x)
    shape = tuple(int(n) for n in x.shape[1:])
    if settings.input_shape is not None and shape != settings.input_shape:
        raise ValueError(f"x has per-example shape {shape} but the model's input_shape is {settings.input_shape}.")
    if settings.input_shape is None:
        settings = replace(settings, input_shape=shape).check()
    return x.reshape(x.shape[0], -1), settings


def _as_matrix(a: Any, name: str, column: bool = False) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
    if column and arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array (one row per data point); got shape {arr.shape}.")
    arr = np.array(arr, dtype=np.float64)  # a private copy: later edits of the caller's array cannot leak in
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or infinite entries; remove or impute them first.")
    return arr


def column_moments(a: np.ndarray, on: bool = True,
                   names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of each column of ``a`` (N, d) for standardising: (x - mean) / scale, the
    scale being the standard deviation (1 for constant columns); zeros and ones when ``on`` is
    False. A column whose mean or standard deviation overflows float64 is refused (ValueError)
    rather than silently zeroed."""
    if not on:
        return np.zeros(a.shape[1]), np.ones(a.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):
        mean, scale = a.mean(axis=0), a.std(axis=0)
    bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(scale)))
    if bad.size:
        col = int(bad[0])
        name = names[col] if names is not None else str(col)
        biggest = float(np.abs(a[:, col]).max())
        raise ValueError(f"column {name!r} cannot be standardised: its mean or standard deviation overflows "
                         f"float64 (values up to {biggest:.3g}); rescale it first (e.g. divide it by "
                         f"1e{int(np.log10(biggest)) - 10}).")
    return mean, np.where(scale > 0, scale, 1.0)
