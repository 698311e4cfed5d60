"""The scikit-learn faces: estimators that pass scikit-learn's own conformance checks and agree
with scikit-learn's kernel ridge and GP regression, and GP kernels whose gradients are exact."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import ndtr
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import torchntk as tn
from torchntk.sklearn import NNGPKernel, NTKClassifier, NTKKernel, NTKRegressor
from torchntk.sklearn.estimators import argmax_probabilities


@parametrize_with_checks([NTKRegressor(), NTKClassifier()])
def test_scikit_learn_conformance(estimator, check):
    check(estimator)


@pytest.fixture
def regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.1 * rng.normal(size=24)
    return x, y, rng.normal(size=(6, 3))


def test_ntk_at_infinity_is_kernel_ridge_with_the_ntk(regression):
    x, y, x_test = regression
    spec = tn.mlp(3, "relu", bias_std=0.2)
    ours = NTKRegressor(depth=3, bias_std=0.2, ridge=0.05).fit(x, y).predict(x_test)
    theirs = KernelRidge(alpha=0.05, kernel="precomputed").fit(spec.ntk(x), y).predict(spec.ntk(x_test, x))
    # Two float64 solves of the same well-conditioned system (ridge 0.05): agreement ~1e-13.
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def test_nngp_at_infinity_is_scikit_learns_gp_posterior(regression):
    x, y, x_test = regression
    ours_mean, ours_std = NTKRegressor(kernel="nngp", depth=2, activation="erf", bias_std=0.3, ridge=0.0).fit(
        x, y).predict(x_test, return_std=True)
    kernel = NNGPKernel(depth=2, activation="erf", bias_std=0.3, bias_std_bounds="fixed", weight_std_bounds="fixed")
    gpr = GaussianProcessRegressor(kernel, alpha=1e-12, optimizer=None).fit(x, y)
    their_mean, their_std = gpr.predict(x_test, return_std=True)
    # scikit-learn adds alpha = 1e-12 to the diagonal (Cholesky needs it); with the training
    # kernel's smallest eigenvalue ~1e-3 here that moves the posterior by ~1e-9 relative.
    np.testing.assert_allclose(ours_mean, their_mean, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours_std, their_std, rtol=1e-6, atol=1e-8)


def test_return_std_shapes_and_normalize_y(regression):
    x, y, x_test = regression
    targets = np.column_stack([y, 1000 + 50 * y])
    reg = NTKRegressor(time=5.0, normalize_y=True).fit(x, targets)
    mean, std = reg.predict(x_test, return_std=True)
    assert mean.shape == std.shape == (6, 2)
    # Normalising makes the second target an exact affine image of the first.
    np.testing.assert_allclose(mean[:, 1], 1000 + 50 * mean[:, 0], rtol=1e-10)
    np.testing.assert_allclose(std[:, 1], 50 * std[:, 0], rtol=1e-10)


def test_pipeline_and_grid_search(regression):
    x, y, x_test = regression
    x, x_test = 100 + 30 * x, 100 + 30 * x_test  # raw scales that only a scaler in the pipeline fixes
    pipe = make_pipeline(StandardScaler(), NTKRegressor(ridge=1e-3))
    grid = {"ntkregressor__depth": [2, 4], "ntkregressor__kernel": ["ntk", "nngp"]}
    search = GridSearchCV(pipe, grid, cv=KFold(3, shuffle=True, random_state=0)).fit(x, y)
    assert set(search.cv_results_["params"][0]) == set(grid)
    refit = make_pipeline(StandardScaler(), NTKRegressor(ridge=1e-3)).set_params(**search.best_params_).fit(x, y)
    # The search refits the best pipeline on all data: the very same computation.
    np.testing.assert_allclose(search.predict(x_test), refit.predict(x_test), rtol=1e-12)


def test_classifier_in_a_grid_search():
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(size=(15, 2)) + [2, 0], rng.normal(size=(15, 2)) - [2, 0], rng.normal(size=(15, 2))
                   + [0, 3]])
    labels = np.repeat(np.array(["left", "right", "up"]), 15)
    search = GridSearchCV(make_pipeline(StandardScaler(), NTKClassifier()), {"ntkclassifier__depth": [2, 3]},
                          cv=3).fit(x, labels)
    assert search.best_score_ > 0.9  # three well-separated blobs
    proba = search.predict_proba(x)
    assert proba.shape == (45, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_array_equal(search.classes_[proba.argmax(axis=1)], search.predict(x))


def test_classifier_regresses_centred_one_hot_targets(regression):
    x, _, x_test = regression
    labels = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)  # three classes
    clf = NTKClassifier(ridge=0.1).fit(x, labels)
    one_hot = np.eye(3)[labels] - 1 / 3
    spec = tn.mlp(3)
    want = KernelRidge(alpha=0.1, kernel="precomputed").fit(spec.ntk(x), one_hot).predict(spec.ntk(x_test, x))
    np.testing.assert_allclose(clf.predict_mean(x_test), want, rtol=1e-9, atol=1e-12)  # as in the regressor test
    np.testing.assert_array_equal(clf.predict(x_test), want.argmax(axis=1))


@pytest.fixture(scope="module")
def cancer():
    """A standardised 240-point subset of breast cancer (binary), split 160 / 80."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:240]
    x = StandardScaler().fit_transform(x[idx])
    return x[:160], y[idx][:160], x[160:], y[idx][160:]


def test_decision_function_binary_is_the_gap_of_the_two_outputs(cancer):
    x, y, x_test, y_test = cancer
    clf = NTKClassifier(ridge=1.0).fit(x, y)
    score = clf.decision_function(x_test)
    assert score.shape == (80,)
    mean = clf.predict_mean(x_test)
    np.testing.assert_array_equal(score, mean[:, 1] - mean[:, 0])
    np.testing.assert_array_equal(clf.classes_[(score > 0).astype(int)], clf.predict(x_test))


def test_decision_function_multiclass_is_the_mean_outputs():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 3))
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, size=30)]
    clf = NTKClassifier().fit(x, labels)
    score = clf.decision_function(x[:7])
    assert score.shape == (7, 3)
    np.testing.assert_array_equal(score, clf.predict_mean(x[:7]))
    np.testing.assert_array_equal(clf.classes_[score.argmax(axis=1)], clf.predict(x[:7]))


def test_roc_auc_and_roc_curve_from_the_decision_function(cancer):
    from sklearn.metrics import roc_auc_score, roc_curve

    x, y, x_test, y_test = cancer
    score = NTKClassifier(ridge=1.0).fit(x, y).decision_function(x_test)
    # Breast cancer is nearly separable after standardisation: any sensible kernel ranks the
    # held-out points with AUC > 0.95 (RBF SVC ~0.99); 0.5 would be chance.
    assert roc_auc_score(y_test, score) > 0.95
    fpr, tpr, _ = roc_curve(y_test, score)
    assert fpr[0] == 0 and tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)


def test_calibrated_classifier_cv_uses_the_decision_function(cancer):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.metrics import log_loss

    x, y, x_test, y_test = cancer
    calibrated = CalibratedClassifierCV(NTKClassifier(ridge=1.0), method="sigmoid", cv=3).fit(x, y)
    proba = calibrated.predict_proba(x_test)
    assert proba.shape == (80, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    # Platt scaling of a good score: far better log loss than a constant predictor of the base
    # rate (~0.66 here) and no 0/1 saturation, unlike predict_proba at t = inf.
    base_rate = np.full_like(proba, [1 - y.mean(), y.mean()])
    assert log_loss(y_test, proba) < 0.5 * log_loss(y_test, base_rate)
    assert 0 < proba.min() and proba.max() < 1


def test_one_vs_rest_wrapper():
    from sklearn.multiclass import OneVsRestClassifier

    rng = np.random.default_rng(5)
    x = np.vstack([rng.normal(size=(12, 2)) + c for c in ([3, 0], [-3, 0], [0, 3])])
    labels = np.repeat([0, 1, 2], 12)
    ovr = OneVsRestClassifier(NTKClassifier()).fit(x, labels)
    score = ovr.decision_function(x)
    assert score.shape == (36, 3)
    assert (ovr.predict(x) == labels).mean() > 0.9  # three well-separated blobs


def test_predict_proba_saturates_on_the_training_points_at_infinite_time(cancer):
    x, y, x_test, _ = cancer
    converged = NTKClassifier(time=math.inf).fit(x, y)
    # At t = inf the network interpolates the targets whatever its initialisation: std 0 on the
    # training points, so P is exactly 1 for the training label.
    np.testing.assert_array_equal(converged.predict_proba(x).max(axis=1), 1.0)
    # Early in training the initialisation still matters as much as the gap: no saturation.
    early = NTKClassifier(time=1.0).fit(x, y).predict_proba(x_test)
    assert early.max() < 0.99


def test_argmax_probability_two_classes_closed_form():
    rng = np.random.default_rng(2)
    mean, std = rng.normal(size=(50, 2)), rng.uniform(0.01, 3, size=50)
    got = argmax_probabilities(mean, std)
    # f1 - f0 ~ N(m1 - m0, 2 s^2): P(class 1) = Phi((m1 - m0) / (sqrt(2) s)). 64-node
    # Gauss-Hermite integrates this smooth integrand to ~1e-12.
    np.testing.assert_allclose(got[:, 1], ndtr((mean[:, 1] - mean[:, 0]) / (math.sqrt(2) * std)), atol=1e-10)


def test_argmax_probability_monte_carlo():
    rng = np.random.default_rng(3)
    mean, std = np.array([[0.0, 0.5, -0.3, 1.0], [2.0, 2.0, 0.0, -1.0]]), np.array([0.7, 1.5])
    got = argmax_probabilities(mean, std)
    draws = 200_000
    samples = mean[:, None, :] + std[:, None, None] * rng.normal(size=(2, draws, 4))
    freq = np.stack([np.bincount(s.argmax(axis=1), minlength=4) for s in samples]) / draws
    # Binomial standard error sqrt(p (1 - p) / draws) <= 1.2e-3; 5 standard errors.
    assert np.all(np.abs(got - freq) < 5 * np.sqrt(freq * (1 - freq) / draws) + 1e-4)


def test_argmax_probability_without_spread():
    got = argmax_probabilities(np.array([[0.0, 1.0, 1.0], [3.0, 1.0, 2.0]]), np.array([0.0, 0.0]))
    np.testing.assert_array_equal(got, [[0, 0.5, 0.5], [1, 0, 0]])


# -- GP kernels ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls,method", [(NTKKernel, "ntk"), (NNGPKernel, "nngp")])
def test_kernel_values_are_the_librarys(cls, method, regression):
    x, _, x_test = regression
    kernel = cls(depth=3, activation="tanh", bias_std=0.4, weight_std=1.3)
    spec = tn.mlp(3, "tanh", bias_std=0.4, weight_std=1.3)
    np.testing.assert_array_equal(kernel(x, x_test), getattr(spec, method)(x, x_test))
    np.testing.assert_allclose(kernel.diag(x), np.diag(getattr(spec, method)(x)), rtol=1e-13)
    assert not kernel.is_stationary()
    np.testing.assert_allclose(kernel.theta, np.log([0.4, 1.3]), rtol=1e-15)


def central_log_derivative(kernel, x, name, h=1e-4):
    """(K(theta e^h) - K(theta e^-h)) / 2h, 4th-order (five-point) stencil in log theta."""
    value = getattr(kernel, name)

    def at(step):
        return kernel.clone_with_theta(kernel.theta).set_params(**{name: value * math.exp(step)})(x)

    return (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)


@pytest.mark.parametrize("cls", [NTKKernel, NNGPKernel])
@pytest.mark.parametrize("activation", ["erf", "tanh"])
def test_gradient_against_finite_differences_smooth(cls, activation, regression):
    x = regression[0][:10]
    kernel = cls(depth=3, activation=activation, bias_std=0.3, weight_std=1.2)
    _, gradient = kernel(x, eval_gradient=True)
    assert gradient.shape == (10, 10, 2)
    for i, name in enumerate(("bias_std", "weight_std")):
        fd = central_log_derivative(kernel, x, name)
        # Smooth kernels: the stencil's truncation is ~h^4 = 1e-16 and rounding ~1e-16 / h =
        # 1e-12 relative; quadrature (tanh) is smooth in the parameters too. 1e-8 leaves room.
        np.testing.assert_allclose(gradient[..., i], fd, rtol=1e-8, atol=1e-10)


def relu_diagonal(x, depth, bias_std, weight_std, kind):
    """k(x, x) for ReLU by its scalar recursion: E[relu(u)^2] = q / 2 and E[relu'(u)^2] = 1 / 2."""
    q = weight_std ** 2 * (x ** 2).sum(1) / x.shape[1] + bias_std ** 2
    theta = q
    for _ in range(depth - 1):
        q = weight_std ** 2 * q / 2 + bias_std ** 2
        theta = theta * weight_std ** 2 / 2 + q
    return theta if kind == "ntk" else q


@pytest.mark.parametrize("cls,kind", [(NTKKernel, "ntk"), (NNGPKernel, "nngp")])
def test_relu_gradient(cls, kind, regression):
    x = regression[0][:10]
    b, w = 0.3, 1.2
    kernel = cls(depth=4, activation="relu", bias_std=b, weight_std=w)
    _, gradient = kernel(x, eval_gradient=True)
    off = ~np.eye(10, dtype=bool)
    h = 1e-4
    for i, name in enumerate(("bias_std", "weight_std")):
        # Off the diagonal the kernel is smooth in both parameters: tolerance as for erf.
        np.testing.assert_allclose(gradient[..., i][off], central_log_derivative(kernel, x, name)[off], rtol=1e-8,
                                   atol=1e-10)
        # On it the arc-cosine has a cusp at correlation 1, where finite differences of the
        # matrix are fragile; the diagonal's own scalar recursion is smooth, so differentiate
        # that instead (five-point stencil, error ~1e-12). The library snaps self-correlations
        # to exactly 1, so autograd there sees no rounding residual times the cusp's slope.
        def diag(step, name=name):
            params = {"bias_std": b, "weight_std": w}
            params[name] *= math.exp(step)
            return relu_diagonal(x, 4, params["bias_std"], params["weight_std"], kind)

        fd = (8 * (diag(h) - diag(-h)) - (diag(2 * h) - diag(-2 * h))) / (12 * h)
        np.testing.assert_allclose(np.diag(gradient[..., i]), fd, rtol=1e-9)


def test_fixed_hyperparameters_drop_out_of_the_gradient(regression):
    x = regression[0][:6]
    _, both = NTKKernel(bias_std=0.3)(x, eval_gradient=True)
    _, one = NTKKernel(bias_std=0.3, bias_std_bounds="fixed")(x, eval_gradient=True)
    assert one.shape == (6, 6, 1)
    np.testing.assert_array_equal(one[..., 0], both[..., 1])
    with pytest.raises(ValueError, match="log scale"):
        NTKKernel(bias_std=0.0)(x, eval_gradient=True)
    with pytest.raises(ValueError, match="Y is None"):
        NTKKernel()(x, x, eval_gradient=True)


def test_gp_regression_fits_the_hyperparameters():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 2))
    # Data drawn from a GP with this very kernel (bias_std 1, weight_std 2) plus noise.
    truth = NNGPKernel(depth=3, activation="erf", bias_std=1.0, weight_std=2.0)
    y = np.linalg.cholesky(truth(x) + 1e-8 * np.eye(40)) @ rng.normal(size=40) + 0.05 * rng.normal(size=40)
    start = NNGPKernel(depth=3, activation="erf", bias_std=0.1, weight_std=0.5) + WhiteKernel(0.01)
    gpr = GaussianProcessRegressor(start, random_state=0).fit(x, y)
    initial = gpr.log_marginal_likelihood(gpr.kernel.theta)
    assert gpr.log_marginal_likelihood_value_ > initial + 10  # a real improvement, not rounding
    # The maximum found is at least as likely as the hyperparameters that generated the data.
    assert gpr.log_marginal_likelihood_value_ >= gpr.log_marginal_likelihood(np.log([1.0, 2.0, 0.05 ** 2]))
    theta, bounds = gpr.kernel_.theta, gpr.kernel_.bounds
    assert np.all((theta > bounds[:, 0] + 0.1) & (theta < bounds[:, 1] - 0.1))  # an interior optimum
    _, gradient = gpr.log_marginal_likelihood(theta, eval_gradient=True)
    # There the exact gradient vanishes; L-BFGS-B stops at a projected gradient of 1e-5 or a
    # relative change of ~2e-9 in the objective (|LML| ~ 10 here), far below 1e-3.
    assert np.abs(gradient).max() < 1e-3


def test_lml_gradient_end_to_end(regression):
    x, y, _ = regression
    gpr = GaussianProcessRegressor(NTKKernel(depth=3, activation="erf", bias_std=0.5) + WhiteKernel(0.1),
                                   optimizer=None).fit(x, y)
    theta = gpr.kernel_.theta
    _, gradient = gpr.log_marginal_likelihood(theta, eval_gradient=True)
    h = 1e-5
    for i in range(len(theta)):
        step = np.zeros_like(theta)
        step[i] = h
        fd = (gpr.log_marginal_likelihood(theta + step) - gpr.log_marginal_likelihood(theta - step)) / (2 * h)
        # Central difference of a smooth scalar: truncation ~h^2 = 1e-10, rounding ~1e-16 / h.
        assert abs(gradient[i] - fd) < 1e-6 * max(1.0, abs(fd))


def test_import_torchntk_does_not_import_scikit_learn():
    code = "import sys, torchntk, torchntk.cli, torchntk.model_io; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
