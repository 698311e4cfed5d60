"""The appendix's statements measured over a sweep of widths: Proposition 1, Theorems 1 and 2, Lemma 1.

For each width n and seed s a network of the description is drawn, measured at initialization
and trained by full-batch gradient descent (`torchntk.training.train`). The distances the
statements say vanish are fitted as d ~ n^b on log-log axes (`rates.fit_loglog`):

- Proposition 1 (outputs -> iid GP(0, Sigma(L))). Its proof's law of large numbers: the output
  covariance given the last hidden layer, Sigma~ = sigma_w^2 a a^T / n + beta^2, is within
  O(n^-1/2) of Sigma(L). Over many seeds: the outputs' second moment against Sigma(L) (judged
  against the Monte Carlo noise of exact Gaussian samples of the same size), a Kolmogorov-
  Smirnov test of the whitened outputs against N(0, 1), the outputs' excess kurtosis (exactly
  3 Var(Sigma~(x, x)) / E[Sigma~(x, x)]^2, since f is Gaussian given the last hidden layer;
  predicted O(1/n)), and correlation tests between two output units.
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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .config import SweepSettings, derive_seed
from .data import Dataset
from .measures import (
    conditional_nngp,
    covariance_error,
    kernel_movement,
    ntk_distance,
    null_covariance_errors,
    op_norm,
    whiten,
)
from .pieces import PieceStore
from .progress import ProgressLike, Silent
from .rates import (
    BORNE_OUT,
    LEE,
    NOT_BORNE_OUT,
    NOT_CLAIMED,
    SlopeFit,
    convergence_claim,
    fit_convergence,
    fit_loglog,
    slope_claim,
)
from .results import Claim, Figure, Section, Table

ALPHA = 0.05
"""Significance level of the distribution tests."""
NULL_REPEATS = 400
"""Exact-Gaussian repeats that calibrate the covariance error's Monte Carlo noise."""


@dataclass
class SweepMeasurements:
    """Raw measurements of a width sweep; arrays are indexed [width, seed, ...].

    Attributes:
        widths: (W,).
        conditional: (W, S) ||Sigma~ - Sigma(L)||_op, the law of large numbers of Proposition 1.
        outputs: (W, G, k, N) initial outputs of G networks per width (G >= S; the first S are
            the trained ones).
        variances: (W, G, N) Sigma~(x_i, x_i) of those networks.
        ntk_init: (W, S) Theorem 1 distance.
        ntk_move: (W, S) Theorem 2 movement (sup over recorded steps).
        weights: (W, S, L) Lemma 1 per layer (sup over steps).
        activations: (W, S, L - 1) relative change of each hidden layer's post-activations a(l) (sup).
        preactivations: (W, S, L - 1) the same for the pre-activations a~(l), Lemma 1's quantity.
        final_loss: (W, S) the cost after the last step.
        nngp, ntk: the limits Sigma(L), Theta(L) on the data, (N, N).
    """

    widths: np.ndarray
    conditional: np.ndarray
    outputs: np.ndarray
    variances: np.ndarray
    ntk_init: np.ndarray
    ntk_move: np.ndarray
    weights: np.ndarray
    activations: np.ndarray
    preactivations: np.ndarray
    final_loss: np.ndarray
    nngp: np.ndarray
    ntk: np.ndarray


MIN_GROUP = 2
"""Fewest initializations per group of the excess kurtosis (a variance needs two)."""


def excess_kurtosis(variances: np.ndarray) -> np.ndarray:
    """The outputs' exact excess kurtosis per width, 3 Var(Σ~(x,x)) / E[Σ~(x,x)]², averaged over x.

    ``variances``: (W, G, N) Σ~(x_i, x_i) of G networks per width; moments over the G. Returns (W,).
    Given the last hidden layer, f(x) ~ N(0, Σ~(x,x)), so its kurtosis is that of a Gaussian mixed
    over Σ~."""
    return (3 * variances.var(axis=1, ddof=1) / variances.mean(axis=1) ** 2).mean(axis=1)


def _kurtosis_groups(count: int) -> int:
    """Ten groups of initializations when there are 20 or more, else as many as give two each."""
    return 10 if count >= 10 * MIN_GROUP else max(2, count // MIN_GROUP)


def measure_sweep(settings: SweepSettings, data: Dataset, seed: int, progress: ProgressLike | None = None,
                  label: str = "width sweep", store: str | Path | None = None) -> SweepMeasurements:
    """Draw, measure and train the sweep's networks (see the module docstring).

    Args:
        settings, data, seed: what to measure; every network's seed derives from ``seed``, its
            width and its index, so the pieces do not depend on the order they are computed in.
        progress: progress bars (None: silent).
        label: the bar's description.
        store: a folder that keeps each finished network's measurements (one .npz per width and
            network, written atomically). A rerun with the same settings, data and seed loads them
            and computes only the missing ones, so an interrupted sweep continues where it stopped;
            pieces of other settings are recomputed and overwritten.
    """
    from ..training import train

    net_settings = settings.network
    if net_settings.depth < 2:
        raise ValueError("the width sweep needs depth >= 2: a depth-1 network is a random affine map with no "
                         "hidden width, whose NTK equals its limit exactly.")
    if len(set(settings.widths)) < 3 or settings.seeds < 2:
        raise ValueError(f"a width sweep needs at least 3 distinct widths and 2 seeds to fit a slope with an "
                         f"uncertainty; got widths {settings.widths} and {settings.seeds} seed(s).")
    if settings.steps < 1:
        raise ValueError(f"steps must be >= 1 (Theorem 2 and Lemma 1 measure movement during training); got "
                         f"{settings.steps}.")
    if settings.gaussian_seeds < max(settings.seeds, 2 * MIN_GROUP):
        raise ValueError(f"gaussian_seeds ({settings.gaussian_seeds}) must be at least seeds ({settings.seeds}) and "
                         f"at least {2 * MIN_GROUP} (the excess kurtosis is judged over groups of initializations).")
    progress = progress or Silent()
    spec = net_settings.spec()
    x = torch.as_tensor(data.x, dtype=torch.float32)
    k = settings.out_features
    y = torch.as_tensor(np.repeat(data.y[:, :1], k, axis=1), dtype=torch.float32)
    nngp, ntk = (t.numpy() for t in spec.kernels(torch.as_tensor(data.x, dtype=torch.float64)))
    _check_data_and_lr(nngp, ntk, settings.lr)
    widths = np.asarray(settings.widths, dtype=np.int64)
    w_count, s_count, g_count, depth = len(widths), settings.seeds, settings.gaussian_seeds, net_settings.depth
    n = data.x.shape[0]
    m = SweepMeasurements(widths, np.zeros((w_count, s_count)), np.zeros((w_count, g_count, k, n)),
                          np.zeros((w_count, g_count, n)), np.zeros((w_count, s_count)), np.zeros((w_count, s_count)),
                          np.zeros((w_count, s_count, depth)), np.zeros((w_count, s_count, depth - 1)),
                          np.zeros((w_count, s_count, depth - 1)), np.zeros((w_count, s_count)), nngp, ntk)
    task = progress.task(label, int(w_count * (g_count + 4 * s_count)))
    pieces = PieceStore(store, {"settings": asdict(settings), "seed": seed}, (data.x, data.y))
    for wi, width in enumerate(widths.tolist()):
        for gi in range(g_count):
            saved = pieces.load(f"width{width}-net{gi}")
            if saved is not None:
                m.outputs[wi, gi], m.variances[wi, gi] = saved["outputs"], saved["variances"]
                if gi < s_count:
                    for name in _TRAINED:
                        getattr(m, name)[wi, gi] = saved[name]
                task.advance(1 if gi >= s_count else 5)
                continue
            net = spec.network(width=width, out_features=k, seed=derive_seed(seed, "sweep", width, gi),
                               in_features=data.x.shape[1])
            with torch.no_grad():
                f, hidden = net(x, return_hidden=True)
            m.outputs[wi, gi] = f.T.double().numpy()
            sigma_tilde = conditional_nngp(hidden["activations"][-1], net_settings.weight_std, net_settings.bias_std)
            m.variances[wi, gi] = sigma_tilde.diagonal().numpy()
            task.advance()
            if gi >= s_count:
                pieces.save(f"width{width}-net{gi}", outputs=m.outputs[wi, gi], variances=m.variances[wi, gi])
                continue
            m.conditional[wi, gi] = op_norm(sigma_tilde.numpy() - nngp)
            run = train(net, x, y, lr=settings.lr, steps=settings.steps, record_every=settings.record_every,
                        record=("ntk", "weights", "activations"), ntk_outputs="full")
            m.ntk_init[wi, gi] = ntk_distance(run.ntk[0], ntk)
            m.ntk_move[wi, gi] = max(kernel_movement(r, run.ntk[0]) for r in run.ntk[1:])
            m.weights[wi, gi] = run.weight_change.max(axis=0)
            m.activations[wi, gi] = run.activation_change.max(axis=0)
            m.preactivations[wi, gi] = run.preactivation_change.max(axis=0)
            m.final_loss[wi, gi] = run.loss[-1]
            pieces.save(f"width{width}-net{gi}", outputs=m.outputs[wi, gi], variances=m.variances[wi, gi],
                        **{name: getattr(m, name)[wi, gi] for name in _TRAINED})
            task.advance(4)
    return m


_TRAINED = ("conditional", "ntk_init", "ntk_move", "weights", "activations", "preactivations", "final_loss")
"""The measurements of a trained network, per (width, seed)."""


def _check_data_and_lr(nngp: np.ndarray, ntk: np.ndarray, lr: float) -> None:
    """Fail before hours of training, not after: the Gaussianity tests whiten with Sigma(L), and
    gradient descent with the limit kernel diverges for lr >= 2 N / lambda_max(Theta(X, X))."""
    try:
        np.linalg.cholesky(nngp)
    except np.linalg.LinAlgError:
        raise ValueError("Sigma(L) on these data points is singular (duplicate points, or points too close for this "
                         "depth): use distinct points, fewer of them, or a smaller depth.") from None
    limit = 2 * ntk.shape[0] / float(np.linalg.eigvalsh(ntk)[-1])
    if lr >= limit:
        raise ValueError(f"learning rate {lr:g} is too large for these data: gradient descent with the limiting NTK "
                         f"diverges for lr >= 2 N / lambda_max(Theta(X, X)) = {limit:.3g}; use e.g. {limit / 4:.3g}.")


# -- analysis: fits, tests, verdicts -------------------------------------------------------

def _fit(m: SweepMeasurements, values: np.ndarray, predicted: float, confidence: float, kind: str = "rate") -> SlopeFit:
    return fit_loglog(m.widths, values, predicted, confidence, kind)


def _rate_rows(m: SweepMeasurements, series: list[tuple[str, np.ndarray]]) -> list[list]:
    rows = []
    for wi, width in enumerate(m.widths.tolist()):
        row: list = [int(width)]
        for _, values in series:
            row += [float(values[wi].mean()), float(values[wi].std(ddof=1)) if values.shape[1] > 1 else 0.0]
        rows.append(row)
    return rows


def _rate_columns(series: list[tuple[str, np.ndarray]]) -> list[str]:
    columns = ["width n"]
    for name, _ in series:
        columns += [f"{name}: mean", "sd over seeds"]
    return columns


def analyse_sweep(m: SweepMeasurements, settings: SweepSettings, data: Dataset, seed: int, out: Path,
                  prefix: str = "") -> list[Section]:
    """Turn the measurements into report sections with claims, tables and figures in ``out``."""
    from scipy import stats

    from .plots import RateSeries, figure_gaussianity, figure_rates

    conf = settings.confidence
    net = settings.network
    depth = net.depth
    common = {"network": net.describe(), "widths": ", ".join(f"{w:,}" for w in m.widths.tolist()),
              "seeds per width (trained)": settings.seeds, "data": data.source, "points N": data.x.shape[0],
              "outputs n_L": settings.out_features, "learning rate": settings.lr, "steps": settings.steps,
              "time T = lr × steps": settings.lr * settings.steps, "NTK recorded every": settings.record_every,
              "networks": "float32, NTK parameterization; limits in float64"}
    theta_norm = op_norm(m.ntk)
    sigma_norm = op_norm(m.nngp)

    # Proposition 1 ------------------------------------------------------------------------
    g_count, k, n = m.outputs.shape[1:]
    cond_fit = _fit(m, m.conditional, -0.5, conf)
    null = null_covariance_errors(m.nngp, g_count * k, NULL_REPEATS, derive_seed(seed, "null", len(m.widths)))
    null_q = float(np.quantile(null, 0.95))
    z = np.stack([whiten(m.outputs[wi], m.nngp) for wi in range(len(m.widths))])  # (W, G, k, N)
    cov_err = np.array([covariance_error(m.outputs[wi].reshape(-1, n), m.nngp) for wi in range(len(m.widths))])
    ks = [stats.kstest(z[wi].reshape(-1), "norm") for wi in range(len(m.widths))]
    kurt_sample = np.array([stats.kurtosis(z[wi].reshape(-1)) for wi in range(len(m.widths))])
    kurt_se = np.sqrt(24.0 / z[0].size)
    v = m.variances
    kurt_exact = excess_kurtosis(v)  # (W,)
    # Replicates whose scatter is the sampling noise of the estimate: one value per width would leave
    # the fit's interval to the residuals about the line alone (finite-width curvature), however few
    # initializations each point rests on.
    kurt_groups = np.stack([excess_kurtosis(part) for part in np.array_split(v, _kurtosis_groups(v.shape[1]), axis=1)],
                           axis=1)  # (W, groups)
    kurt_fit = fit_loglog(m.widths, kurt_groups, -1.0, conf)
    kurt_conv = fit_convergence(m.widths, kurt_groups, conf)
    if k >= 2:
        lin = [stats.pearsonr(z[wi, :, 0].reshape(-1), z[wi, :, 1].reshape(-1)) for wi in range(len(m.widths))]
        sq = [stats.pearsonr(z[wi, :, 0].reshape(-1) ** 2, z[wi, :, 1].reshape(-1) ** 2)
              for wi in range(len(m.widths))]
    top = len(m.widths) - 1
    widest = f"{m.widths[top]:,}"
    cond_conv = fit_convergence(m.widths, m.conditional, conf)
    prop_claims = [
        convergence_claim("Proposition 1 (proof): the output covariance given the last hidden layer, Σ~ = σ_w² a aᵀ/n "
                           "+ β², tends to Σ(L) in operator norm", cond_conv),
        slope_claim(f"{LEE}: ‖Σ~ − Σ(L)‖_op ~ n^-1/2 (central-limit fluctuations)", cond_fit),
        Claim(f"Proposition 1: over {g_count} initializations × {k} outputs, the outputs' covariance equals Σ(L) "
              f"(width {widest})",
              f"‖Ĉ − Σ‖/‖Σ‖ = {cov_err[top]:.4f}", "0 up to Monte Carlo noise",
              f"at most the 95th percentile ({null_q:.4f}) of the same error for {g_count * k} exact N(0, Σ(L)) "
              f"samples ({NULL_REPEATS} repeats)",
              BORNE_OUT if cov_err[top] <= null_q else NOT_BORNE_OUT),
        Claim(f"Proposition 1: the outputs are Gaussian (width {widest})",
              f"KS statistic {ks[top].statistic:.4f}, p = {ks[top].pvalue:.3g}",
              "whitened outputs Σ(L)^-1/2 f ~ N(0, I)",
              f"Kolmogorov-Smirnov test of the {z[top].size} whitened outputs against N(0, 1) not rejected at "
              f"level {ALPHA}", BORNE_OUT if ks[top].pvalue >= ALPHA else NOT_BORNE_OUT),
        convergence_claim("Proposition 1: the distance to a Gaussian vanishes: the outputs' excess kurtosis, "
                          "3 Var(Σ~(x,x)) / E[Σ~(x,x)]² (exact for a Gaussian given Σ~; moments over the "
                          f"initializations, in {kurt_groups.shape[1]} groups), → 0", kurt_conv),
        slope_claim(f"Leading-order {NOT_CLAIMED}: the excess kurtosis ~ 1/n (Var Σ~ = O(1/n) by the "
                    "law of large numbers over the last hidden layer)", kurt_fit),
    ]
    if k >= 2:
        ok = lin[top].pvalue >= ALPHA and sq[top].pvalue >= ALPHA
        prop_claims.append(Claim(
            f"Proposition 1: the output units are independent (width {widest})",
            f"corr(z1, z2) = {lin[top].statistic:.4f} (p = {lin[top].pvalue:.3g}); "
            f"corr(z1², z2²) = {sq[top].statistic:.4f} (p = {sq[top].pvalue:.3g})", "0 and 0",
            f"Pearson tests of no correlation between units 1 and 2, of the whitened outputs and of their squares, "
            f"both not rejected at level {ALPHA}", BORNE_OUT if ok else NOT_BORNE_OUT))
    # n times the kurtosis is flat where the 1/n rate holds; its standard error is over the groups.
    n_kurt = m.widths * kurt_groups.mean(axis=1)
    n_kurt_se = m.widths * kurt_groups.std(axis=1, ddof=1) / np.sqrt(kurt_groups.shape[1])
    prop_rows = []
    for wi, width in enumerate(m.widths.tolist()):
        row = [int(width), float(m.conditional[wi].mean()), float(cov_err[wi]), null_q, float(ks[wi].statistic),
               float(ks[wi].pvalue), float(kurt_sample[wi]), float(kurt_exact[wi]),
               f"{n_kurt[wi]:.1f} ± {n_kurt_se[wi]:.1f}"]
        if k >= 2:
            row += [float(lin[wi].statistic), float(lin[wi].pvalue), float(sq[wi].statistic), float(sq[wi].pvalue)]
        prop_rows.append(row)
    prop_columns = ["width n", "‖Σ~ − Σ‖_op (mean)", "‖Ĉ − Σ‖/‖Σ‖", "noise 95%", "KS stat", "KS p",
                    f"sample excess kurtosis (± {kurt_se:.2f})", "exact excess kurtosis",
                    f"n × exact kurtosis (± s.e. over {kurt_groups.shape[1]} groups)"]
    if k >= 2:
        prop_columns += ["corr(z1,z2)", "p", "corr(z1²,z2²)", "p "]
    rejected = [f"{int(w):,}" for w, r in zip(m.widths.tolist(), ks, strict=True) if r.pvalue < ALPHA]
    prop_notes = [f"The KS test rejects Gaussianity at level {ALPHA} at width(s) {', '.join(rejected)}."
                  if rejected else f"The KS test rejects Gaussianity at no width (level {ALPHA})."]
    if k >= 2:
        dependent = [f"{int(w):,}" for w, r in zip(m.widths.tolist(), sq, strict=True) if r.pvalue < ALPHA]
        prop_notes.append(f"The squares of the two units are correlated (p < {ALPHA}) at width(s) "
                          f"{', '.join(dependent)}: the dependence through their shared covariance Σ~."
                          if dependent else "The squares of the two units are uncorrelated at every width.")
    fig_gauss = out / f"{prefix}prop1_gaussian.png"
    figure_gaussianity(m.widths, z, cov_err, null_q, fig_gauss)
    prop = Section(
        f"{prefix}prop1", "Proposition 1: outputs at initialization are iid Gaussian processes of covariance Σ(L)",
        [f"{g_count} networks per width (the first {settings.seeds} are also used below), {k} output units each, "
         f"on the {n} data points. ‖Σ(L)‖_op = {sigma_norm:.4g}. Outputs are whitened with the limit, "
         "z = C⁻¹f where Σ(L) = CCᵀ, which makes them iid N(0, 1) in the limit; the tests are applied to z.",
         "The finite-width output is exactly Gaussian given the last hidden layer, with covariance Σ~, so its "
         "non-Gaussianity is the spread of Σ~ over initializations: of order 1/n, too small for a KS test on a "
         "few thousand samples to see at moderate widths. The exact kurtosis column measures it directly; "
         "n times it is constant where the 1/n rate holds.",
         " ".join(prop_notes)],
        common | {"initializations per width (Gaussianity)": g_count}, prop_claims,
        [Table("Measured per width", prop_columns, prop_rows,
               "‖·‖_op is the top |eigenvalue| of the N×N difference divided by N; Ĉ is the second moment of the "
               "outputs over initializations and units; 'noise 95%' is what exact Gaussian samples of the same "
               "size give.")],
        [Figure(fig_gauss, "Left: quantiles of the whitened outputs against N(0, 1) for the narrowest and widest "
                           "networks (the diagonal is the limit). Right: the covariance error against the Monte "
                           "Carlo noise level of exact Gaussian samples.")],
        {"conditional": m.conditional, "covariance_error": cov_err, "null_95": null_q,
         "ks_statistic": [r.statistic for r in ks], "ks_pvalue": [r.pvalue for r in ks],
         "kurtosis_sample": kurt_sample, "kurtosis_exact": kurt_exact, "fit_conditional": cond_fit.as_dict(),
         "convergence_conditional": cond_conv.as_dict(),
         "fit_kurtosis": kurt_fit.as_dict(), "kurtosis_groups": kurt_groups,
         "convergence_kurtosis": kurt_conv.as_dict()})

    # Theorem 1 ----------------------------------------------------------------------------
    t1_fit = _fit(m, m.ntk_init, -0.5, conf)
    t1_conv = fit_convergence(m.widths, m.ntk_init, conf)
    rel = m.ntk_init / theta_norm
    thm1 = Section(
        f"{prefix}theorem1", "Theorem 1: the NTK at initialization tends to Θ(L) ⊗ Id",
        [f"Distance ‖Θ_emp(0) − Θ(L) ⊗ Id_{k}‖_op on the {n} points: the top |eigenvalue| of the "
         f"({n}·{k})×({n}·{k}) difference Gram matrix divided by N = {n} (the paper's operator norm on a finite "
         f"data set). ‖Θ(L)‖_op = {theta_norm:.4g}. The paper: convergence; the fluctuations at initialization are "
         "of order n^-1/2 by the central limit theorem (Lee et al., 2019), compared separately."],
        common, [convergence_claim("Theorem 1: ‖Θ_emp(0) − Θ(L) ⊗ Id‖_op → 0", t1_conv),
                 slope_claim(f"{LEE}: ‖Θ_emp(0) − Θ(L) ⊗ Id‖_op ~ n^-1/2", t1_fit)],
        [Table("Measured per width", _rate_columns([("distance", m.ntk_init), ("relative to ‖Θ(L)‖", rel)]),
               _rate_rows(m, [("distance", m.ntk_init), ("relative", rel)]))],
        [], {"distance": m.ntk_init, "fit": t1_fit.as_dict(), "convergence": t1_conv.as_dict(),
             "theta_op_norm": theta_norm})

    # Theorem 2 ----------------------------------------------------------------------------
    t2_fit = _fit(m, m.ntk_move, -0.5, conf, "bound")
    t2_conv = fit_convergence(m.widths, m.ntk_move, conf)
    t2_text = []
    if t2_fit.low <= -1.0 <= t2_fit.high:
        t2_text.append(f"The measured slope ({t2_fit.slope:.2f}) is consistent with -1: in this run the NTK moves by "
                       "O(1/n), faster than the proof's O(n^-1/2) bound; a change of order 1/n is what later "
                       "perturbative analyses of wide networks predict (Dyer & Gur-Ari, 2019).")
    thm2 = Section(
        f"{prefix}theorem2", "Theorem 2: the NTK stays constant during training",
        [f"Movement sup_t ‖Θ_emp(t) − Θ_emp(0)‖_op over the {settings.steps // settings.record_every + 1} recorded "
         f"steps of gradient descent (lr {settings.lr:g}, {settings.steps} steps, time T = "
         f"{settings.lr * settings.steps:g}) on the least-squares cost C = (1/2N) Σ|f(x_i) − y_i|² with "
         f"the data's targets for each output ({data.source}). The paper: the movement vanishes as n grows "
         "(uniformly on [0, T]); the O(n^-1/2) bound is Lee et al.'s (2019), compared separately."
         + ("" if net.activation != "relu" else " (ReLU is not twice differentiable, as the theorem assumes; "
                                                  "the paper's experiments use it all the same.)"), *t2_text],
        common, [convergence_claim("Theorem 2: sup_t ‖Θ_emp(t) − Θ_emp(0)‖_op → 0", t2_conv),
                 slope_claim(f"{LEE}: sup_t ‖Θ_emp(t) − Θ_emp(0)‖_op = O(n^-1/2)", t2_fit)],
        [Table("Measured per width",
               _rate_columns([("movement", m.ntk_move), ("final cost", m.final_loss)]),
               _rate_rows(m, [("movement", m.ntk_move), ("final cost", m.final_loss)]),
               "The final cost shows how far training went in the fixed time T.")],
        [], {"movement": m.ntk_move, "final_loss": m.final_loss, "fit": t2_fit.as_dict(),
             "convergence": t2_conv.as_dict()})

    # Lemma 1 ------------------------------------------------------------------------------
    lemma_claims, weight_series, act_series = [], [], []
    weight_fits, act_fits, post_fits, lemma_conv = [], [], [], []
    for layer in range(depth):
        # The first layer's fan-in n0 does not grow: its weights move by O(1) in operator norm,
        # outside the lemma (l >= 1). Shown with slope 0 for comparison; no claim is made on it.
        first = layer == 0
        fit = _fit(m, m.weights[:, :, layer], 0.0 if first else -0.5, conf, "rate" if first else "bound")
        weight_fits.append(fit)
        if not first:
            shape = "n_L × n" if layer == depth - 1 else "n × n"
            conv = fit_convergence(m.widths, m.weights[:, :, layer], conf)
            lemma_conv.append(conv)
            lemma_claims.append(convergence_claim(
                f"Lemma 1, layer {layer + 1} ({shape}): sup_t ‖W(t) − W(0)‖_op/√n_l → 0", conv))
            lemma_claims.append(slope_claim(
                f"{LEE}: layer {layer + 1} sup_t ‖W(t) − W(0)‖_op/√n_l = O(n^-1/2)", fit))
        weight_series.append(RateSeries(f"W layer {layer + 1}" + (" (n × n₀; slope 0 expected)" if first else ""),
                                        m.widths, m.weights[:, :, layer], fit))
    for layer in range(depth - 1):
        fit = _fit(m, m.preactivations[:, :, layer], -0.5, conf, "bound")
        act_fits.append(fit)
        post_fits.append(_fit(m, m.activations[:, :, layer], -0.5, conf, "bound"))
        conv = fit_convergence(m.widths, m.preactivations[:, :, layer], conf)
        lemma_conv.append(conv)
        lemma_claims.append(convergence_claim(f"Lemma 1 (proof), hidden layer {layer + 1}: sup_t ‖a~(t) − a~(0)‖_F/"
                                               "‖a~(0)‖_F → 0 (pre-activations)", conv))
        lemma_claims.append(slope_claim(f"{LEE}: hidden layer {layer + 1} pre-activations sup_t ‖a~(t) − a~(0)‖_F/"
                                         "‖a~(0)‖_F = O(n^-1/2)", fit))
        act_series.append(RateSeries(f"a~ hidden layer {layer + 1}", m.widths, m.preactivations[:, :, layer], fit))
    lemma_table = [("W layer " + str(i + 1), m.weights[:, :, i]) for i in range(depth)] + \
                  [("a~ layer " + str(i + 1), m.preactivations[:, :, i]) for i in range(depth - 1)] + \
                  [("a layer " + str(i + 1) + " (post)", m.activations[:, :, i]) for i in range(depth - 1)]
    lemma_text = [
        "Per dense layer l (weight W(l) of shape fan-out × fan-in n_l, entries N(0, 1), scaled by σ_w/√n_l in "
        "the forward pass): sup over the recorded steps of ‖W(l)(t) − W(l)(0)‖_op/√n_l. Per hidden layer: the "
        "relative change ‖a~(t) − a~(0)‖_F/‖a~(0)‖_F of its pre-activations on the training points, the quantity "
        "the lemma's proof bounds (proportional to ‖(a~(t) − a~(0))/√n‖_p_in, since ‖a~(0)‖_F ≈ √(N n) × const); "
        "the post-activations a(l) = σ(a~(l)) are in the table as an extra. The lemma: these vanish as n grows "
        "(l ≥ 2 for the weights); the O(n^-1/2) rate is Lee et al.'s (2019), compared separately.",
        f"The first layer (fan-in n₀ = {data.x.shape[1]}, which does not grow) is outside the lemma: its weights move "
        f"by O(1) in operator norm (fitted slope {weight_fits[0].describe()}, against 0), and each hidden unit's "
        "share of that movement is what makes the activations above it move by O(n^-1/2)."]
    slow = [c.statement.split(":")[1].strip().split(" sup_t")[0] for c in lemma_claims
            if c.statement.startswith(LEE) and c.verdict == NOT_BORNE_OUT]
    narrow_cost, wide_cost = float(m.final_loss[0].mean()), float(m.final_loss[-1].mean())
    if slow:
        lemma_text.append(
            f"Lee et al.'s n^-1/2 rate is not reached over these widths for: {', '.join(slow)} (the paper itself "
            "claims no rate: see the convergence claims above). Such a quantity vanishes more slowly than n^-1/2 "
            "over this range; a slope fitted over a finite range also carries finite-width corrections, and this "
            "run does not separate the two."
            + (f" One such correction is visible: the narrowest networks end training with a higher cost "
               f"({narrow_cost:.3g} against {wide_cost:.3g} at the widest): they move their functions less far in "
               "the same time." if narrow_cost > wide_cost else ""))
    lemma = Section(
        f"{prefix}lemma1", "Lemma 1: weights and hidden activations barely move", lemma_text,
        common, lemma_claims,
        [Table("Measured per width (mean over seeds)", ["width n"] + [name for name, _ in lemma_table],
               [[int(w)] + [float(v[wi].mean()) for _, v in lemma_table] for wi, w in enumerate(m.widths.tolist())])],
        [], {"weights": m.weights, "preactivations": m.preactivations, "activations": m.activations,
             "fits_weights": [f.as_dict() for f in weight_fits], "fits_preactivations": [f.as_dict() for f in act_fits],
             "fits_activations": [f.as_dict() for f in post_fits],
             "convergence": [f.as_dict() for f in lemma_conv]})

    # One section and one figure for all the rates -----------------------------------------
    fig_path = out / f"{prefix}rates.png"
    figure_rates([
        ("Prop. 1: ‖Σ~ − Σ(L)‖_op", "distance", [RateSeries("Σ~ vs Σ(L)", m.widths, m.conditional, cond_fit)]),
        ("Prop. 1: excess kurtosis of f(x)", "3 Var Σ~ / (E Σ~)²",
         [RateSeries("exact kurtosis (groups of inits)", m.widths, kurt_groups, kurt_fit)]),
        ("Thm. 1: ‖Θ_emp(0) − Θ(L) ⊗ Id‖_op", "distance", [RateSeries("init", m.widths, m.ntk_init, t1_fit)]),
        ("Thm. 2: sup_t ‖Θ(t) − Θ(0)‖_op", "movement", [RateSeries("training", m.widths, m.ntk_move, t2_fit)]),
        ("Lemma 1: sup_t ‖ΔW(l)‖_op / √n_l", "movement", weight_series),
        ("Lemma 1: sup_t ‖Δa~(l)‖_F / ‖a~(l)‖_F", "relative movement", act_series),
    ], fig_path, f"Convergence rates over widths ({net.describe()}, {data.name} data, {settings.seeds} seeds)")
    detailed = [prop, thm1, thm2, lemma]
    rates = Section(
        f"{prefix}rates", "Convergence rates of the appendix's statements",
        [f"Each distance is measured for widths {common['widths']} with {settings.seeds} seeds each and fitted as "
         "log d = a + b log n by least squares over all (width, seed) pairs; the slope's standard error comes from "
         f"the residuals and its {100 * conf:g}% interval from Student's t.",
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
    return [rates, *detailed]


def sweep_summary_table(sections: list[Section]) -> Table:
    """The measured slopes of every rate claim, for the top of the report."""
    rows = []
    for section in sections:
        for claim in section.claims:
            if claim.theory.startswith(("slope", "→ 0")):  # slope claims (tests of distributions are not slopes)
                rows.append([claim.statement, claim.measured, claim.theory, claim.verdict])
    return Table("Measured slopes: the paper's convergence claims, and the n^-1/2 rate of Lee et al. (2019)",
                 ["quantity", "fitted slope ± se (interval)", "theory", "verdict"], rows)

