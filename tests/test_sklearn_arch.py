"""scikit-learn estimators and GP kernels with an architecture (spec=, input_shape=): they
predict what the architecture's kernels give, clone and cross-validate like any estimator, and
refuse bad settings clearly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.model_selection import StratifiedKFold, cross_val_score

import torchntk as tn
from torchntk.sklearn import NNGPKernel, NTKClassifier, NTKKernel, NTKRegressor

CNN = tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Flatten(), tn.Dense())


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 1, 3, 3))
    return x.reshape(9, 9), np.cos(x.sum(axis=(1, 2, 3))), rng.normal(size=(4, 9))


@pytest.mark.parametrize("spec", [CNN, CNN.to_dict()])
def test_regressor_is_kernel_regression_with_the_architectures_ntk(images, spec):
    X, y, X_test = images
    reg = NTKRegressor(spec=spec, input_shape=(1, 3, 3), ridge=1e-6).fit(X, y)
    k = CNN.ntk(X.reshape(-1, 1, 3, 3))
    k_test = CNN.ntk(X_test.reshape(-1, 1, 3, 3), X.reshape(-1, 1, 3, 3))
    # t = inf mean K* (K + r I)^-1 y by an independent solve; float64 at condition ~1e6: 1e-8.
    np.testing.assert_allclose(reg.predict(X_test), k_test @ np.linalg.solve(k + 1e-6 * np.eye(9), y), atol=1e-8)
    # The architecture replaces the dense settings: changing depth changes nothing.
    np.testing.assert_array_equal(reg.predict(X_test), clone(reg).set_params(depth=5).fit(X, y).predict(X_test))


def test_clone_and_get_params_keep_the_description():
    est = NTKClassifier(spec=CNN.to_dict(), input_shape=(1, 8, 8))
    copy = clone(est)
    assert copy.get_params()["spec"] == CNN.to_dict() and copy.get_params()["input_shape"] == (1, 8, 8)
    assert clone(NTKRegressor(spec=CNN)).get_params()["spec"].to_dict() == CNN.to_dict()


def test_cross_val_score_on_digits_with_a_small_cnn():
    X, y = load_digits(return_X_y=True)
    X, y = X[:150] / 16.0, y[:150]
    # Flatten readout: only each position's own covariance is carried (cheap); GlobalAvgPool
    # would need all pairs of positions (64x more work) and is covered by the model-file tests.
    clf = NTKClassifier(spec=CNN.to_dict(), input_shape=(1, 8, 8), ridge=1e-3)
    scores = cross_val_score(clf, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    # Chance is 0.1; this CNN kernel on 100 training digits scores 0.94-0.98 per fold (measured), so
    # 0.8 leaves room for round-off in ties while failing on any broken fit/predict/clone path. That
    # the kernel is the architecture's own is checked exactly in the regressor test above.
    assert scores.shape == (3,) and scores.min() > 0.8, scores
    proba = clf.fit(X[:100], y[:100]).predict_proba(X[100:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)  # rows of probabilities sum to 1 (round-off)


@pytest.mark.parametrize("kernel_cls", [NNGPKernel, NTKKernel])
def test_gp_kernels_with_an_architecture(images, kernel_cls):
    X, y, X_test = images
    kernel = kernel_cls(spec=CNN.to_dict(), input_shape=(1, 3, 3))
    method = CNN.ntk if kernel_cls is NTKKernel else CNN.nngp
    np.testing.assert_allclose(kernel(X, X_test), method(X.reshape(-1, 1, 3, 3), X_test.reshape(-1, 1, 3, 3)),
                               rtol=1e-14, atol=0)  # the same library call: equal to round-off
    np.testing.assert_allclose(kernel.diag(X), np.diag(kernel(X)), rtol=1e-12)
    k, grad = kernel(X, eval_gradient=True)
    assert grad.shape == (9, 9, 0) and kernel.n_dims == 0  # the description's scales are not fitted
    gpr = GaussianProcessRegressor(kernel, alpha=1e-6).fit(X, y)
    assert gpr.predict(X_test).shape == (4,)
    assert clone(kernel).get_params()["spec"] == CNN.to_dict()


def test_bad_architecture_settings(images):
    X, y, _ = images
    with pytest.raises(ValueError, match="set spec too"):
        NTKRegressor(input_shape=(1, 3, 3)).fit(X, y)
    with pytest.raises(TypeError, match="spec must be a network description"):
        NTKRegressor(spec="conv").fit(X, y)
    with pytest.raises(ValueError, match="input_shape must hold positive integers"):
        NTKRegressor(spec=CNN, input_shape=(1, 0, 3)).fit(X, y)
    with pytest.raises(ValueError, match="needs 16"):
        NTKRegressor(spec=CNN, input_shape=(1, 4, 4)).fit(X, y)
    with pytest.raises(ValueError, match="layer 0"):  # a Conv on plain rows names the layer
        NTKRegressor(spec=CNN).fit(X, y)
