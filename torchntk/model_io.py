"""A fitted infinite-width model as plain data: fit, predict, save to and load from a directory.

>>> import os, tempfile
>>> import numpy as np
>>> from torchntk.model_io import KernelModel, ModelSettings
>>> x, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(40.0).reshape(20, 2)
>>> model = KernelModel.fit(x, y, ModelSettings(depth=3, kernel="ntk", time=float("inf")))
>>> mean, std = model.predict(x[:5])          # (M, k) each, in the targets' units
>>> mean.shape, std.shape
((5, 2), (5, 2))
>>> path = model.save(os.path.join(tempfile.mkdtemp(), "model"))
>>> np.allclose(KernelModel.load(path).predict(x[:5])[0], mean)
True

The prediction is that of `torchntk.GradientFlow` (docs/conventions.md, the paper's Section A.2): the mean
and standard deviation, over random initialisations, of the output of an infinitely wide network
trained by gradient flow for time ``time`` on C = (1/2N) sum_i |f(x_i) - y_i|^2 (time = inf: to
convergence). ``kernel="ntk"`` trains every layer; ``kernel="nngp"`` trains only the readout,
whose tangent kernel is Sigma(L), so that at time = inf the prediction is the exact Gaussian-
process posterior. The standard deviation is that of the network's output over initialisations
(no observation noise is added).

On disk a model is a directory with ``model.json`` (a format tag and version, the settings, the
column names) and ``arrays.npz`` (training inputs and targets, the standardisation, the training
kernel's eigendecomposition and its NNGP matrix); `load` reads it with ``allow_pickle=False`` and
refuses anything that is not such a directory. Sizes: two (N, N) float64 matrices, 16 N^2 bytes.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .activations import CLOSED_FORM, QUADRATURE
from .spec import Serial, mlp

FORMAT = "torchntk.kernel-model"
VERSION = 1
_JSON, _ARRAYS = "model.json", "arrays.npz"
_ARRAY_NAMES = ("x_train", "y_train", "x_mean", "x_scale", "y_mean", "y_scale", "eigenvalues", "eigenvectors",
                "nngp_train")

KernelFn = Callable[..., dict]
"""``fn(spec, x1, x2, kinds=("nngp", "ntk")) -> {kind: (N1, N2) tensor}``; x2 None for x1 against itself."""


@dataclass(frozen=True)
class ModelSettings:
    """What describes a fitted model besides its data.

    Attributes:
        depth, activation, bias_std, weight_std: the network, as in `torchntk.mlp` (the
            activation by name, so that it can be saved).
        kernel: "ntk" (all layers trained) or "nngp" (only the readout trained).
        time: training time t in the paper's units (t = lr * steps; float("inf") = converged).
        ridge: added to the diagonal of the training kernel (see `torchntk.GradientFlow`); a
            tiny default, as scikit-learn's GaussianProcessRegressor alpha, so that duplicate
            training points leave t = inf defined. 0 gives the exact interpolant.
    """

    depth: int = 3
    activation: str = "relu"
    bias_std: float = 0.1
    weight_std: float = 1.0
    kernel: str = "ntk"
    time: float = math.inf
    ridge: float = 1e-10

    def check(self) -> ModelSettings:
        """Raise a ValueError / TypeError naming the bad setting; return self."""
        if isinstance(self.depth, bool) or not isinstance(self.depth, (int, np.integer)) or self.depth < 1:
            raise ValueError(f"depth must be an integer >= 1 (the number of dense layers), got {self.depth!r}.")
        known = sorted([*CLOSED_FORM, *QUADRATURE])
        if not isinstance(self.activation, str) or self.activation.lower() not in known:
            raise ValueError(f"activation must be one of {', '.join(known)}; got {self.activation!r}.")
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"kernel must be 'ntk' (all layers trained) or 'nngp' (readout only), "
                             f"got {self.kernel!r}.")
        for name, inf_ok in (("bias_std", False), ("weight_std", False), ("time", True), ("ridge", False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
            if math.isnan(value) or value < 0 or (math.isinf(value) and not inf_ok):
                allowed = "a number >= 0 or inf" if inf_ok else "a finite number >= 0"
                raise ValueError(f"{name} must be {allowed}, got {value!r}.")
        return self

    def spec(self) -> Serial:
        return mlp(int(self.depth), self.activation.lower(), bias_std=float(self.bias_std),
                   weight_std=float(self.weight_std))

    def to_json(self) -> dict:
        out = asdict(self)
        out["time"] = "inf" if math.isinf(self.time) else float(self.time)  # strict JSON has no Infinity
        return out

    @classmethod
    def from_json(cls, data: Any) -> ModelSettings:
        if not isinstance(data, dict):
            raise ValueError("the model's settings are not a JSON object.")
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"the model's settings have keys {sorted(data)}; expected {sorted(names)}.")
        values = dict(data)
        if values["time"] == "inf":
            values["time"] = math.inf
        return cls(**values).check()


def direct_kernels(spec: Serial, x1: torch.Tensor, x2: torch.Tensor | None, *,
                   kinds: Sequence[str] = ("nngp", "ntk")) -> dict[str, torch.Tensor]:
    """The kernels in one call of `Serial.kernels` (the default `KernelFn`)."""
    if "ntk" in kinds:
        nngp, ntk = spec.kernels(x1, x2)
        return {"nngp": nngp, "ntk": ntk}
    return {"nngp": spec.nngp(x1, x2)}


class KernelModel:
    """An infinite-width network's predictor fitted to (x, y); see the module docstring.

    Build it with `fit` or `load`. Attributes (numpy float64): x_train (N, d) and y_train
    (N, k) as given; x_mean, x_scale (d,) and y_mean, y_scale (k,), the standardisation applied
    before the kernel (zeros and ones when off); eigenvalues (N,) and eigenvectors (N, N) of
    K(X, X) + ridge * I (K the NTK, or the NNGP kernel for kernel="nngp"), nngp_train (N, N).
    """

    def __init__(self, settings: ModelSettings, arrays: dict[str, np.ndarray], feature_names: Sequence[str],
                 target_names: Sequence[str]) -> None:
        self.settings = settings.check()
        for name in _ARRAY_NAMES:
            setattr(self, name, arrays[name])
        self.feature_names = tuple(feature_names)
        self.target_names = tuple(target_names)
        from .dynamics import GradientFlow

        self.flow = GradientFlow.from_eigh(self.eigenvalues, self.eigenvectors, self._scaled_y(),
                                           nngp_train=self.nngp_train, ridge=settings.ridge)

    # -- fitting and predicting ---------------------------------------------------------

    @classmethod
    def fit(cls, x: Any, y: Any, settings: ModelSettings, *, standardize_x: bool = False,
            standardize_y: bool = False, feature_names: Sequence[str] | None = None,
            target_names: Sequence[str] | None = None, kernels: KernelFn = direct_kernels) -> KernelModel:
        """Fit to inputs x (N, d) and targets y (N,) or (N, k).

        standardize_x / standardize_y centre each column and divide it by its standard
        deviation (constant columns by 1) before the kernel sees it; predictions are returned
        in the original units. ``kernels`` computes the kernel matrices (e.g. in blocks with a
        progress bar); by default one call of `Serial.kernels`.
        """
        settings = settings.check()
        x, y = _as_matrix(x, "x"), _as_matrix(y, "y", column=True)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; give one target row per input row.")
        x_mean, x_scale = _moments(x, standardize_x)
        y_mean, y_scale = _moments(y, standardize_y)
        xs = torch.from_numpy((x - x_mean) / x_scale)
        k = kernels(settings.spec(), xs, None, kinds=("nngp", "ntk") if settings.kernel == "ntk" else ("nngp",))
        nngp = k["nngp"]
        train = k["ntk"] if settings.kernel == "ntk" else nngp
        from .dynamics import GradientFlow

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
        return cls(settings, arrays, names_x, names_y)

    def predict(self, x: Any, *, time: float | None = None,
                kernels: KernelFn = direct_kernels) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), each of shape (M, k), at inputs x (M, d), in the targets' units.

        mean_t(x) = T_t(x) y and std_t(x) = sqrt(cov_t(x, x)) of `torchntk.GradientFlow` at the
        model's time (or ``time``); the std is that of the network's output over random
        initialisations, the same for each output up to the target's scale.
        """
        x = _as_matrix(x, "x")
        if x.shape[1] != self.x_train.shape[1]:
            raise ValueError(f"x has {x.shape[1]} feature(s) but the model was fitted on {self.x_train.shape[1]}.")
        t = self.settings.time if time is None else time
        spec = self.settings.spec()
        xs = torch.from_numpy((x - self.x_mean) / self.x_scale)
        xt = torch.from_numpy((self.x_train - self.x_mean) / self.x_scale)
        k = kernels(spec, xs, xt, kinds=("nngp", "ntk") if self.settings.kernel == "ntk" else ("nngp",))
        cross_nngp = k["nngp"]
        cross = k["ntk"] if self.settings.kernel == "ntk" else cross_nngp
        prior = spec.nngp(xs, diagonal=True)
        pred = self.flow.predict(t, ntk_test_train=cross, nngp_test_train=cross_nngp, nngp_test=prior, cov="diag",
                                 train_cov=False)
        mean = pred.mean[0].cpu().numpy() * self.y_scale + self.y_mean
        std = np.sqrt(pred.var[0].cpu().numpy())[:, None] * self.y_scale
        return mean, std

    def _scaled_y(self) -> np.ndarray:
        return (self.y_train - self.y_mean) / self.y_scale

    # -- plain-data storage -------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` and ``arrays.npz`` into ``directory`` (created if needed).

        Refuses a non-empty directory that is not already a torchntk model, so that saving
        never mixes into (or overwrites) someone else's files.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"{directory} is a file; a model is saved as a directory (give a new folder name).")
        if directory.is_dir() and any(directory.iterdir()) and not (directory / _JSON).is_file():
            raise ValueError(f"{directory} is a non-empty directory that is not a torchntk model; "
                             "choose a new or empty folder.")
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / _ARRAYS, **{name: np.asarray(getattr(self, name)) for name in _ARRAY_NAMES})
        from . import __version__

        meta = {"format": FORMAT, "version": VERSION, "written_by": f"torchntk {__version__}",
                "settings": self.settings.to_json(), "feature_names": list(self.feature_names),
                "target_names": list(self.target_names), "n_train": int(self.x_train.shape[0])}
        (directory / _JSON).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> KernelModel:
        """Read a model written by `save`, without pickle; a ValueError says why if it is not one."""
        directory = Path(directory)
        if directory.is_file() and directory.name == _JSON:
            directory = directory.parent
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a torchntk model directory (a folder written by "
                             "`torchntk fit -o DIR` or KernelModel.save).")
        meta = _read_meta(directory)
        settings = ModelSettings.from_json(meta.get("settings"))
        names = {key: meta.get(key) for key in ("feature_names", "target_names")}
        for key, value in names.items():
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{directory / _JSON}: {key} must be a list of strings.")
        arrays = _read_arrays(directory, len(names["feature_names"]), len(names["target_names"]))
        return cls(settings, arrays, names["feature_names"], names["target_names"])


def _read_meta(directory: Path) -> dict:
    path = directory / _JSON
    if not path.is_file():
        raise ValueError(f"{directory} is not a torchntk model: it has no {_JSON}.")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it is not a torchntk model.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a torchntk model file (format tag {FORMAT!r} missing).")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: invalid format version {version!r}.")
    if version > VERSION:
        raise ValueError(f"{path} has format version {version}, newer than this torchntk reads ({VERSION}); "
                         "upgrade torchntk.")
    return meta


def _read_arrays(directory: Path, d: int, k: int) -> dict[str, np.ndarray]:
    path = directory / _ARRAYS
    if not path.is_file():
        raise ValueError(f"{directory} is an incomplete torchntk model: {_ARRAYS} is missing.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in _ARRAY_NAMES if name not in archive.files]
            arrays = {name: archive[name] for name in _ARRAY_NAMES if name not in missing}
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({exc}).") from None
    except ValueError as exc:  # object arrays: numpy refuses them without pickle
        raise ValueError(f"{path} holds arrays that cannot be read without pickle ({exc}); "
                         "it was not written by torchntk.") from None
    if missing:
        raise ValueError(f"{path} lacks array(s) {missing}; it was not written by torchntk.")
    n = arrays["eigenvalues"].shape[0] if arrays["eigenvalues"].ndim == 1 else -1
    expected = {"x_train": (n, d), "y_train": (n, k), "x_mean": (d,), "x_scale": (d,), "y_mean": (k,),
                "y_scale": (k,), "eigenvalues": (n,), "eigenvectors": (n, n), "nngp_train": (n, n)}
    for name, shape in expected.items():
        a = arrays[name]
        if a.dtype != np.float64 or a.shape != shape:
            raise ValueError(f"{path}: array {name!r} has shape {a.shape} and dtype {a.dtype}; expected {shape} "
                             "float64. The model files are inconsistent.")
    return arrays


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


def _moments(a: np.ndarray, on: bool) -> tuple[np.ndarray, np.ndarray]:
    if not on:
        return np.zeros(a.shape[1]), np.ones(a.shape[1])
    scale = a.std(axis=0)
    return a.mean(axis=0), np.where(scale > 0, scale, 1.0)
