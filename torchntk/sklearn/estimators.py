"""scikit-learn estimators for infinitely wide networks trained by gradient flow.

    from torchntk.sklearn import NTKRegressor, NTKClassifier
    reg = NTKRegressor(depth=3, kernel="ntk").fit(X, y)
    mean, std = reg.predict(X_test, return_std=True)

Both estimators predict with `torchntk.GradientFlow` (the paper's Section A.2; docs/conventions.md): the
output of a fully-connected network of infinite width, ``depth`` dense layers in the NTK
parameterisation, trained by gradient flow on C = (1/2N) sum_i |f(x_i) - y_i|^2 for time ``time``
(t = lr * steps; inf = to convergence), averaged over random initialisations. ``kernel="ntk"``
trains all layers; ``kernel="nngp"`` trains only the readout, and at time = inf is then the exact
Gaussian-process posterior with covariance Sigma(L) (no observation noise unless ``ridge``).

Features are used as given: standardise them in a Pipeline (StandardScaler) as for any kernel
method, since the kernels see x.x' / n0.

Any architecture (convolutions, pooling, branches, LayerNorm) is given as ``spec``,
a network description or its ``spec.to_dict()`` data (a dict keeps ``get_params`` / ``clone``
plain), which replaces depth, activation, bias_std and weight_std. X stays 2-D, as scikit-learn
wants; ``input_shape`` (C, *positions) reshapes each row into an image before the kernel:

    cnn = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    NTKClassifier(spec=cnn.to_dict(), input_shape=(1, 8, 8)).fit(digits.data / 16, digits.target)

Side inputs (a graph network's adjacency, a mask of padded positions) travel in the rows of X,
packed by `torchntk.sklearn.pack_rows` and unpacked by the description and input_shape, so that
cross-validation and searches keep each example's with it:

    X = pack_rows(graphs, adjacency=A)          # graphs (N, C, V), A (N, V, V)
    NTKRegressor(spec=gnn.to_dict(), input_shape=graphs.shape[1:]).fit(X, y)
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ..model_io import KernelModel, ModelSettings
from .packing import unpack_rows

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6
    def validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

QUADRATURE_NODES = 64
"""Gauss-Hermite nodes of `argmax_probabilities`; the integrand is a product of normal CDFs of
z (width 1 in z whatever the means), so 64 nodes reach ~1e-10 (tests/test_sklearn.py)."""


class _InfiniteNetworkEstimator(BaseEstimator):
    """Parameters shared by `NTKRegressor` and `NTKClassifier`; see their docstrings."""

    def __init__(self, kernel: str = "ntk", depth: int = 3, activation: str = "relu", bias_std: float = 0.1,
                 weight_std: float = 1.0, time: float = math.inf, ridge: float = 1e-10, spec=None,
                 input_shape=None) -> None:
        self.kernel = kernel
        self.depth = depth
        self.activation = activation
        self.bias_std = bias_std
        self.weight_std = weight_std
        self.time = time
        self.ridge = ridge
        self.spec = spec
        self.input_shape = input_shape

    def _settings(self) -> ModelSettings:
        if self.spec is None:
            if self.input_shape is not None:
                raise ValueError("input_shape reshapes X for an architecture given as spec=; set spec too, or leave "
                                 "input_shape None.")
            return ModelSettings.mlp(self.depth, self.activation, bias_std=self.bias_std, weight_std=self.weight_std,
                                     kernel=self.kernel, time=self.time, ridge=self.ridge)
        return spec_settings(self.spec, self.input_shape, kernel=self.kernel, time=self.time, ridge=self.ridge)

    def _unpack(self, X: np.ndarray, settings: ModelSettings) -> tuple[np.ndarray, dict]:
        """X's inputs and side inputs (rows of `torchntk.sklearn.pack_rows`) for an architecture."""
        if self.spec is None:
            return X, {}
        return unpack_rows(X, settings.spec(), settings.input_shape)

    def _fit_model(self, X: np.ndarray, y: np.ndarray, settings: ModelSettings, **options) -> KernelModel:
        x, side = self._unpack(X, settings)
        return KernelModel.fit(x, y, settings, side_inputs=side, **options)

    def _mean_std(self, X) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        x, side = self._unpack(X, self.model_.settings)
        return self.model_.predict(x, side_inputs=side)


class NTKRegressor(RegressorMixin, _InfiniteNetworkEstimator):
    r"""Regression with an infinitely wide network trained by gradient flow (mean over initialisations).

    Args:
        kernel: "ntk" (all layers trained) or "nngp" (only the readout trained).
        depth: number of dense layers (1 = a random affine map).
        activation: the nonlinearity's name ("relu", "erf", "tanh", ...).
        bias_std: :math:`\beta`, the scale of the biases in the NTK parameterisation.
        weight_std: :math:`\sigma_w`, the scale of the weights in the NTK parameterisation.
        time: training time in the paper's units (t = lr * steps); float("inf") = converged.
        ridge: added to the training kernel's diagonal; the tiny default (like
            GaussianProcessRegressor's alpha) keeps t = inf defined with duplicate inputs.
        spec: None (the fully-connected network above), or any network description (a
            `torchntk.serial(...)`, or its ``to_dict()`` data), which replaces depth,
            activation, bias_std and weight_std.
        input_shape: with ``spec``, the per-example shape (C, *positions) each row of X is
            reshaped to (n_features = prod(input_shape)), e.g. (1, 8, 8); None: rows as given.
            Rows of `pack_rows` carry the side inputs after these columns (adjacency, mask).
        normalize_y: centre and scale the targets before fitting (predictions are returned in
            the original units), as GaussianProcessRegressor does.

    Attributes:
        model_: the fitted `torchntk.model_io.KernelModel` (``model_.save(dir)`` writes it as
            plain data that ``torchntk predict`` reads).
        n_features_in_: number of features seen in fit.

    Example:
        >>> import numpy as np
        >>> from torchntk.sklearn import NTKRegressor
        >>> X = np.linspace(-1, 1, 8)[:, None]
        >>> reg = NTKRegressor(depth=2).fit(X, np.sin(3 * X[:, 0]))
        >>> mean, std = reg.predict([[0.1]], return_std=True)
        >>> mean.shape, std.shape
        ((1,), (1,))
    """

    def __init__(self, kernel: str = "ntk", depth: int = 3, activation: str = "relu", bias_std: float = 0.1,
                 weight_std: float = 1.0, time: float = math.inf, ridge: float = 1e-10, spec=None,
                 input_shape=None, normalize_y: bool = False) -> None:
        super().__init__(kernel=kernel, depth=depth, activation=activation, bias_std=bias_std,
                         weight_std=weight_std, time=time, ridge=ridge, spec=spec, input_shape=input_shape)
        self.normalize_y = normalize_y

    def fit(self, X, y) -> NTKRegressor:
        """Fit to X of shape (n_samples, n_features) and y of shape (n_samples,) or (n_samples, n_targets)."""
        settings = self._settings()
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        self._single_output = y.ndim == 1
        self.model_ = self._fit_model(X, y, settings, standardize_y=bool(self.normalize_y))
        return self

    def predict(self, X, return_std: bool = False):
        """Mean over initialisations, shape (n_samples,) or (n_samples, n_targets); with
        ``return_std`` also the standard deviation over initialisations (same shape), which
        does not include observation noise."""
        mean, std = self._mean_std(X)
        if self._single_output:
            mean, std = mean[:, 0], std[:, 0]
        return (mean, std) if return_std else mean

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"multioutput": True}


class NTKClassifier(ClassifierMixin, _InfiniteNetworkEstimator):
    r"""Classification by regressing centred one-hot targets with an infinitely wide network.

    Each class c gets an output trained toward 1 - 1/K on its own points and -1/K elsewhere
    (K classes; centred because the network's outputs have mean 0 at initialisation), by
    gradient flow for time ``time`` (see `NTKRegressor` for the parameters). `predict` returns
    the class with the largest mean output.

    `decision_function` returns the mean outputs in scikit-learn's shapes: for two classes the
    difference m_1 - m_0, shape (n_samples,), positive for ``classes_[1]``; for K > 2 classes
    the K mean outputs, shape (n_samples, K). It is the score for ROC curves, `roc_auc_score`,
    `CalibratedClassifierCV` and one-vs-rest wrappers.

    `predict_proba` is not a calibrated probability of the label. It is the probability, over
    random initialisations of the infinitely wide network, that the trained network's output
    for class c is the largest, i.e. the fraction of trained networks that would predict c: the
    :math:`K` outputs are independent Gaussians with the predicted means :math:`m_c` and a common
    standard deviation :math:`s` (the limit kernel is one scalar kernel
    times :math:`\mathrm{Id}_K`, Theorem 1), so

    .. math::

        P(c) = \mathbb E_z \Big[ \prod_{j \ne c} \Phi\big((m_c - m_j) / s + z\big) \Big],
        \qquad z \sim \mathcal N(0, 1),

    computed by Gauss-Hermite quadrature. It orders classes as `predict` does. It saturates (is
    0 or 1 to rounding) wherever the gaps between mean outputs are large against s: on the
    training points at time = inf (the trained network interpolates its targets whatever its
    initialisation, so s = 0 up to the ridge and P is 1 for the top class), close to them (s is
    small), and on well-separated data generally. It is graded only where the initialisation
    still moves the outputs by as much as the gap between the top classes, e.g. early in
    training (small ``time``) or far from the training data.

    It measures how much the prediction depends on the random initialisation, not how likely the
    label is. For label probabilities calibrate the scores, e.g.
    ``CalibratedClassifierCV(NTKClassifier(), method="sigmoid")``, which uses `decision_function`.

    Attributes:
        classes_: the class labels (sorted).
        model_: the fitted `torchntk.model_io.KernelModel` on the one-hot targets.
    """

    def fit(self, X, y) -> NTKClassifier:
        """Fit to X of shape (n_samples, n_features) and class labels y of shape (n_samples,)."""
        settings = self._settings()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        targets = np.eye(k)[codes] - 1.0 / k
        self.model_ = self._fit_model(X, targets, settings)
        return self

    def predict_mean(self, X, return_std: bool = False):
        """The mean output per class, shape (n_samples, n_classes); with ``return_std`` also the
        standard deviation over initialisations, shape (n_samples,) (the same for every class)."""
        mean, std = self._mean_std(X)
        return (mean, std[:, 0]) if return_std else mean

    def decision_function(self, X) -> np.ndarray:
        """Scores in scikit-learn's shapes: (n_samples,) for two classes, the mean output of
        ``classes_[1]`` minus that of ``classes_[0]`` (> 0 predicts ``classes_[1]``); otherwise
        the mean output per class, (n_samples, n_classes), whose argmax is `predict`."""
        mean = self.predict_mean(X)
        return mean[:, 1] - mean[:, 0] if mean.shape[1] == 2 else mean

    def predict(self, X) -> np.ndarray:
        """The class with the largest mean output, shape (n_samples,)."""
        mean = self.predict_mean(X)
        return self.classes_[np.argmax(mean, axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """P(class c has the largest output) over initialisations, shape (n_samples, n_classes);
        see the class docstring for what it is and is not."""
        mean, std = self.predict_mean(X, return_std=True)
        return argmax_probabilities(mean, std)


def spec_settings(spec, input_shape, **settings) -> ModelSettings:
    """ModelSettings for a ``spec`` parameter: a network description or its to_dict() data."""
    from ..engine.serial import Serial

    if not isinstance(spec, (Serial, dict)):
        raise TypeError(f"spec must be a network description (torchntk.serial(...)) or its to_dict() data, got "
                        f"{type(spec).__name__}.")
    if input_shape is not None:
        if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
            raise TypeError(f"input_shape must be a sequence of positive integers such as (1, 8, 8), got "
                            f"{input_shape!r}.")
        shape = tuple(input_shape)
        if not shape or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                                for n in shape):
            raise ValueError(f"input_shape must hold positive integers such as (1, 8, 8), got {input_shape!r}.")
        input_shape = shape
    return ModelSettings.with_spec(spec, input_shape, **settings)


def argmax_probabilities(mean: np.ndarray, std: np.ndarray, nodes: int = QUADRATURE_NODES) -> np.ndarray:
    """P(argmax_j f_j = c) for independent f_j ~ N(mean[:, j], std^2), shape (M, K).

    mean (M, K), std (M,) >= 0. P(c) = E_z prod_{j != c} Phi((m_c - m_j) / s + z) with
    z ~ N(0, 1), by ``nodes``-point Gauss-Hermite quadrature in log space; rows with s = 0 put
    all mass on the largest mean (shared equally by ties). Rows sum to 1.
    """
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / math.sqrt(2 * math.pi)
    spread = std > 0
    s = np.where(spread, std, 1.0)[:, None]
    probs = np.empty_like(mean)
    for c in range(mean.shape[1]):  # classes, not data points: memory (M, K, nodes) per class
        a = (mean[:, c:c + 1] - mean) / s  # (M, K), zero at j = c
        log_terms = log_ndtr(a[:, :, None] + z).sum(axis=1) - log_ndtr(z)  # drop the j = c factor
        probs[:, c] = np.exp(log_terms) @ w
    top = mean == mean.max(axis=1, keepdims=True)
    probs = np.where(spread[:, None], probs, top / top.sum(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)
