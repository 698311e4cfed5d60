"""The appendix's statements judged on a width sweep: Proposition 1, Theorems 1 and 2, Lemma 1.

`torchntk.studies.width_sweep` measures the sweep's networks; the distances the statements say
vanish are fitted here as d ~ n^b on log-log axes (`rates.fit_loglog`):

- Proposition 1 (outputs -> iid GP(0, Sigma(L))): Sigma~ against Sigma(L), and tests of the
  outputs' Gaussianity and independence (`torchntk.studies.proposition1`).
- Theorem 1: ||Theta_emp(0) - Theta(L) (x) Id||_op on the data set.
- Theorem 2: sup_t ||Theta_emp(t) - Theta_emp(0)||_op over the recorded training steps.
- Lemma 1: sup_t ||W(l)(t) - W(l)(0)||_op / sqrt(n_l) for each layer, and the relative change of
  the hidden pre-activations a~(l) (what the lemma's proof bounds; the post-activations a(l) are
  reported beside them). The first layer's fan-in n_0 does not grow, and its weights move by O(1)
  in operator norm (the lemma is stated for l >= 1); it is shown with predicted slope 0.

The paper states convergence, not rates. Each statement therefore gets two claims: the paper's
("falls with width, significantly, with local slopes trending to or below -1/2":
`rates.fit_convergence`), and, labelled as such, the comparison with the O(n^-1/2) rate that Lee
et al. (2019) argue for (central-limit fluctuations at initialization; their bound during
training), judged by `rates.fit_loglog`.

Each statement's section comes from its own function, which also hands back its panels of the
figure of all the rates (`analyse_sweep` draws that figure once, for the summary section).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import SweepSettings
from .data import Dataset
from .measures import op_norm
from .plots import RateSeries, figure_rates
from .proposition1 import proposition1_section
from .rates import (
    LEE,
    NOT_BORNE_OUT,
    ConvergenceFit,
    SlopeFit,
    convergence_claim,
    fit_convergence,
    fit_loglog,
    slope_claim,
)
from .results import Claim, Figure, Section, Table
from .width_sweep import SweepMeasurements

Panel = tuple[str, str, list[RateSeries]]
"""One panel of the rates figure: (title, y label, series), as `plots.figure_rates` takes it."""


def analyse_sweep(m: SweepMeasurements, settings: SweepSettings, data: Dataset, seed: int, out: Path,
                  prefix: str = "") -> list[Section]:
    """Turn the measurements into report sections with claims, tables and figures in ``out``."""
    common = _common_settings(m, settings, data)
    prop, prop_panels = proposition1_section(m, settings, seed, out, prefix, common)
    thm1, thm1_panels = _theorem1(m, settings, prefix, common)
    thm2, thm2_panels = _theorem2(m, settings, data, prefix, common)
    lemma, lemma_panels = _lemma1(m, settings, data, prefix, common)
    detailed = [prop, thm1, thm2, lemma]
    panels = [*prop_panels, *thm1_panels, *thm2_panels, *lemma_panels]
    return [_rates(detailed, panels, settings, data, out, prefix, common), *detailed]


def _common_settings(m: SweepMeasurements, settings: SweepSettings, data: Dataset) -> dict[str, Any]:
    """The settings every section of the sweep reports."""
    return {"network": settings.network.describe(), "widths": ", ".join(f"{w:,}" for w in m.widths.tolist()),
            "seeds per width (trained)": settings.seeds, "data": data.source, "points N": data.x.shape[0],
            "outputs n_L": settings.out_features, "learning rate": settings.lr, "steps": settings.steps,
            "time T = lr × steps": settings.lr * settings.steps, "NTK recorded every": settings.record_every,
            "networks": "float32, NTK parameterization; limits in float64"}


# -- fits and tables of the sections ------------------------------------------------------

def _fit(m: SweepMeasurements, values: np.ndarray, predicted: float, confidence: float, kind: str = "rate") -> SlopeFit:
    """`rates.fit_loglog` of ``values`` (W, S) against the sweep's widths."""
    return fit_loglog(m.widths, values, predicted, confidence, kind)


def _rate_table(m: SweepMeasurements, series: list[tuple[str, np.ndarray]], note: str = "") -> Table:
    """Per width, the mean and the sd over seeds of each named (W, S) series."""
    columns = ["width n"]
    for name, _ in series:
        columns += [f"{name}: mean", "sd over seeds"]
    rows = []
    for wi, width in enumerate(m.widths.tolist()):
        row: list = [int(width)]
        for _, values in series:
            row += [float(values[wi].mean()), float(values[wi].std(ddof=1)) if values.shape[1] > 1 else 0.0]
        rows.append(row)
    return Table("Measured per width", columns, rows, note)


# -- Theorems 1 and 2 ----------------------------------------------------------------------

def _theorem1(m: SweepMeasurements, settings: SweepSettings, prefix: str,
              common: dict[str, Any]) -> tuple[Section, list[Panel]]:
    """Theorem 1's section (the NTK at initialization against its limit) and its rates panel."""
    conf = settings.confidence
    _, k, n = m.outputs.shape[1:]
    theta_norm = op_norm(m.ntk)
    fit = _fit(m, m.ntk_init, -0.5, conf)
    conv = fit_convergence(m.widths, m.ntk_init, conf)
    section = Section(
        f"{prefix}theorem1", "Theorem 1: the NTK at initialization tends to Θ(L) ⊗ Id",
        [f"Distance ‖Θ_emp(0) − Θ(L) ⊗ Id_{k}‖_op on the {n} points: the top |eigenvalue| of the "
         f"({n}·{k})×({n}·{k}) difference Gram matrix divided by N = {n} (the paper's operator norm on a finite "
         f"data set). ‖Θ(L)‖_op = {theta_norm:.4g}. The paper: convergence; the fluctuations at initialization are "
         "of order n^-1/2 by the central limit theorem (Lee et al., 2019), compared separately."],
        common, [convergence_claim("Theorem 1: ‖Θ_emp(0) − Θ(L) ⊗ Id‖_op → 0", conv),
                 slope_claim(f"{LEE}: ‖Θ_emp(0) − Θ(L) ⊗ Id‖_op ~ n^-1/2", fit)],
        [_rate_table(m, [("distance", m.ntk_init), ("relative to ‖Θ(L)‖", m.ntk_init / theta_norm)])],
        [], {"distance": m.ntk_init, "fit": fit.as_dict(), "convergence": conv.as_dict(),
             "theta_op_norm": theta_norm})
    return section, [("Thm. 1: ‖Θ_emp(0) − Θ(L) ⊗ Id‖_op", "distance",
                      [RateSeries("init", m.widths, m.ntk_init, fit)])]


def _theorem2(m: SweepMeasurements, settings: SweepSettings, data: Dataset, prefix: str,
              common: dict[str, Any]) -> tuple[Section, list[Panel]]:
    """Theorem 2's section (the NTK's movement during training) and its rates panel."""
    conf = settings.confidence
    fit = _fit(m, m.ntk_move, -0.5, conf, "bound")
    conv = fit_convergence(m.widths, m.ntk_move, conf)
    faster = []
    if fit.low <= -1.0 <= fit.high:
        faster.append(f"The measured slope ({fit.slope:.2f}) is consistent with -1: in this run the NTK moves by "
                      "O(1/n), faster than the proof's O(n^-1/2) bound; a change of order 1/n is what later "
                      "perturbative analyses of wide networks predict (Dyer & Gur-Ari, 2019).")
    section = Section(
        f"{prefix}theorem2", "Theorem 2: the NTK stays constant during training",
        [f"Movement sup_t ‖Θ_emp(t) − Θ_emp(0)‖_op over the {settings.steps // settings.record_every + 1} recorded "
         f"steps of gradient descent (lr {settings.lr:g}, {settings.steps} steps, time T = "
         f"{settings.lr * settings.steps:g}) on the least-squares cost C = (1/2N) Σ|f(x_i) − y_i|² with "
         f"the data's targets for each output ({data.source}). The paper: the movement vanishes as n grows "
         "(uniformly on [0, T]); the O(n^-1/2) bound is Lee et al.'s (2019), compared separately."
         + ("" if settings.network.activation != "relu" else " (ReLU is not twice differentiable, as the theorem "
                                                              "assumes; the paper's experiments use it all the same.)"),
         *faster],
        common, [convergence_claim("Theorem 2: sup_t ‖Θ_emp(t) − Θ_emp(0)‖_op → 0", conv),
                 slope_claim(f"{LEE}: sup_t ‖Θ_emp(t) − Θ_emp(0)‖_op = O(n^-1/2)", fit)],
        [_rate_table(m, [("movement", m.ntk_move), ("final cost", m.final_loss)],
                     "The final cost shows how far training went in the fixed time T.")],
        [], {"movement": m.ntk_move, "final_loss": m.final_loss, "fit": fit.as_dict(),
             "convergence": conv.as_dict()})
    return section, [("Thm. 2: sup_t ‖Θ(t) − Θ(0)‖_op", "movement",
                      [RateSeries("training", m.widths, m.ntk_move, fit)])]


# -- Lemma 1 -------------------------------------------------------------------------------

@dataclass
class _LemmaFits:
    """Lemma 1's claims, fits and plotted series, in the order the section reports them."""

    claims: list[Claim]
    weight_fits: list[SlopeFit]
    weight_series: list[RateSeries]
    act_fits: list[SlopeFit]
    post_fits: list[SlopeFit]
    act_series: list[RateSeries]
    convergence: list[ConvergenceFit]


def _lemma1_fits(m: SweepMeasurements, conf: float) -> _LemmaFits:
    """Fit every layer's weight movement, then every hidden layer's pre- and post-activation change."""
    depth = m.weights.shape[2]
    f = _LemmaFits([], [], [], [], [], [], [])
    for layer in range(depth):
        # The first layer's fan-in n0 does not grow: its weights move by O(1) in operator norm,
        # outside the lemma (l >= 1). Shown with slope 0 for comparison; no claim is made on it.
        first = layer == 0
        fit = _fit(m, m.weights[:, :, layer], 0.0 if first else -0.5, conf, "rate" if first else "bound")
        f.weight_fits.append(fit)
        if not first:
            shape = "n_L × n" if layer == depth - 1 else "n × n"
            conv = fit_convergence(m.widths, m.weights[:, :, layer], conf)
            f.convergence.append(conv)
            f.claims.append(convergence_claim(
                f"Lemma 1, layer {layer + 1} ({shape}): sup_t ‖W(t) − W(0)‖_op/√n_l → 0", conv))
            f.claims.append(slope_claim(
                f"{LEE}: layer {layer + 1} sup_t ‖W(t) − W(0)‖_op/√n_l = O(n^-1/2)", fit))
        f.weight_series.append(RateSeries(f"W layer {layer + 1}" + (" (n × n₀; slope 0 expected)" if first else ""),
                                          m.widths, m.weights[:, :, layer], fit))
    for layer in range(depth - 1):
        fit = _fit(m, m.preactivations[:, :, layer], -0.5, conf, "bound")
        f.act_fits.append(fit)
        f.post_fits.append(_fit(m, m.activations[:, :, layer], -0.5, conf, "bound"))
        conv = fit_convergence(m.widths, m.preactivations[:, :, layer], conf)
        f.convergence.append(conv)
        f.claims.append(convergence_claim(f"Lemma 1 (proof), hidden layer {layer + 1}: sup_t ‖a~(t) − a~(0)‖_F/"
                                          "‖a~(0)‖_F → 0 (pre-activations)", conv))
        f.claims.append(slope_claim(f"{LEE}: hidden layer {layer + 1} pre-activations sup_t ‖a~(t) − a~(0)‖_F/"
                                    "‖a~(0)‖_F = O(n^-1/2)", fit))
        f.act_series.append(RateSeries(f"a~ hidden layer {layer + 1}", m.widths, m.preactivations[:, :, layer], fit))
    return f


def _lemma1_text(m: SweepMeasurements, data: Dataset, f: _LemmaFits) -> list[str]:
    """What is measured, why the first layer is apart, and which quantities miss Lee et al.'s rate."""
    text = [
        "Per dense layer l (weight W(l) of shape fan-out × fan-in n_l, entries N(0, 1), scaled by σ_w/√n_l in "
        "the forward pass): sup over the recorded steps of ‖W(l)(t) − W(l)(0)‖_op/√n_l. Per hidden layer: the "
        "relative change ‖a~(t) − a~(0)‖_F/‖a~(0)‖_F of its pre-activations on the training points, the quantity "
        "the lemma's proof bounds (proportional to ‖(a~(t) − a~(0))/√n‖_p_in, since ‖a~(0)‖_F ≈ √(N n) × const); "
        "the post-activations a(l) = σ(a~(l)) are in the table as an extra. The lemma: these vanish as n grows "
        "(l ≥ 2 for the weights); the O(n^-1/2) rate is Lee et al.'s (2019), compared separately.",
        f"The first layer (fan-in n₀ = {data.x.shape[1]}, which does not grow) is outside the lemma: its weights move "
        f"by O(1) in operator norm (fitted slope {f.weight_fits[0].describe()}, against 0), and each hidden unit's "
        "share of that movement is what makes the activations above it move by O(n^-1/2)."]
    slow = [c.statement.split(":")[1].strip().split(" sup_t")[0] for c in f.claims
            if c.statement.startswith(LEE) and c.verdict == NOT_BORNE_OUT]
    narrow_cost, wide_cost = float(m.final_loss[0].mean()), float(m.final_loss[-1].mean())
    if slow:
        text.append(
            f"Lee et al.'s n^-1/2 rate is not reached over these widths for: {', '.join(slow)} (the paper itself "
            "claims no rate: see the convergence claims above). Such a quantity vanishes more slowly than n^-1/2 "
            "over this range; a slope fitted over a finite range also carries finite-width corrections, and this "
            "run does not separate the two."
            + (f" One such correction is visible: the narrowest networks end training with a higher cost "
               f"({narrow_cost:.3g} against {wide_cost:.3g} at the widest): they move their functions less far in "
               "the same time." if narrow_cost > wide_cost else ""))
    return text


def _lemma1_table(m: SweepMeasurements) -> Table:
    """Per width, the mean over seeds of every layer's weight movement and activation changes."""
    depth = m.weights.shape[2]
    series = [("W layer " + str(i + 1), m.weights[:, :, i]) for i in range(depth)] + \
             [("a~ layer " + str(i + 1), m.preactivations[:, :, i]) for i in range(depth - 1)] + \
             [("a layer " + str(i + 1) + " (post)", m.activations[:, :, i]) for i in range(depth - 1)]
    return Table("Measured per width (mean over seeds)", ["width n"] + [name for name, _ in series],
                 [[int(w)] + [float(v[wi].mean()) for _, v in series] for wi, w in enumerate(m.widths.tolist())])


def _lemma1(m: SweepMeasurements, settings: SweepSettings, data: Dataset, prefix: str,
            common: dict[str, Any]) -> tuple[Section, list[Panel]]:
    """Lemma 1's section (weights and hidden activations during training) and its two rates panels."""
    f = _lemma1_fits(m, settings.confidence)
    section = Section(
        f"{prefix}lemma1", "Lemma 1: weights and hidden activations barely move", _lemma1_text(m, data, f),
        common, f.claims, [_lemma1_table(m)],
        [], {"weights": m.weights, "preactivations": m.preactivations, "activations": m.activations,
             "fits_weights": [fit.as_dict() for fit in f.weight_fits],
             "fits_preactivations": [fit.as_dict() for fit in f.act_fits],
             "fits_activations": [fit.as_dict() for fit in f.post_fits],
             "convergence": [fit.as_dict() for fit in f.convergence]})
    return section, [("Lemma 1: sup_t ‖ΔW(l)‖_op / √n_l", "movement", f.weight_series),
                     ("Lemma 1: sup_t ‖Δa~(l)‖_F / ‖a~(l)‖_F", "relative movement", f.act_series)]


# -- one section and one figure for all the rates ------------------------------------------

def _rates(detailed: list[Section], panels: list[Panel], settings: SweepSettings, data: Dataset, out: Path,
           prefix: str, common: dict[str, Any]) -> Section:
    """The summary section: every statement's rates in one figure and one table (`sweep_summary_table`)."""
    fig_path = out / f"{prefix}rates.png"
    figure_rates(panels, fig_path, f"Convergence rates over widths ({settings.network.describe()}, {data.name} data, "
                                   f"{settings.seeds} seeds)")
    return Section(
        f"{prefix}rates", "Convergence rates of the appendix's statements",
        [f"Each distance is measured for widths {common['widths']} with {settings.seeds} seeds each and fitted as "
         "log d = a + b log n by least squares over all (width, seed) pairs; the slope's standard error comes from "
         f"the residuals and its {100 * settings.confidence:g}% interval from Student's t.",
         "The paper's claims are limits, so each statement is first judged on that: the quantity falls with "
         "width, significantly (the slope's interval lies below 0), and the local slopes between successive "
         "widths trend to or below -1/2 as the width grows (a quantity tending to a non-zero limit would show them "
         "flattening to 0). The n^-1/2 rate is a further claim (Lee et al., 2019, 'Wide neural networks of any "
         "depth evolve as linear models under gradient descent'); it is compared separately, in the rows labelled "
         "with their name.",
         "Two kinds of rate prediction. An exact rate (fluctuations at initialization, of order n^-1/2 by the central "
         "limit theorem) is borne out when the interval contains the predicted slope and excludes 0, inconclusive "
         "when it contains both, and not borne out when it excludes the prediction. A bound (the O(n^-1/2) of "
         "Theorem 2 and Lemma 1, from Grönwall's inequality) only says the quantity vanishes at least that fast: "
         "it is borne out when the interval lies below 0 and not entirely above the predicted slope (a steeper "
         "slope is noted as faster than the bound), inconclusive when the interval contains 0, and not borne out "
         "when the whole interval lies above the predicted slope."],
        common, [], [sweep_summary_table(detailed)],
        [Figure(fig_path, "Every seed is a dot, the per-width geometric mean a circle; solid lines are the fitted "
                          "power laws, dotted lines the predicted slopes drawn through the data's centre.")], {})


def sweep_summary_table(sections: list[Section]) -> Table:
    """The measured slopes of every rate claim, for the top of the report."""
    rows = []
    for section in sections:
        for claim in section.claims:
            if claim.theory.startswith(("slope", "→ 0")):  # slope claims (tests of distributions are not slopes)
                rows.append([claim.statement, claim.measured, claim.theory, claim.verdict])
    return Table("Measured slopes: the paper's convergence claims, and the n^-1/2 rate of Lee et al. (2019)",
                 ["quantity", "fitted slope ± se (interval)", "theory", "verdict"], rows)
