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
column names, the number of training rows and a sha256 content fingerprint of all of it and of
the arrays) and ``arrays.npz`` (training inputs and targets, the standardisation, the training
kernel's eigendecomposition and its NNGP matrix); `load` reads it without pickle, validates every
field and verifies the fingerprint, and refuses anything that is not such a directory. Sizes:
two (N, N) float64 matrices, 16 N^2 bytes.

Any architecture (torchntk.arch) is described by ``ModelSettings.with_spec(spec, input_shape)``:
model.json then holds the description's ``spec.to_dict()`` data and the per-example shape that
each stored (flattened) input row is reshaped to; both are covered by the fingerprint and the
description is rebuilt by `torchntk.from_dict`, which refuses unknown layers and deep nesting.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._finite import check_depth, check_scale
from ._json import read_json
from ._npyfile import NpzArchive
from .activations import CLOSED_FORM, QUADRATURE
from .spec import Serial, mlp

FORMAT = "torchntk.kernel-model"
VERSION = 2
"""2: model.json records a sha256 content fingerprint of itself and the arrays (verified at load)."""
_JSON, _ARRAYS = "model.json", "arrays.npz"
_ARRAY_NAMES = ("x_train", "y_train", "x_mean", "x_scale", "y_mean", "y_scale", "eigenvalues", "eigenvectors",
                "nngp_train")

_OPTIONAL_SETTINGS = ("architecture", "input_shape")

KernelFn = Callable[..., dict]
"""``fn(spec, x1, x2, kinds=("nngp", "ntk")) -> {kind: (N1, N2) tensor}``; x2 None for x1 against itself."""


@dataclass(frozen=True)
class ModelSettings:
    """What describes a fitted model besides its data.

    Attributes:
        depth: the number of dense layers, as in `torchntk.mlp`.
        activation: the nonlinearity by name (so that it can be saved), as in `torchntk.mlp`.
        bias_std: the scale beta of the biases.
        weight_std: the scale sigma_w of the weights.
        kernel: "ntk" (all layers trained) or "nngp" (only the readout trained).
        time: training time t in the paper's units (t = lr * steps; float("inf") = converged).
        ridge: added to the diagonal of the training kernel (see `torchntk.GradientFlow`); a
            tiny default, as scikit-learn's GaussianProcessRegressor alpha, so that duplicate
            training points leave t = inf defined. 0 gives the exact interpolant.
        architecture: None for the fully-connected `torchntk.mlp` above; otherwise the plain-data
            form ``spec.to_dict()`` of any network description (convolutions, pooling, branches,
            LayerNorm: torchntk.arch), which then replaces depth, activation, bias_std and
            weight_std. It is read back with `torchntk.from_dict`, which refuses unknown layers,
            unknown arguments and deep nesting.
        input_shape: with an architecture, the per-example shape (C, *positions) that each row of
            the (N, d) inputs is reshaped to before the kernel (d = prod(input_shape)), e.g.
            (1, 8, 8) for 64-pixel images; None uses the rows as given.
    """

    depth: int = 3
    activation: str = "relu"
    bias_std: float = 0.1
    weight_std: float = 1.0
    kernel: str = "ntk"
    time: float = math.inf
    ridge: float = 1e-10
    architecture: dict | None = field(default=None, hash=False)
    input_shape: tuple[int, ...] | None = None

    def check(self) -> ModelSettings:
        """Raise a ValueError / TypeError naming the bad setting; return self."""
        self._check_architecture()
        try:
            check_depth(self.depth)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
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
            if name in ("bias_std", "weight_std"):
                check_scale(name, float(value))
        return self

    def _check_architecture(self) -> None:
        if self.architecture is None:
            if self.input_shape is not None:
                raise ValueError("input_shape reshapes inputs for an architecture; give architecture= (a network "
                                 "description's to_dict()) with it, or leave input_shape None.")
            return
        if not isinstance(self.architecture, dict):
            raise TypeError(f"architecture must be a network description's to_dict() data (a dict), got "
                            f"{type(self.architecture).__name__}.")
        spec = self.spec()  # from_dict: a ValueError naming the bad layer
        if self.input_shape is not None:
            shape = self.input_shape
            if not isinstance(shape, tuple) or not shape or not all(
                    isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in shape):
                raise ValueError(f"input_shape must be a tuple of positive integers (C, *positions), got {shape!r}.")
            spec.analyse(tuple(int(n) for n in shape))  # ArchitectureError (a ValueError) naming the layer

    def spec(self) -> Serial:
        """The network description: the architecture's, or `torchntk.mlp` of the dense settings."""
        if self.architecture is not None:
            from .arch.serialize import from_dict
            try:
                return from_dict(self.architecture)
            except ValueError as exc:
                raise ValueError(f"architecture: {exc}") from None
        return mlp(int(self.depth), self.activation.lower(), bias_std=float(self.bias_std),
                   weight_std=float(self.weight_std))

    @classmethod
    def with_spec(cls, spec: Any, input_shape: Sequence[int] | None = None, **settings: Any) -> ModelSettings:
        """Settings for a network description: a `Serial`, or its ``to_dict()`` data."""
        data = spec.to_dict() if isinstance(spec, Serial) else spec
        shape = None if input_shape is None else tuple(int(n) for n in input_shape)
        return cls(architecture=data, input_shape=shape, **settings).check()

    def kernel_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, d) as the kernels take it: (N, *input_shape) when an input shape is set."""
        if self.input_shape is None:
            return x
        size = math.prod(self.input_shape)
        if x.shape[1] != size:
            raise ValueError(f"the inputs have {x.shape[1]} features but input_shape {self.input_shape} needs "
                             f"{size} (= the product of its entries).")
        return x.reshape(x.shape[0], *self.input_shape)

    def to_json(self) -> dict:
        """The settings as a strict-JSON object: time inf as "inf", input_shape as a list, and the
        architecture keys only when set (so fully-connected files are unchanged)."""
        out = asdict(self)
        out["time"] = "inf" if math.isinf(self.time) else float(self.time)  # strict JSON has no Infinity
        # The architecture keys are written only when set, so that a fully-connected model's file
        # (and its fingerprint) are what they were before architectures existed.
        for name in _OPTIONAL_SETTINGS:
            if out[name] is None:
                del out[name]
        if "input_shape" in out:
            out["input_shape"] = list(out["input_shape"])
        return out

    @classmethod
    def from_json(cls, data: Any) -> ModelSettings:
        """The settings from `to_json`'s object, checked.

        Raises:
            ValueError: not an object, missing or unknown keys, a malformed input_shape or time,
                or values that `check` refuses.
        """
        if not isinstance(data, dict):
            raise ValueError("the model's settings are not a JSON object.")
        names = {f.name for f in fields(cls)}
        required = names - set(_OPTIONAL_SETTINGS)
        if not required <= set(data) <= names:
            raise ValueError(f"the model's settings have keys {sorted(data)}; expected {sorted(required)} and "
                             f"optionally {list(_OPTIONAL_SETTINGS)}.")
        values = dict(data)
        if "input_shape" in values:
            shape = values["input_shape"]
            if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
                raise ValueError(f"the model's input_shape must be a list of integers, got {shape!r}.")
            values["input_shape"] = tuple(shape)
        if values["time"] == "inf":
            values["time"] = math.inf
        elif isinstance(values["time"], str):
            raise ValueError(f"the model's time must be a number or \"inf\", got {values['time']!r}.")
        for name in ("bias_std", "weight_std", "ridge", "time"):
            if isinstance(values[name], int) and not isinstance(values[name], bool):
                values[name] = float(values[name])
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
        progress bar); by default one call of `Serial.kernels`. With an architecture, x may also
        be (N, C, *positions): it is stored flattened and its per-example shape becomes the
        settings' input_shape (which it must match if one is set).
        """
        settings = settings.check()
        x, settings = _flatten_batch(x, settings)
        x, y = _as_matrix(x, "x"), _as_matrix(y, "y", column=True)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; give one target row per input row.")
        x_mean, x_scale = column_moments(x, standardize_x, feature_names)
        y_mean, y_scale = column_moments(y, standardize_y, target_names)
        xs = settings.kernel_inputs(torch.from_numpy((x - x_mean) / x_scale))
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
        initialisations, the same for each output up to the target's scale. With an input shape,
        x may also be (M, *input_shape).
        """
        x, _ = _flatten_batch(x, self.settings)
        x = _as_matrix(x, "x")
        if x.shape[1] != self.x_train.shape[1]:
            raise ValueError(f"x has {x.shape[1]} feature(s) but the model was fitted on {self.x_train.shape[1]}.")
        t = self.settings.time if time is None else time
        spec = self.settings.spec()
        xs = self.settings.kernel_inputs(torch.from_numpy((x - self.x_mean) / self.x_scale))
        xt = self.settings.kernel_inputs(torch.from_numpy((self.x_train - self.x_mean) / self.x_scale))
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
        directory = check_save_target(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from . import __version__

        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAY_NAMES}
        meta = {"format": FORMAT, "version": VERSION, "written_by": f"torchntk {__version__}",
                "settings": self.settings.to_json(), "feature_names": list(self.feature_names),
                "target_names": list(self.target_names), "n_train": int(self.x_train.shape[0])}
        meta["sha256"] = content_fingerprint(meta, arrays)
        # Each file is written whole to a temporary name and renamed: a failed save never leaves
        # half a file, and the fingerprint ties the two together.
        _replace(directory / _ARRAYS, lambda handle: np.savez(handle, **arrays))
        text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
        _replace(directory / _JSON, lambda handle: handle.write(text.encode("utf-8")))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> KernelModel:
        """Read a model written by `save`, without pickle; a ValueError says why if it is not one.

        Every field of model.json is checked for type and range, the arrays for shape, dtype and
        finiteness, and the sha256 content fingerprint recorded at save time over both is
        verified, so a hand-edited setting, permuted names or arrays from another model are
        refused. (The fingerprint detects changes; it does not authenticate the writer.)
        """
        directory = Path(directory)
        if directory.is_file() and directory.name == _JSON:
            directory = directory.parent
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a torchntk model directory (a folder written by "
                             "`torchntk fit -o DIR` or KernelModel.save).")
        meta = _read_meta(directory)
        where = directory / _JSON
        if set(meta) != _META_KEYS:
            raise ValueError(f"{where} has keys {sorted(meta)}; a torchntk model has {sorted(_META_KEYS)}. "
                             "The file was edited or not written by torchntk.")
        try:
            settings = ModelSettings.from_json(meta["settings"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        names = {key: meta[key] for key in ("feature_names", "target_names")}
        for key, value in names.items():
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}: {key} must be a non-empty list of strings.")
            if len(set(value)) != len(value):
                raise ValueError(f"{where}: {key} holds a name twice.")
        if not isinstance(meta["written_by"], str) or not isinstance(meta["sha256"], str):
            raise ValueError(f"{where}: written_by and sha256 must be strings.")
        n_train = meta["n_train"]
        if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
            raise ValueError(f"{where}: n_train must be a positive integer, got {n_train!r}.")
        arrays = _read_arrays(directory, len(names["feature_names"]), len(names["target_names"]))
        if arrays["x_train"].shape[0] != n_train:
            raise ValueError(f"{where} says n_train = {n_train} but {_ARRAYS} holds {arrays['x_train'].shape[0]} "
                             "training rows; the model's files are inconsistent (refit it).")
        expected = content_fingerprint(meta, arrays)
        if meta["sha256"] != expected:
            raise ValueError(f"{directory}: the model's content fingerprint does not match its files (model.json "
                             "or arrays.npz was changed after saving, or they come from two different models); "
                             "refit the model with `torchntk fit` or KernelModel.fit.")
        return cls(settings, arrays, names["feature_names"], names["target_names"])


_META_KEYS = frozenset({"format", "version", "written_by", "settings", "feature_names", "target_names", "n_train",
                        "sha256"})


def content_fingerprint(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """sha256 over model.json's content without its "sha256" field (canonical JSON: sorted keys,
    no spaces) and over each array's name, dtype, shape and bytes, in a fixed order."""
    digest = hashlib.sha256()
    canonical = {k: v for k, v in meta.items() if k != "sha256"}
    digest.update(json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())
    for name in _ARRAY_NAMES:
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def check_save_target(directory: str | Path) -> Path:
    """``directory`` as a Path if a model may be saved there: absent, empty, or holding a torchntk
    model (replaced). Anything else is refused with a ValueError, so that saving never mixes
    into or overwrites another program's files (a foreign model.json included)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file; a model is saved as a directory (give a new folder name).")
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / _JSON).is_file():
            raise ValueError(f"{directory} is a non-empty directory that is not a torchntk model; "
                             "choose a new or empty folder.")
        try:
            meta = read_json(directory / _JSON)
        except (ValueError, OSError):
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{directory} holds a {_JSON} that is not a torchntk model (another program's file?); "
                             "it is never overwritten: choose a new or empty folder.")
    return directory


def _read_meta(directory: Path) -> dict:
    path = directory / _JSON
    if not path.is_file():
        raise ValueError(f"{directory} is not a torchntk model: it has no {_JSON}.")
    try:
        meta = read_json(path)
    except ValueError as exc:
        raise ValueError(f"{exc} It is not a torchntk model file.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a torchntk model file (format tag {FORMAT!r} missing).")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: invalid format version {version!r}.")
    if version > VERSION:
        raise ValueError(f"{path} has format version {version}, newer than this torchntk reads ({VERSION}); "
                         "upgrade torchntk.")
    if version < VERSION:
        raise ValueError(f"{path} has format version {version}, written by an older torchntk without a content "
                         "fingerprint; refit the model with this version (`torchntk fit`).")
    return meta


def _read_arrays(directory: Path, d: int, k: int) -> dict[str, np.ndarray]:
    path = directory / _ARRAYS
    if not path.is_file():
        raise ValueError(f"{directory} is an incomplete torchntk model: {_ARRAYS} is missing.")
    try:
        with NpzArchive(path) as archive:
            unknown = sorted(set(archive.files) - set(_ARRAY_NAMES))
            missing = [name for name in _ARRAY_NAMES if name not in archive.files]
            if missing or unknown:
                what = f"lacks array(s) {missing}" if missing else f"holds unknown array(s) {unknown}"
                raise ValueError(f"{what}; it was not written by torchntk")
            arrays = {name: archive[name] for name in _ARRAY_NAMES}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ValueError(f"{path}: {exc} (arrays that cannot be read without pickle: it was not written by "
                             "torchntk).") from None
        raise ValueError(f"{path}: {exc}.") from None
    n = arrays["eigenvalues"].shape[0] if arrays["eigenvalues"].ndim == 1 else -1
    expected = {"x_train": (n, d), "y_train": (n, k), "x_mean": (d,), "x_scale": (d,), "y_mean": (k,),
                "y_scale": (k,), "eigenvalues": (n,), "eigenvectors": (n, n), "nngp_train": (n, n)}
    for name, shape in expected.items():
        a = arrays[name]
        if a.dtype != np.float64 or a.shape != shape:
            raise ValueError(f"{path}: array {name!r} has shape {a.shape} and dtype {a.dtype}; expected {shape} "
                             "float64. The model files are inconsistent.")
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: array {name!r} holds NaN or infinite values; the model is damaged (refit it).")
    for name in ("x_scale", "y_scale"):
        if not (arrays[name] > 0).all():
            raise ValueError(f"{path}: array {name!r} holds a scale <= 0; scales are standard deviations (> 0). "
                             "The model is damaged (refit it).")
    return arrays


def _flatten_batch(x: Any, settings: ModelSettings) -> tuple[Any, ModelSettings]:
    """(N, C, *positions) inputs of an architecture as (N, d) rows, and the settings with that
    per-example shape as input_shape; anything else unchanged (checked later)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if settings.architecture is None or np.ndim(x) <= 2:
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


def _replace(path: Path, write: Callable[[Any], Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
