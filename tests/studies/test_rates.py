"""Log-log slope fits: exact on exact power laws, honest intervals on noisy ones, clear verdicts."""

import numpy as np
import pytest

from torchntk.studies.rates import BORNE_OUT, INCONCLUSIVE, NOT_BORNE_OUT, SlopeFit, fit_convergence, fit_loglog

WIDTHS = np.array([64.0, 128.0, 256.0, 512.0, 1024.0])


def test_exact_power_law_is_recovered_to_rounding():
    values = 3.0 * WIDTHS[:, None] ** -0.5 * np.ones((1, 4))
    fit = fit_loglog(WIDTHS, values, predicted=-0.5)
    # Noise-free data: the least-squares slope is exact up to float64 rounding of logarithms (~1e-15).
    assert fit.slope == pytest.approx(-0.5, abs=1e-12)
    assert np.exp(fit.intercept) == pytest.approx(3.0, rel=1e-12)
    assert fit.stderr < 1e-12
    assert fit.points == 20
    assert fit.line(np.array([100.0]))[0] == pytest.approx(0.3, rel=1e-12)


def test_slope_and_stderr_match_the_textbook_formulas():
    rng = np.random.default_rng(1)
    values = np.exp(rng.normal(size=(5, 3))) * WIDTHS[:, None] ** -0.7
    fit = fit_loglog(WIDTHS, values, predicted=-0.5)
    x = np.repeat(np.log(WIDTHS), 3)
    y = np.log(values).reshape(-1)
    design = np.stack([np.ones_like(x), x], axis=1)
    coef, rss, *_ = np.linalg.lstsq(design, y, rcond=None)
    cov = rss[0] / (x.size - 2) * np.linalg.inv(design.T @ design)
    # Same quantities by an independent route (normal equations through lstsq): rounding only.
    assert fit.slope == pytest.approx(coef[1], abs=1e-12)
    assert fit.stderr == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-10)


def test_interval_covers_the_true_slope_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    trials = 2000
    covered = 0
    for _ in range(trials):
        noise = np.exp(0.3 * rng.standard_normal((5, 3)))
        fit = fit_loglog(WIDTHS, WIDTHS[:, None] ** -0.5 * noise, predicted=-0.5)
        covered += fit.low <= -0.5 <= fit.high
    # Gaussian log-noise meets the t-interval's assumptions exactly, so coverage is 0.95; the
    # binomial standard error over 2000 trials is sqrt(0.95 * 0.05 / 2000) = 0.0049: allow 4 of them.
    assert abs(covered / trials - 0.95) < 4 * 0.0049


def _fit(slope: float, low: float, high: float, predicted: float, kind: str) -> SlopeFit:
    return SlopeFit(slope, 0.0, (high - low) / 4, low, high, 0.95, predicted, 20, kind)


@pytest.mark.parametrize(("low", "high", "verdict"), [
    (-0.6, -0.4, BORNE_OUT),          # contains -1/2, excludes 0
    (-0.9, 0.1, INCONCLUSIVE),        # contains both
    (-1.2, -0.8, NOT_BORNE_OUT),      # excludes -1/2 (too steep for an exact rate)
    (-0.3, -0.1, NOT_BORNE_OUT),      # excludes -1/2 (too shallow)
])
def test_rate_verdicts(low, high, verdict):
    assert _fit((low + high) / 2, low, high, -0.5, "rate").verdict == verdict


@pytest.mark.parametrize(("low", "high", "verdict", "faster"), [
    (-0.6, -0.4, BORNE_OUT, False),
    (-1.2, -0.8, BORNE_OUT, True),    # steeper than the bound: consistent with O(n^-1/2)
    (-0.3, -0.1, NOT_BORNE_OUT, False),
    (-0.9, 0.1, INCONCLUSIVE, False),
])
def test_bound_verdicts(low, high, verdict, faster):
    fit = _fit((low + high) / 2, low, high, -0.5, "bound")
    assert fit.verdict == verdict
    assert fit.faster == faster
    assert ("faster than" in fit.describe()) == faster


def test_zero_slope_prediction_needs_only_to_be_contained():
    assert _fit(0.02, -0.1, 0.14, 0.0, "rate").verdict == BORNE_OUT
    assert _fit(-0.4, -0.5, -0.3, 0.0, "rate").verdict == NOT_BORNE_OUT


@pytest.mark.parametrize(("widths", "values", "match"), [
    (WIDTHS, -np.ones((5, 2)), "positive and finite"),
    (WIDTHS, np.full((5, 2), np.nan), "positive and finite"),
    (WIDTHS, np.ones((4, 2)), "shape"),
    (np.array([64.0, 64.0]), np.ones((2, 3)), "two distinct widths"),
    (np.array([64.0, 128.0]), np.ones((2, 1)), "at least 3"),
])
def test_bad_input_is_rejected(widths, values, match):
    with pytest.raises(ValueError, match=match):
        fit_loglog(widths, values, predicted=-0.5)


def test_bad_kind_and_confidence_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        fit_loglog(WIDTHS, np.ones((5, 2)), -0.5, kind="upper")
    with pytest.raises(ValueError, match="confidence"):
        fit_loglog(WIDTHS, np.ones((5, 2)), -0.5, confidence=1.5)


# -- the paper's convergence claims (fit_convergence) -------------------------------------

WIDTHS = np.array([64, 128, 256, 512, 1024])


def _noisy(law, seeds=6, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return law(WIDTHS)[:, None] * np.exp(noise * rng.normal(size=(len(WIDTHS), seeds)))


def test_local_slopes_are_those_of_the_geometric_means():
    values = _noisy(lambda n: 3.0 * n ** -0.5)
    fit = fit_convergence(WIDTHS, values)
    g = np.exp(np.log(values).mean(axis=1))
    np.testing.assert_allclose(fit.local, np.diff(np.log(g)) / np.diff(np.log(WIDTHS)), rtol=1e-12)
    assert len(fit.local_se) == 4 and all(se > 0 for se in fit.local_se)


@pytest.mark.parametrize("law, verdict", [
    (lambda n: n ** -0.5, BORNE_OUT),                     # the -1/2 pace: falls, widest local slope reaches -1/2
    (lambda n: n ** -1.0, BORNE_OUT),                     # faster than -1/2
    (lambda n: n ** -0.5 * (1 + 300 / n) ** 0.4, BORNE_OUT),  # steepening: local slopes -0.2 ... -0.4
    (lambda n: n ** -0.2, INCONCLUSIVE),                  # falls significantly, but at a steady -0.2
    (lambda n: 0.1 + n ** -0.5, INCONCLUSIVE),            # tends to a non-zero limit: local slopes flatten to 0
    (lambda n: n ** 0.3, NOT_BORNE_OUT),                  # grows
])
def test_convergence_verdicts(law, verdict):
    fit = fit_convergence(WIDTHS, _noisy(law))
    assert fit.verdict == verdict, fit.describe()


def test_convergence_needs_two_seeds_and_increasing_widths():
    with pytest.raises(ValueError, match="2 seeds"):
        fit_convergence(WIDTHS, np.ones((5, 1)))
    with pytest.raises(ValueError, match="increase"):
        fit_convergence(WIDTHS[::-1], _noisy(lambda n: n ** -0.5))
