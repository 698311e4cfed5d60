"""Figures of the paper's experiments and of the convergence rates (matplotlib, imported lazily).

Figures are drawn with matplotlib's object interface (``matplotlib.figure.Figure``, rendered by
Agg), so nothing touches pyplot's global state or the user's backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .rates import SlopeFit

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
THEORY = "black"


def _color_of(index: int) -> str:
    """The index-th colour of the palette, cycling."""
    return COLORS[index % len(COLORS)]


def new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1, *, top: float = 0.86,
               wspace: float = 0.28, hspace: float = 0.45) -> tuple[Any, Any]:
    """(figure, axes array) without pyplot. Margins are fixed (constrained layout costs seconds
    per figure); ``top`` leaves room for the suptitle."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("figures need matplotlib: pip install 'torchntk[plot]'.") from exc
    fig = Figure(figsize=(width, height), dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.subplots_adjust(left=0.07 if ncols > 1 else 0.09, right=0.98, bottom=0.12 if nrows == 1 else 0.08,
                        top=top, wspace=wspace, hspace=hspace)
    return fig, axes


def width_axis(ax: Any, widths: np.ndarray) -> None:
    """A log-scale width axis ticked at the measured widths, labelled as plain numbers."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([float(w) for w in widths]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{int(w):,}" for w in widths])
    ax.set_xlabel("hidden width n")


def save(fig: Any, path: Path) -> Path:
    """Write a PNG (no timestamp in the metadata, so the same data give the same file), marked as
    torchntk's so that a rerun may replace it; another program's file of that name is refused."""
    from .._outputs import PNG_SOFTWARE, check_replaceable

    path = Path(path)
    check_replaceable(path.parent, [path.name])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": PNG_SOFTWARE})
    return path


def _angle_axis(ax: Any) -> None:
    ax.set_xlim(-np.pi, np.pi)
    ax.set_xticks([-np.pi, -np.pi / 2, 0, np.pi / 2, np.pi], ["-π", "-π/2", "0", "π/2", "π"])
    ax.set_xlabel("angle γ of x = (cos γ, sin γ)")
    ax.grid(alpha=0.3)


def figure_ntk(angles: np.ndarray, theory: np.ndarray, curves: dict[int, dict[str, np.ndarray]], steps: int,
               lr: float, path: Path, depth: int, activation: str = "relu") -> Path:
    """Figure 1: Theta(x0, x(γ)) at initialization and after training, beside the limit.

    curves[width] = {"init": (S, G), "trained": (S, G)}, one row per initialization.
    """
    fig, axes = new_figure(12, 4.8, ncols=2, top=0.86)
    titles = ("at initialization (t = 0)", f"after {steps} steps, lr {lr:g} (t = {steps * lr:g})")
    for ax, key, title in zip(axes[0], ("init", "trained"), titles, strict=True):
        for i, (width, curve) in enumerate(curves.items()):
            color = _color_of(i)
            for s, row in enumerate(curve[key]):
                ax.plot(angles, row, color=color, lw=0.8, alpha=0.55,
                        label=f"width n = {width:,} ({len(curve[key])} inits)" if s == 0 else None)
        ax.plot(angles, theory, color=THEORY, lw=2.2, label=f"limit Θ({depth}) (n = ∞)")
        _angle_axis(ax)
        ax.set_ylabel("NTK Θ(x0, x),  x0 = (1, 0)")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper right")
    lows = [min(c["init"].min(), c["trained"].min()) for c in curves.values()] + [theory.min()]
    highs = [max(c["init"].max(), c["trained"].max()) for c in curves.values()] + [theory.max()]
    for ax in axes[0]:
        ax.set_ylim(min(lows) - 0.05 * np.ptp([min(lows), max(highs)]), max(highs) * 1.08)
    fig.suptitle(f"Figure 1: convergence of the NTK (depth {depth}, {activation})")
    return save(fig, path)


def figure_regression(angles: np.ndarray, curves: dict[int, np.ndarray], gp_mean: np.ndarray, gp_std: np.ndarray,
                      train_angles: np.ndarray, train_targets: np.ndarray, path: Path, depth: int, steps: int,
                      z90: float) -> Path:
    """Figure 2: trained networks on the circle beside the limit Gaussian's percentiles at t = inf.

    curves[width]: (S, G) functions after training; gp_mean, gp_std: (G,).
    """
    fig, axes = new_figure(11.5, 5, top=0.92)
    fig.subplots_adjust(right=0.72)  # the legend sits to the right of the axes, off the curves
    ax = axes[0, 0]
    for c, (width, rows) in enumerate(curves.items()):
        color = _color_of(c)
        for s, row in enumerate(rows):
            ax.plot(angles, row, color=color, lw=0.8, alpha=0.6,
                    label=f"width n = {width:,} ({len(rows)} inits)" if s == 0 else None)
    ax.plot(angles, gp_mean, color=THEORY, lw=2, label="n = ∞, t = ∞: 50th percentile")
    for sign, label in ((1, "n = ∞, t = ∞: 10th and 90th percentiles"), (-1, None)):
        ax.plot(angles, gp_mean + sign * z90 * gp_std, color=THEORY, lw=1.5, ls="--", label=label)
    ax.scatter(train_angles, train_targets, s=60, color="gold", edgecolor="black", zorder=5,
               label=f"{len(train_angles)} training points")
    _angle_axis(ax)
    ax.set_ylabel("f(x)")
    ax.set_title(f"Figure 2: trained networks ({steps} steps) vs the infinite-width Gaussian (depth {depth})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return save(fig, path)


def figure_pca(coords: np.ndarray, labels: np.ndarray | None, eigenvalues: np.ndarray, times: np.ndarray,
               runs: dict[int, list[dict[str, np.ndarray]]], theory_g: np.ndarray, path: Path, depth: int,
               data_name: str, activation: str = "relu") -> Path:
    """Figure 3: (a) data in the 2nd/3rd kernel principal components, (b) the part h_t of
    f_t - f* orthogonal to f(2), (c) the component g_t along f(2) beside 0.5 exp(-lambda_2 t).

    runs[width] = [{"g": (T,), "h": (T,)} per trial]; theory_g: (T,), the limit |g_t|.
    """
    fig, axes = new_figure(16, 4.8, ncols=3, wspace=0.3)
    ax = axes[0, 0]
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=8, color=COLORS[0])
    else:
        points = ax.scatter(coords[:, 0], coords[:, 1], s=9, c=labels, cmap="tab10", vmin=-0.5, vmax=9.5)
        bar = fig.colorbar(points, ax=ax, ticks=range(10))
        bar.set_label("digit")
    ax.set_xlabel(f"f(2)(x)  (λ2 = {eigenvalues[1]:.3g})")
    ax.set_ylabel(f"f(3)(x)  (λ3 = {eigenvalues[2]:.3g})")
    ax.set_title(f"(a) {len(coords)} {data_name} digits in kernel PCs 2, 3")
    for c, (width, trials) in enumerate(runs.items()):
        color = _color_of(c)
        for i, run in enumerate(trials):
            label = f"width n = {width:,}" if i == 0 else None
            axes[0, 1].plot(times, run["h"], color=color, lw=1.2, alpha=0.85, label=label)
            axes[0, 2].plot(times, np.abs(run["g"]), color=color, lw=1.2, alpha=0.85, label=label)
    axes[0, 1].axhline(0, color=THEORY, lw=2, label="n = ∞: h_t = 0")
    axes[0, 1].set_ylabel("‖h_t‖, part of f_t − f* orthogonal to f(2)")
    axes[0, 1].set_title("(b) deviation from the straight line")
    axes[0, 2].plot(times, theory_g, color=THEORY, lw=2.2, ls="--", label="n = ∞: 0.5 (1 − η λ2)^k ≈ 0.5 e^(−λ2 t)")
    axes[0, 2].set_ylabel("|g_t|, component of f_t − f* along f(2)")
    axes[0, 2].set_title("(c) convergence along the 2nd principal component")
    for ax in axes[0, 1:]:
        ax.set_xlabel("time t = learning rate × steps")
        ax.grid(alpha=0.3)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.35 * (high - low))  # headroom so the legend covers no curve
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Figure 3: kernel principal components (depth {depth}, {activation}); "
                 f"λ1, λ2, λ3 = {eigenvalues[0]:.4g}, {eigenvalues[1]:.4g}, {eigenvalues[2]:.4g}")
    return save(fig, path)


@dataclass
class RateSeries:
    """One measured quantity over a width sweep: values (W, S) and their fitted slope."""

    label: str
    widths: np.ndarray
    values: np.ndarray
    fit: SlopeFit | None


def figure_rates(panels: list[tuple[str, str, list[RateSeries]]], path: Path, title: str) -> Path:
    """Log-log panels of measured distances against width: every seed as a dot, the per-width
    geometric mean as a marker, the fitted power law (solid) and the predicted slope (dotted)
    drawn through the geometric mean of the data.

    panels: [(title, y label, [RateSeries, ...]), ...].
    """
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(5.2 * ncols, 4.2 * nrows, ncols=ncols, nrows=nrows, top=0.92 if nrows > 1 else 0.86)
    flat = axes.reshape(-1)
    for ax, (panel_title, ylabel, series) in zip(flat, panels, strict=False):  # spare axes are hidden below
        for c, s in enumerate(series):
            color = _color_of(c)
            widths = np.asarray(s.widths, dtype=np.float64)
            vals = np.asarray(s.values, dtype=np.float64)
            jitter = widths[:, None] * np.ones_like(vals)
            ax.scatter(jitter.reshape(-1), vals.reshape(-1), s=9, color=color, alpha=0.35)
            geo = np.exp(np.log(vals).mean(axis=1))
            label = s.label if s.fit is None else f"{s.label}: slope {s.fit.slope:.2f} ± {s.fit.stderr:.2f}"
            ax.plot(widths, geo, "o", color=color, ms=5, label=label)
            if s.fit is not None:
                grid = np.geomspace(widths.min(), widths.max(), 50)
                ax.plot(grid, s.fit.line(grid), color=color, lw=1.5)
                centre_n = np.exp(np.log(widths).mean())
                centre_v = np.exp(np.log(vals).mean())
                ax.plot(grid, centre_v * (grid / centre_n) ** s.fit.predicted, color=color, lw=1.2, ls=":")
        ax.plot([], [], color="gray", ls=":", label="predicted slope (through the data's centre)")
        ax.set_yscale("log")
        width_axis(ax, np.asarray(series[0].widths))
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return save(fig, path)


def figure_gaussianity(widths: np.ndarray, whitened: np.ndarray, cov_error: np.ndarray, noise_95: float,
                       path: Path) -> Path:
    """Proposition 1: normal quantile plots of whitened outputs (narrowest and widest width) and
    the covariance error against its Monte Carlo noise level.

    whitened: (W, ...) whitened outputs per width; cov_error: (W,).
    """
    from scipy import stats

    fig, axes = new_figure(11, 4.6, ncols=2, top=0.9)
    ax = axes[0, 0]
    for c, wi in enumerate(sorted({0, len(widths) - 1})):
        color = _color_of(c)
        z = np.sort(np.asarray(whitened[wi]).reshape(-1))
        probs = (np.arange(z.size) + 0.5) / z.size
        ax.plot(stats.norm.ppf(probs), z, ".", ms=2.5, color=color, label=f"width n = {int(widths[wi]):,}")
    lim = 4.0
    ax.plot([-lim, lim], [-lim, lim], color=THEORY, lw=1.5, label="N(0, 1) (n = ∞)")
    ax.set_xlabel("standard normal quantile")
    ax.set_ylabel("whitened output quantile  z = Σ(L)^-1/2 f")
    ax.set_title("Gaussianity of the outputs at initialization")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(widths, cov_error, "o-", color=COLORS[0], label="‖Ĉ − Σ(L)‖ / ‖Σ(L)‖ measured")
    ax.axhline(noise_95, color=THEORY, ls="--", label="95% Monte Carlo noise of exact N(0, Σ(L)) samples")
    width_axis(ax, widths)
    ax.set_ylabel("relative covariance error")
    ax.set_ylim(0, max(noise_95, float(np.max(cov_error))) * 1.3)
    ax.set_title("Output covariance over initializations vs Σ(L)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
