"""Side inputs through scikit-learn: `pack_rows` carries each example's adjacency and mask in its
row of X, the estimators and kernels unpack them by their description, and cross-validation and
grid searches subset them with the rows; values checked against spec.kernels directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

pytest.importorskip("sklearn")

from side_specs import graph_spec, sequence_spec  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score  # noqa: E402

from torchntk.sklearn import NNGPKernel, NTKClassifier, NTKKernel, NTKRegressor, pack_rows  # noqa: E402
from torchntk.sklearn.packing import unpack_rows  # noqa: E402

RIDGE = 1e-8




@pytest.fixture
def graphs():
    rng = np.random.default_rng(0)
    x, a = rng.normal(size=(15, 2, 5)), (rng.random((15, 5, 5)) < 0.4).astype(float)
    return x, a, x[:, 0].sum(1) + 0.1 * rng.normal(size=15)


@pytest.fixture
def sequences():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 2, 6))
    m = np.arange(6) < rng.integers(2, 7, size=12)[:, None]
    return x, m


def _flow_mean(spec_kernel, train, test, y, time):
    """The gradient-flow mean from spec.kernels by the formula (docs/conventions.md), no eigh."""
    k = spec_kernel(train, train) + RIDGE * np.eye(len(y))
    decay = np.eye(len(y)) if math.isinf(time) else np.eye(len(y)) - scipy.linalg.expm(-time * k / len(y))
    return spec_kernel(test, train) @ np.linalg.solve(k, decay @ y)


def test_pack_rows_lays_out_inputs_then_each_side_input(graphs, sequences):
    x, a, _ = graphs
    X = pack_rows(x, adjacency=a)
    np.testing.assert_array_equal(X, np.concatenate([x.reshape(15, -1), a.reshape(15, -1)], axis=1))
    s, m = sequences
    X = pack_rows(s, mask=m)
    np.testing.assert_array_equal(X, np.concatenate([s.reshape(12, -1), m.astype(float)], axis=1))
    flat, side = unpack_rows(X, sequence_spec(), (2, 6))
    np.testing.assert_array_equal(flat, s.reshape(12, -1))
    np.testing.assert_array_equal(side["mask"].numpy(), m)
    # An edge list is packed as the weights of its arcs (an arc listed twice weighs 2; -1 is padding).
    edges = np.array([[[0, 1], [0, 1], [2, 3], [-1, -1]]] * 15)
    dense = pack_rows(x, adjacency=edges)[:, 10:].reshape(15, 5, 5)
    want = np.zeros((5, 5))
    want[0, 1], want[2, 3] = 2.0, 1.0
    np.testing.assert_array_equal(dense, np.broadcast_to(want, (15, 5, 5)))


def test_a_regressor_on_packed_graphs_is_the_flow_of_their_kernels(graphs):
    x, a, y = graphs
    spec = graph_spec()
    X = pack_rows(x, adjacency=a)
    reg = NTKRegressor(spec=spec.to_dict(), input_shape=(2, 5), ridge=RIDGE, time=2.0).fit(X[:11], y[:11])

    def ntk(i, j):
        return spec.ntk(x[i], x[j], adjacency=(a[i], a[j]))
    want = _flow_mean(ntk, np.arange(11), np.arange(11, 15), y[:11], 2.0)
    # An eigendecomposition against expm and a solve, 11 x 11 with ridge 1e-8: ~1e-10.
    np.testing.assert_allclose(reg.predict(X[11:]), want, rtol=1e-7, atol=1e-9)


def test_cross_validation_and_grid_search_subset_the_side_inputs_with_the_rows(graphs):
    x, a, y = graphs
    spec = graph_spec()
    X = pack_rows(x, adjacency=a)
    folds = KFold(3, shuffle=True, random_state=0)
    reg = NTKRegressor(spec=spec.to_dict(), input_shape=(2, 5), ridge=RIDGE)
    scores = cross_val_score(reg, X, y, cv=folds)

    def ntk(i, j):
        return spec.ntk(x[i], x[j], adjacency=(a[i], a[j]))
    want = [r2_score(y[test], _flow_mean(ntk, train, test, y[train], math.inf)) for train, test in folds.split(X)]
    # r2 of predictions that agree to ~1e-10 (see above), on targets of order 1.
    np.testing.assert_allclose(scores, want, rtol=1e-7, atol=1e-8)
    search = GridSearchCV(reg, {"time": [0.5, math.inf]}, cv=folds).fit(X, y)
    for time, got in zip(search.cv_results_["param_time"], search.cv_results_["mean_test_score"], strict=True):
        expected = np.mean([r2_score(y[test], _flow_mean(ntk, train, test, y[train], float(time)))
                            for train, test in folds.split(X)])
        np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-8)


def test_a_classifier_on_masked_sequences(sequences):
    x, m = sequences
    spec = sequence_spec()
    labels = np.where(x[:, 0, 0] > 0, "up", "down")
    X = pack_rows(x, mask=m)
    clf = NTKClassifier(spec=spec.to_dict(), input_shape=(2, 6), ridge=RIDGE).fit(X[:9], labels[:9])
    codes = (labels[:9] == "up").astype(float)
    targets = np.column_stack([1 - codes, codes]) - 0.5

    def ntk(i, j):
        return spec.ntk(x[i], x[j], mask=(m[i], m[j]))
    mean = _flow_mean(ntk, np.arange(9), np.arange(9, 12), targets, math.inf)
    np.testing.assert_allclose(clf.decision_function(X[9:]), mean[:, 1] - mean[:, 0], rtol=1e-7, atol=1e-9)


def test_gp_kernels_unpack_the_side_inputs_of_x_and_y(graphs, sequences):
    x, a, _ = graphs
    spec = graph_spec()
    X = pack_rows(x, adjacency=a)
    kernel = NTKKernel(spec=spec.to_dict(), input_shape=(2, 5))
    # The same single call of spec.kernels on the same numbers: equal to the bit.
    np.testing.assert_array_equal(kernel(X), spec.ntk(x, adjacency=a))
    np.testing.assert_array_equal(kernel(X[:4], X[4:]), spec.ntk(x[:4], x[4:], adjacency=(a[:4], a[4:])))
    np.testing.assert_array_equal(kernel.diag(X), spec.ntk(x, adjacency=a, diagonal=True))
    k, gradient = kernel(X, eval_gradient=True)
    assert gradient.shape == (15, 15, 0)      # a description's scales are its own: nothing to fit
    s, m = sequences
    nngp = NNGPKernel(spec=sequence_spec().to_dict(), input_shape=(2, 6))
    # X with masks, Y without (every position real).
    np.testing.assert_array_equal(nngp(pack_rows(s[:5], mask=m[:5]), s[5:].reshape(7, -1)),
                                  sequence_spec().nngp(s[:5], s[5:], mask=(m[:5], np.ones((7, 6), bool))))


def test_rows_that_fit_no_layout_are_refused(graphs, sequences):
    x, a, y = graphs
    reg = NTKRegressor(spec=graph_spec().to_dict(), input_shape=(2, 5))
    with pytest.raises(ValueError, match=r"X has 10 columns, but input_shape \(2, 5\) needs 35 \(the inputs \+ "
                                         r"adjacency\), or 40 \(with mask\)"):
        reg.fit(x.reshape(15, -1), y)
    with pytest.raises(ValueError, match="give input_shape=x.shape"):
        NTKRegressor(spec=graph_spec().to_dict()).fit(pack_rows(x, adjacency=a), y)
    with pytest.raises(ValueError, match="side inputs go with inputs that have positions"):
        pack_rows(x.reshape(15, -1), mask=np.ones((15, 10), bool))
    with pytest.raises(ValueError, match="adjacency holds 14 graphs"):
        pack_rows(x, adjacency=a[:14])
    s, m = sequences
    X = pack_rows(s, mask=m)
    X[0, -1] = 0.5
    with pytest.raises(ValueError, match="only 0 and 1"):
        NTKRegressor(spec=sequence_spec().to_dict(), input_shape=(2, 6)).fit(X, np.zeros(12))
