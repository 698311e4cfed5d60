"""The theorems' distances: operator norms on a data set, whitening, Monte Carlo noise levels."""

import numpy as np
import pytest
import torch

from torchntk.studies.measures import (
    activation_movement,
    bootstrap_ratio,
    conditional_nngp,
    covariance_error,
    flatten_kernel,
    kernel_movement,
    layer_weight_movement,
    ntk_distance,
    null_covariance_errors,
    op_norm,
    whiten,
)


def _random_kernel(rng, n, k):
    a = rng.standard_normal((n * k, n * k))
    gram = a @ a.T
    # element [i, j, p, q] = gram[i k + p, j k + q], written entry by entry (independent of reshapes)
    out = np.zeros((n, n, k, k))
    for i in range(n):
        for j in range(n):
            for p in range(k):
                for q in range(k):
                    out[i, j, p, q] = gram[i * k + p, j * k + q]
    return out, gram


def test_flatten_kernel_orders_rows_by_point_then_output():
    kernel, gram = _random_kernel(np.random.default_rng(0), 4, 3)
    assert np.array_equal(flatten_kernel(kernel).numpy(), gram)


def test_ntk_distance_is_top_abs_eigenvalue_of_the_difference_over_n():
    rng = np.random.default_rng(1)
    n, k = 5, 2
    emp, gram = _random_kernel(rng, n, k)
    limit = rng.standard_normal((n, n))
    limit = limit @ limit.T
    diff = gram - np.kron(limit, np.eye(k))
    expected = np.abs(np.linalg.eigvals(diff)).max() / n
    # Same matrix, a general eigen-solver instead of torch's symmetric one: rounding only.
    assert ntk_distance(emp, limit) == pytest.approx(expected, rel=1e-10)


def test_ntk_distance_of_the_limit_itself_is_zero_and_scales_with_a_shift():
    rng = np.random.default_rng(2)
    limit = rng.standard_normal((6, 6))
    limit = limit @ limit.T
    exact = np.einsum("ij,pq->ijpq", limit, np.eye(3))
    assert ntk_distance(exact, limit) == pytest.approx(0.0, abs=1e-12)
    shifted = exact + 0.3 * np.einsum("ij,pq->ijpq", np.eye(6), np.eye(3))
    # Adding 0.3 I to the (N k)^2 Gram moves every eigenvalue by 0.3: distance 0.3 / N.
    assert ntk_distance(shifted, limit) == pytest.approx(0.3 / 6, rel=1e-12)


def test_kernel_movement_and_op_norm():
    rng = np.random.default_rng(3)
    a, gram_a = _random_kernel(rng, 4, 2)
    b, gram_b = _random_kernel(rng, 4, 2)
    assert kernel_movement(a, b) == pytest.approx(np.abs(np.linalg.eigvals(gram_a - gram_b)).max() / 4, rel=1e-10)
    assert op_norm(gram_a) == pytest.approx(np.linalg.eigvalsh(gram_a).max() / 8, rel=1e-12)


def test_conditional_nngp_and_movements_match_their_formulas():
    rng = np.random.default_rng(4)
    a = torch.as_tensor(rng.standard_normal((7, 50)))
    got = conditional_nngp(a, weight_std=1.5, bias_std=0.1).numpy()
    assert np.allclose(got, 2.25 * a.numpy() @ a.numpy().T / 50 + 0.01, rtol=1e-13, atol=1e-14)
    w0 = torch.as_tensor(rng.standard_normal((30, 20)))
    w1 = w0 + torch.as_tensor(rng.standard_normal((30, 20))) * 0.01
    expected = np.linalg.svd((w1 - w0).numpy(), compute_uv=False)[0] / np.sqrt(20)
    assert layer_weight_movement(w1, w0) == pytest.approx(expected, rel=1e-12)
    assert activation_movement(w1, w0) == pytest.approx(np.sqrt(((w1 - w0).numpy() ** 2).mean()), rel=1e-12)


def test_whiten_inverts_the_cholesky_factor():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 4))
    sigma = a @ a.T + np.eye(4)
    chol = np.linalg.cholesky(sigma)
    z = rng.standard_normal((3, 2, 4))
    f = z @ chol.T  # f = C z for each sample
    assert np.allclose(whiten(f, sigma), z, atol=1e-12)
    with pytest.raises(ValueError, match="positive definite"):
        whiten(f, np.ones((4, 4)))


def test_covariance_error_of_exact_gaussians_follows_its_null_distribution():
    rng = np.random.default_rng(6)
    sigma = np.array([[1.0, 0.5], [0.5, 2.0]])
    samples = rng.standard_normal((200, 2)) @ np.linalg.cholesky(sigma).T
    err = covariance_error(samples, sigma)
    null = null_covariance_errors(sigma, 200, 500, seed=7)
    # err is one draw from the null law, so it lies below its 99.9th percentile with
    # probability 0.999; the null's median scales as sqrt(1/samples): 200 -> 0.1 roughly.
    assert err < np.quantile(null, 0.999)
    assert 0.02 < np.median(null) < 0.3
    assert covariance_error(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), np.eye(2) / 2) == \
        pytest.approx(0.0, abs=1e-15)


def test_bootstrap_ratio_brackets_the_true_ratio():
    rng = np.random.default_rng(8)
    a = rng.normal(0, 2.0, size=(40, 10))
    b = rng.normal(0, 1.0, size=(40, 10))
    ratio, low, high = bootstrap_ratio(a, b, lambda x: x.std(axis=1, ddof=1).mean(axis=-1), seed=0)
    # True ratio of spreads is 2; with 40 seeds the 95% interval is about +-15%: it must bracket 2.
    assert low < 2.0 < high
    assert low < ratio < high
    same = bootstrap_ratio(a, a, lambda x: x.mean(axis=1).mean(axis=-1) ** 2, seed=0)
    assert same[0] == pytest.approx(1.0)
