"""Convergence rates: least-squares slopes on log-log axes, with their uncertainty.

A statement "distance = O(n^-1/2)" is tested by measuring the distance for several widths n
and several seeds, then fitting

    log d_{n,s} = a + b log n + e_{n,s}

by ordinary least squares over every (width, seed) pair. The slope's standard error comes from
the residuals, se(b) = sqrt(RSS / (m - 2) / sum_j (log n_j - mean)^2) over the m points, and
the two-sided interval b +- t_{m-2, (1+c)/2} se(b) has confidence c (Student's t, so it stays
honest with few points). The seeds' scatter is what the residuals see, so more seeds give a
narrower interval.

Two kinds of prediction are judged differently:

- a rate ("d ~ n^b0", e.g. central-limit fluctuations at initialization, exactly n^-1/2):
  "borne out" when the interval contains b0 and, for b0 < 0, lies below 0 (the quantity does
  vanish); "inconclusive" when it contains both b0 and 0; "not borne out" when it excludes b0.
- a bound ("d = O(n^b0)", e.g. the Gronwall bounds of Theorem 2 and Lemma 1, which say the
  quantity vanishes at least that fast): "borne out" when the interval lies below 0 and does not
  lie entirely above b0 (a steeper measured slope is consistent with the bound, and the report
  says it is faster); "inconclusive" when it contains 0; "not borne out" when it lies entirely
  above b0 (the quantity vanishes significantly slower than the bound allows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .results import Claim

BORNE_OUT, INCONCLUSIVE, NOT_BORNE_OUT = "borne out", "inconclusive", "not borne out"


@dataclass(frozen=True)
class SlopeFit:
    """A fitted log-log slope and its uncertainty.

    Attributes:
        slope: b in log d = a + b log n (natural logarithms).
        intercept: a in the same.
        stderr: the standard error of b from the residuals.
        low: the lower end of the interval b +- t se(b) of the stated confidence.
        high: its upper end.
        confidence: e.g. 0.95.
        predicted: the theory's slope b0.
        points: m, the number of (width, seed) measurements fitted.
        kind: "rate" (b0 is the exponent) or "bound" (the quantity is :math:`O(n^{b_0})`).
    """

    slope: float
    intercept: float
    stderr: float
    low: float
    high: float
    confidence: float
    predicted: float
    points: int
    kind: str = "rate"

    @property
    def verdict(self) -> str:
        """"borne out", "inconclusive" or "not borne out" (rules in the module docstring)."""
        if self.kind == "bound":
            if self.low > self.predicted:
                return NOT_BORNE_OUT
            return INCONCLUSIVE if self.high >= 0 else BORNE_OUT
        if not self.low <= self.predicted <= self.high:
            return NOT_BORNE_OUT
        if self.predicted < 0 <= self.high or self.predicted > 0 >= self.low:
            return INCONCLUSIVE
        return BORNE_OUT

    @property
    def faster(self) -> bool:
        """For a bound, whether the whole interval lies below b0 (the quantity vanishes faster than the bound)."""
        return self.kind == "bound" and self.high < self.predicted

    @property
    def criterion(self) -> str:
        """The rule the verdict applies, in words, for reports beside the verdict."""
        pct = f"{100 * self.confidence:g}%"
        how = f"(least squares on log-log, {self.points} points, Student's t)"
        if self.kind == "bound":
            return (f"O(n^{self.predicted:g}) bound: the {pct} interval of the fitted slope lies below 0 and not "
                    f"entirely above {self.predicted:g} {how}")
        if self.predicted == 0:
            return f"the {pct} interval of the fitted slope contains 0 {how}"
        return f"the {pct} interval of the fitted slope contains {self.predicted:g} and excludes 0 {how}"

    def describe(self) -> str:
        """"-0.514 ± 0.014 (95%: [-0.544, -0.484])", noting a bound beaten by a steeper slope."""
        text = (f"{self.slope:.3f} ± {self.stderr:.3f} "
                f"({100 * self.confidence:g}%: [{self.low:.3f}, {self.high:.3f}])")
        return text + (f"; faster than the n^{self.predicted:g} bound" if self.faster else "")

    def line(self, widths: np.ndarray) -> np.ndarray:
        """The fitted power law :math:`e^a n^b` at ``widths``."""
        return np.exp(self.intercept) * np.asarray(widths, dtype=np.float64) ** self.slope

    def as_dict(self) -> dict:
        """The fit and its verdict as plain JSON data."""
        return {"slope": self.slope, "stderr": self.stderr, "intercept": self.intercept, "low": self.low,
                "high": self.high, "confidence": self.confidence, "predicted": self.predicted,
                "points": self.points, "kind": self.kind, "verdict": self.verdict}


def fit_loglog(widths: np.ndarray, values: np.ndarray, predicted: float, confidence: float = 0.95,
               kind: str = "rate") -> SlopeFit:
    """Fit log(values) = a + b log(widths) by least squares, with a t-interval on b.

    Args:
        widths: shape (W,), positive, at least two distinct.
        values: shape (W, S), one measurement per width and seed, all positive and finite.
        predicted: the slope the theory predicts (e.g. -0.5).
        confidence: the interval's confidence level in (0, 1).
        kind: "rate" or "bound" (how the verdict reads the prediction; see the module docstring).

    Returns:
        A `SlopeFit`.
    """
    from scipy import stats

    widths = np.asarray(widths, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != widths.shape[0]:
        raise ValueError(f"values must have shape (W, S) with W = len(widths) = {widths.shape[0]}; "
                         f"got shape {values.shape}.")
    if not (np.all(widths > 0) and np.all(np.isfinite(widths))):
        raise ValueError(f"widths must be positive and finite, got {widths.tolist()}.")
    if np.unique(widths).size < 2:
        raise ValueError("a slope needs at least two distinct widths.")
    if not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise ValueError("every measured value must be positive and finite to take its logarithm; got "
                         f"min {np.nanmin(values):.3g}, NaN/inf present: {not np.all(np.isfinite(values))}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    if kind not in ("rate", "bound"):
        raise ValueError(f"kind must be 'rate' or 'bound', got {kind!r}.")
    log_n = np.repeat(np.log(widths), values.shape[1])
    log_d = np.log(values).reshape(-1)
    m = log_n.size
    if m < 3:
        raise ValueError(f"a slope with an uncertainty needs at least 3 measurements, got {m}.")
    centred = log_n - log_n.mean()
    sxx = float(centred @ centred)
    slope = float(centred @ (log_d - log_d.mean()) / sxx)
    intercept = float(log_d.mean() - slope * log_n.mean())
    residuals = log_d - intercept - slope * log_n
    stderr = float(np.sqrt(residuals @ residuals / (m - 2) / sxx))
    half = float(stats.t.ppf(0.5 + confidence / 2, m - 2)) * stderr
    return SlopeFit(slope, intercept, stderr, slope - half, slope + half, confidence, float(predicted), m, kind)


@dataclass(frozen=True)
class ConvergenceFit:
    """The paper's own kind of claim, "d -> 0 as n grows", judged on a width sweep.

    The appendix proves convergence, not a rate. A finite sweep supports it when

    1. d falls with width, significantly: the interval of the slope fitted over all widths
       (`overall`, a least-squares fit of log d on log n) lies below 0; and
    2. the local slopes between successive widths, b_j = (log g_{j+1} - log g_j) /
       (log n_{j+1} - log n_j) with g_j the geometric mean over seeds at width n_j, trend to
       or below -1/2 as the width grows: the widest local slope's interval reaches -1/2 or
       below, or the local slopes steepen with width (the widest is steeper than the narrowest by
       more than t times the standard error of the difference).
       A quantity converging to a non-zero limit would show local slopes flattening to 0.

    Verdict: "borne out" if both hold; "not borne out" if d grows significantly (the overall
    interval lies above 0); "inconclusive" otherwise. The -1/2 in 2. is only the pace that
    counts as "still falling" at the widest widths; whether d ~ n^-1/2 exactly (Lee et al.,
    2019) is a separate comparison (`fit_loglog`).

    Attributes:
        overall: the fit over all widths.
        local: (W - 1,) local slopes between successive widths.
        local_se: (W - 1,) their standard errors, from the seeds' scatter of log d at both widths.
        t_quantile: Student's t quantile used for the local intervals (S - 1 degrees of freedom).
    """

    overall: SlopeFit
    local: tuple[float, ...]
    local_se: tuple[float, ...]
    t_quantile: float

    @property
    def falls(self) -> bool:
        """Condition 1: the overall slope's interval lies below 0 (d falls with width, significantly)."""
        return self.overall.high < 0

    @property
    def trends(self) -> bool:
        """Condition 2: the widest local slope's interval reaches -1/2, or the local slopes steepen
        with width by more than t times the standard error of the difference (widest vs narrowest)."""
        last_low = self.local[-1] - self.t_quantile * self.local_se[-1]
        if last_low <= -0.5:
            return True
        # Steepening, beyond the noise: the widest local slope lies below the narrowest by more
        # than t times the standard error of their difference.
        spread = self.t_quantile * float(np.hypot(self.local_se[-1], self.local_se[0]))
        return bool(len(self.local) > 1 and self.local[-1] + spread < self.local[0])

    @property
    def verdict(self) -> str:
        """"borne out" (`falls` and `trends`), "not borne out" (the overall interval lies above 0)
        or "inconclusive"."""
        if self.falls and self.trends:
            return BORNE_OUT
        if self.overall.low > 0:
            return NOT_BORNE_OUT
        return INCONCLUSIVE

    @property
    def criterion(self) -> str:
        """The rule the verdict applies, in words, for reports beside the verdict."""
        pct = f"{100 * self.overall.confidence:g}%"
        return (f"falls with width, significantly (the {pct} interval of the overall log-log slope lies below 0), "
                f"and the local slopes between successive widths trend to or below -1/2 (the widest one's {pct} "
                "interval reaches -1/2, or they steepen with width beyond the noise)")

    def describe(self) -> str:
        """"overall -0.514 ± 0.014 [-0.544, -0.484]; local slopes -0.52, -0.46, -0.58 (widest ± 0.05)"."""
        o = self.overall
        local = ", ".join(f"{b:.2f}" for b in self.local)
        return (f"overall {o.slope:.3f} ± {o.stderr:.3f} [{o.low:.3f}, {o.high:.3f}]; local slopes {local} "
                f"(widest ± {self.local_se[-1]:.2f})")

    def as_dict(self) -> dict:
        """The fits, both conditions and the verdict as plain JSON data."""
        return {"overall": self.overall.as_dict(), "local": list(self.local), "local_se": list(self.local_se),
                "t_quantile": self.t_quantile, "falls": self.falls, "trends": self.trends, "verdict": self.verdict}


def fit_convergence(widths: np.ndarray, values: np.ndarray, confidence: float = 0.95) -> ConvergenceFit:
    """Judge "values -> 0 as width grows" (see `ConvergenceFit`).

    Args:
        widths: (W,) increasing, at least 3 distinct.
        values: (W, S) positive measurements, S >= 2 seeds per width.
        confidence: level of the intervals.
    """
    from scipy import stats

    overall = fit_loglog(widths, values, -0.5, confidence, "bound")
    widths = np.asarray(widths, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1 or values.shape[1] < 2:
        raise ValueError("local slopes need at least 2 seeds per width (their scatter is the uncertainty).")
    if np.any(np.diff(widths) <= 0):
        raise ValueError(f"widths must increase strictly, got {widths.tolist()}.")
    logs = np.log(values)
    mean, se = logs.mean(axis=1), logs.std(axis=1, ddof=1) / np.sqrt(logs.shape[1])
    step = np.diff(np.log(widths))
    local = np.diff(mean) / step
    local_se = np.sqrt(se[1:] ** 2 + se[:-1] ** 2) / step
    t = float(stats.t.ppf(0.5 + confidence / 2, logs.shape[1] - 1))
    return ConvergenceFit(overall, tuple(float(b) for b in local), tuple(float(s) for s in local_se), t)


NOT_CLAIMED = "rate, not the paper's claim"
"""How the label of every rate comparison ends: the paper states convergence, not rates."""

LEE = f"Lee et al. (2019) {NOT_CLAIMED}"
"""The label of every O(n^-1/2) comparison."""


def convergence_claim(statement: str, fit: ConvergenceFit) -> Claim:
    """The paper's claim "this vanishes as width grows", judged by `fit_convergence`."""
    return Claim(statement, fit.describe(), "→ 0 as n → ∞ (the paper: convergence, no rate)", fit.criterion,
                 fit.verdict)


def slope_claim(statement: str, fit: SlopeFit) -> Claim:
    """A rate judged by `fit_loglog`: an exact slope ("rate") or an upper bound O(n^predicted) ("bound")."""
    theory = f"slope {fit.predicted:g}" if fit.kind == "rate" else f"slope ≤ {fit.predicted:g} (O(n^{fit.predicted:g}))"
    return Claim(statement, fit.describe(), theory, fit.criterion, fit.verdict)
