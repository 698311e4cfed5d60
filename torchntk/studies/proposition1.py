"""Proposition 1 judged on a width sweep: the outputs at initialization tend to iid GP(0, Σ(L)).

Its proof's law of large numbers: the output covariance given the last hidden layer,
Sigma~ = sigma_w^2 a a^T / n + beta^2, is within O(n^-1/2) of Sigma(L). Over many seeds: the
outputs' second moment against Sigma(L) (judged against the Monte Carlo noise of exact Gaussian
samples of the same size), a Kolmogorov-Smirnov test of the whitened outputs against N(0, 1), the
outputs' excess kurtosis (exactly 3 Var(Sigma~(x, x)) / E[Sigma~(x, x)]^2, since f is Gaussian
given the last hidden layer; predicted O(1/n)), and correlation tests between two output units.
`torchntk.studies.theorems` puts this section beside the other statements'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import SweepSettings, derive_seed
from .measures import covariance_error, null_covariance_errors, op_norm, whiten
from .plots import RateSeries, figure_gaussianity
from .rates import (
    BORNE_OUT,
    LEE,
    NOT_BORNE_OUT,
    NOT_CLAIMED,
    ConvergenceFit,
    SlopeFit,
    convergence_claim,
    fit_convergence,
    fit_loglog,
    slope_claim,
)
from .results import Claim, Figure, Section, Table
from .width_sweep import MIN_GROUP, SweepMeasurements

ALPHA = 0.05
"""Significance level of the distribution tests."""
NULL_REPEATS = 400
"""Exact-Gaussian repeats that calibrate the covariance error's Monte Carlo noise."""


def excess_kurtosis(variances: np.ndarray) -> np.ndarray:
    """The outputs' exact excess kurtosis per width, 3 Var(Σ~(x,x)) / E[Σ~(x,x)]², averaged over x.

    ``variances``: (W, G, N) Σ~(x_i, x_i) of G networks per width; moments over the G. Returns (W,).
    Given the last hidden layer, f(x) ~ N(0, Σ~(x,x)), so its kurtosis is that of a Gaussian mixed
    over Σ~."""
    return (3 * variances.var(axis=1, ddof=1) / variances.mean(axis=1) ** 2).mean(axis=1)


def _kurtosis_groups(count: int) -> int:
    """Ten groups of initializations when there are 20 or more, else as many as give two each."""
    return 10 if count >= 10 * MIN_GROUP else max(2, count // MIN_GROUP)


@dataclass(frozen=True)
class _Gaussianity:
    """Proposition 1's tests and fits. Per width (indexed [width]): ``z`` the whitened outputs
    (W, G, k, N), ``cov_err`` the covariance error, ``ks`` the Kolmogorov-Smirnov results, the
    sample and exact kurtoses, ``kurt_groups`` the exact one per group of initializations
    (W, groups), ``lin`` and ``sq`` the Pearson tests between units 1 and 2 (None with one unit).
    ``null_q`` is the covariance error's Monte Carlo noise (95%), ``kurt_se`` the sample
    kurtosis' standard error."""

    z: np.ndarray
    cov_err: np.ndarray
    null_q: float
    ks: list[Any]
    kurt_sample: np.ndarray
    kurt_se: float
    kurt_exact: np.ndarray
    kurt_groups: np.ndarray
    lin: list[Any] | None
    sq: list[Any] | None
    cond_fit: SlopeFit
    cond_conv: ConvergenceFit
    kurt_fit: SlopeFit
    kurt_conv: ConvergenceFit


def _gaussianity(m: SweepMeasurements, seed: int, conf: float) -> _Gaussianity:
    """Whiten the outputs with Σ(L) and test them: second moment against Monte Carlo noise,
    Kolmogorov-Smirnov, kurtosis (sample and exact), and correlations between units 1 and 2."""
    from scipy import stats

    g_count, k, n = m.outputs.shape[1:]
    widths = range(len(m.widths))
    null = null_covariance_errors(m.nngp, g_count * k, NULL_REPEATS, derive_seed(seed, "null", len(m.widths)))
    z = np.stack([whiten(m.outputs[wi], m.nngp) for wi in widths])  # (W, G, k, N)
    v = m.variances
    # Replicates whose scatter is the sampling noise of the estimate: one value per width would leave
    # the fit's interval to the residuals about the line alone (finite-width curvature), however few
    # initializations each point rests on.
    kurt_groups = np.stack([excess_kurtosis(part) for part in np.array_split(v, _kurtosis_groups(v.shape[1]), axis=1)],
                           axis=1)  # (W, groups)
    lin = sq = None
    if k >= 2:
        lin = [stats.pearsonr(z[wi, :, 0].reshape(-1), z[wi, :, 1].reshape(-1)) for wi in widths]
        sq = [stats.pearsonr(z[wi, :, 0].reshape(-1) ** 2, z[wi, :, 1].reshape(-1) ** 2) for wi in widths]
    return _Gaussianity(
        z=z, cov_err=np.array([covariance_error(m.outputs[wi].reshape(-1, n), m.nngp) for wi in widths]),
        null_q=float(np.quantile(null, 0.95)), ks=[stats.kstest(z[wi].reshape(-1), "norm") for wi in widths],
        kurt_sample=np.array([stats.kurtosis(z[wi].reshape(-1)) for wi in widths]),
        kurt_se=float(np.sqrt(24.0 / z[0].size)), kurt_exact=excess_kurtosis(v), kurt_groups=kurt_groups,
        lin=lin, sq=sq, cond_fit=fit_loglog(m.widths, m.conditional, -0.5, conf),
        cond_conv=fit_convergence(m.widths, m.conditional, conf),
        kurt_fit=fit_loglog(m.widths, kurt_groups, -1.0, conf), kurt_conv=fit_convergence(m.widths, kurt_groups, conf))


def _proposition1_claims(m: SweepMeasurements, p: _Gaussianity) -> list[Claim]:
    """Σ~ → Σ(L), and at the widest width: covariance, Gaussianity, kurtosis → 0, independence."""
    g_count, k, _ = m.outputs.shape[1:]
    top = len(m.widths) - 1
    widest = f"{m.widths[top]:,}"
    claims = [
        convergence_claim("Proposition 1 (proof): the output covariance given the last hidden layer, Σ~ = σ_w² a aᵀ/n "
                          "+ β², tends to Σ(L) in operator norm", p.cond_conv),
        slope_claim(f"{LEE}: ‖Σ~ − Σ(L)‖_op ~ n^-1/2 (central-limit fluctuations)", p.cond_fit),
        Claim(f"Proposition 1: over {g_count} initializations × {k} outputs, the outputs' covariance equals Σ(L) "
              f"(width {widest})",
              f"‖Ĉ − Σ‖/‖Σ‖ = {p.cov_err[top]:.4f}", "0 up to Monte Carlo noise",
              f"at most the 95th percentile ({p.null_q:.4f}) of the same error for {g_count * k} exact N(0, Σ(L)) "
              f"samples ({NULL_REPEATS} repeats)",
              BORNE_OUT if p.cov_err[top] <= p.null_q else NOT_BORNE_OUT),
        Claim(f"Proposition 1: the outputs are Gaussian (width {widest})",
              f"KS statistic {p.ks[top].statistic:.4f}, p = {p.ks[top].pvalue:.3g}",
              "whitened outputs Σ(L)^-1/2 f ~ N(0, I)",
              f"Kolmogorov-Smirnov test of the {p.z[top].size} whitened outputs against N(0, 1) not rejected at "
              f"level {ALPHA}", BORNE_OUT if p.ks[top].pvalue >= ALPHA else NOT_BORNE_OUT),
        convergence_claim("Proposition 1: the distance to a Gaussian vanishes: the outputs' excess kurtosis, "
                          "3 Var(Σ~(x,x)) / E[Σ~(x,x)]² (exact for a Gaussian given Σ~; moments over the "
                          f"initializations, in {p.kurt_groups.shape[1]} groups), → 0", p.kurt_conv),
        slope_claim(f"Leading-order {NOT_CLAIMED}: the excess kurtosis ~ 1/n (Var Σ~ = O(1/n) by the "
                    "law of large numbers over the last hidden layer)", p.kurt_fit),
    ]
    if p.lin is not None and p.sq is not None:
        lin, sq = p.lin[top], p.sq[top]
        claims.append(Claim(
            f"Proposition 1: the output units are independent (width {widest})",
            f"corr(z1, z2) = {lin.statistic:.4f} (p = {lin.pvalue:.3g}); "
            f"corr(z1², z2²) = {sq.statistic:.4f} (p = {sq.pvalue:.3g})", "0 and 0",
            f"Pearson tests of no correlation between units 1 and 2, of the whitened outputs and of their squares, "
            f"both not rejected at level {ALPHA}",
            BORNE_OUT if lin.pvalue >= ALPHA and sq.pvalue >= ALPHA else NOT_BORNE_OUT))
    return claims


def _proposition1_table(m: SweepMeasurements, p: _Gaussianity) -> Table:
    """Per width: Σ~'s distance, the covariance error and its noise, KS, the kurtoses, correlations."""
    groups = p.kurt_groups.shape[1]
    # n times the kurtosis is flat where the 1/n rate holds; its standard error is over the groups.
    n_kurt = m.widths * p.kurt_groups.mean(axis=1)
    n_kurt_se = m.widths * p.kurt_groups.std(axis=1, ddof=1) / np.sqrt(groups)
    rows = []
    for wi, width in enumerate(m.widths.tolist()):
        row = [int(width), float(m.conditional[wi].mean()), float(p.cov_err[wi]), p.null_q, float(p.ks[wi].statistic),
               float(p.ks[wi].pvalue), float(p.kurt_sample[wi]), float(p.kurt_exact[wi]),
               f"{n_kurt[wi]:.1f} ± {n_kurt_se[wi]:.1f}"]
        if p.lin is not None and p.sq is not None:
            row += [float(p.lin[wi].statistic), float(p.lin[wi].pvalue), float(p.sq[wi].statistic),
                    float(p.sq[wi].pvalue)]
        rows.append(row)
    columns = ["width n", "‖Σ~ − Σ‖_op (mean)", "‖Ĉ − Σ‖/‖Σ‖", "noise 95%", "KS stat", "KS p",
               f"sample excess kurtosis (± {p.kurt_se:.2f})", "exact excess kurtosis",
               f"n × exact kurtosis (± s.e. over {groups} groups)"]
    if p.lin is not None:
        columns += ["corr(z1,z2)", "p", "corr(z1²,z2²)", "p "]
    return Table("Measured per width", columns, rows,
                 "‖·‖_op is the top |eigenvalue| of the N×N difference divided by N; Ĉ is the second moment of the "
                 "outputs over initializations and units; 'noise 95%' is what exact Gaussian samples of the same "
                 "size give.")


def _proposition1_notes(m: SweepMeasurements, p: _Gaussianity) -> str:
    """The widths at which the KS test, and the test on the units' squares, reject."""
    rejected = [f"{int(w):,}" for w, r in zip(m.widths.tolist(), p.ks, strict=True) if r.pvalue < ALPHA]
    notes = [f"The KS test rejects Gaussianity at level {ALPHA} at width(s) {', '.join(rejected)}."
             if rejected else f"The KS test rejects Gaussianity at no width (level {ALPHA})."]
    if p.sq is not None:
        dependent = [f"{int(w):,}" for w, r in zip(m.widths.tolist(), p.sq, strict=True) if r.pvalue < ALPHA]
        notes.append(f"The squares of the two units are correlated (p < {ALPHA}) at width(s) "
                     f"{', '.join(dependent)}: the dependence through their shared covariance Σ~."
                     if dependent else "The squares of the two units are uncorrelated at every width.")
    return " ".join(notes)


def proposition1_section(m: SweepMeasurements, settings: SweepSettings, seed: int, out: Path, prefix: str,
                         common: dict[str, Any]) -> tuple[Section, list[tuple[str, str, list[RateSeries]]]]:
    """Proposition 1's section, its Gaussianity figure written to ``out``, and its two panels of the
    rates figure ((title, y label, series), as `plots.figure_rates` takes them).

    ``prefix`` starts the section's key and the figure's file name; ``common`` holds the settings
    every section of the sweep reports."""
    g_count, k, n = m.outputs.shape[1:]
    p = _gaussianity(m, seed, settings.confidence)
    fig_gauss = out / f"{prefix}prop1_gaussian.png"
    figure_gaussianity(m.widths, p.z, p.cov_err, p.null_q, fig_gauss)
    section = Section(
        f"{prefix}prop1", "Proposition 1: outputs at initialization are iid Gaussian processes of covariance Σ(L)",
        [f"{g_count} networks per width (the first {settings.seeds} are also used below), {k} output units each, "
         f"on the {n} data points. ‖Σ(L)‖_op = {op_norm(m.nngp):.4g}. Outputs are whitened with the limit, "
         "z = C⁻¹f where Σ(L) = CCᵀ, which makes them iid N(0, 1) in the limit; the tests are applied to z.",
         "The finite-width output is exactly Gaussian given the last hidden layer, with covariance Σ~, so its "
         "non-Gaussianity is the spread of Σ~ over initializations: of order 1/n, too small for a KS test on a "
         "few thousand samples to see at moderate widths. The exact kurtosis column measures it directly; "
         "n times it is constant where the 1/n rate holds.",
         _proposition1_notes(m, p)],
        common | {"initializations per width (Gaussianity)": g_count}, _proposition1_claims(m, p),
        [_proposition1_table(m, p)],
        [Figure(fig_gauss, "Left: quantiles of the whitened outputs against N(0, 1) for the narrowest and widest "
                           "networks (the diagonal is the limit). Right: the covariance error against the Monte "
                           "Carlo noise level of exact Gaussian samples.")],
        {"conditional": m.conditional, "covariance_error": p.cov_err, "null_95": p.null_q,
         "ks_statistic": [r.statistic for r in p.ks], "ks_pvalue": [r.pvalue for r in p.ks],
         "kurtosis_sample": p.kurt_sample, "kurtosis_exact": p.kurt_exact, "fit_conditional": p.cond_fit.as_dict(),
         "convergence_conditional": p.cond_conv.as_dict(),
         "fit_kurtosis": p.kurt_fit.as_dict(), "kurtosis_groups": p.kurt_groups,
         "convergence_kurtosis": p.kurt_conv.as_dict()})
    panels = [("Prop. 1: ‖Σ~ − Σ(L)‖_op", "distance", [RateSeries("Σ~ vs Σ(L)", m.widths, m.conditional, p.cond_fit)]),
              ("Prop. 1: excess kurtosis of f(x)", "3 Var Σ~ / (E Σ~)²",
               [RateSeries("exact kurtosis (groups of inits)", m.widths, p.kurt_groups, p.kurt_fit)])]
    return section, panels
