"""A wide network trains like its linearisation (Lee et al. 2019), measured over a width sweep.

For each width n and seed s the sweep's network f is copied; the copy and its first-order
Taylor expansion g = `torchntk.linearize`(f) are trained side by side by the same full-batch
gradient descent on the same data. The gap

    gap(n, s) = sup_t sqrt((1 / (N k)) sum_i |f_t(x_i) - g_t(x_i)|^2)

over the recorded steps is fitted as gap ~ n^b (`rates.fit_loglog`). Lee et al. (2019, Theorem
2.1) bound it by O(n^-1/2); the bound is judged like the appendix's other bounds (a slope that
is steeper is consistent with it, and the report says so). This is their statement, not the
paper's (Jacot et al. state convergence of the kernel, not of the trained functions' gap).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import SweepSettings, derive_seed
from .data import Dataset
from .progress import ProgressLike, Silent
from .rates import SlopeFit, fit_loglog
from .results import Claim, Figure, Section, Table

MAX_SEEDS = 5
"""Seeds per width for the gap (the sweep's first ones): the linearised network costs about three
forward passes per step, and 5 seeds over the sweep's widths fit the slope well enough."""


@dataclass
class GapMeasurements:
    """gap: (W, S) sup over the recorded steps of the RMS output gap; scale: (W, S) the RMS
    distance the network's outputs moved, sup_t |f_t - f_0|, for comparison."""

    widths: np.ndarray
    gap: np.ndarray
    scale: np.ndarray


def linearization_gap(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
                      record_every: int) -> tuple[float, float]:
    """(sup_t RMS |f_t - g_t|, sup_t RMS |f_t - f_0|) on the training points, training a copy of
    ``net`` and its linearisation by the same gradient descent (``net`` itself is not changed)."""
    from ..taylor import linearize
    from ..training import train

    with torch.no_grad():
        net(x)  # builds a lazily-sized first layer before the copies
    lin = linearize(net)
    runs = [train(model, x, y, lr=lr, steps=steps, record_every=record_every, record=("outputs",))
            for model in (copy.deepcopy(net), lin)]
    f, g = (np.asarray(run.outputs_train, dtype=np.float64) for run in runs)  # (R, N, k)
    gap = float(np.sqrt(((f - g) ** 2).mean(axis=(1, 2))).max())
    moved = float(np.sqrt(((f - f[0]) ** 2).mean(axis=(1, 2))).max())
    return gap, moved


def measure_gaps(settings: SweepSettings, data: Dataset, seed: int, progress: ProgressLike | None = None,
                 label: str = "linearization gap") -> GapMeasurements:
    """The gap for the sweep's first min(seeds, MAX_SEEDS) trained networks per width (the same
    seeds, hence the same networks)."""
    progress = progress or Silent()
    seeds = min(settings.seeds, MAX_SEEDS)
    spec = settings.network.spec()
    x = torch.as_tensor(data.x, dtype=torch.float32)
    k = settings.out_features
    y = torch.as_tensor(np.repeat(data.y[:, :1], k, axis=1), dtype=torch.float32)
    widths = np.asarray(settings.widths, dtype=np.int64)
    m = GapMeasurements(widths, np.zeros((len(widths), seeds)), np.zeros((len(widths), seeds)))
    task = progress.task(label, int(len(widths) * seeds))
    for wi, width in enumerate(widths.tolist()):
        for gi in range(seeds):
            net = spec.network(width=width, out_features=k, seed=derive_seed(seed, "sweep", width, gi),
                               in_features=data.x.shape[1])
            m.gap[wi, gi], m.scale[wi, gi] = linearization_gap(net, x, y, settings.lr, settings.steps,
                                                               settings.record_every)
            task.advance()
    return m


def linearization_section(m: GapMeasurements, settings: SweepSettings, data: Dataset, out: Path,
                          prefix: str = "") -> Section:
    """The report section: the fitted slope of the gap, a table per width and a figure."""
    from .plots import RateSeries, figure_rates

    fit: SlopeFit = fit_loglog(m.widths, m.gap, -0.5, settings.confidence, "bound")
    theory = f"slope ≤ {fit.predicted:g} (O(n^{fit.predicted:g}))"
    claim = Claim("Lee et al. (2019): a network and its linearisation, trained alike, stay within "
                  "sup_t ‖f_t − f_lin,t‖ = O(n^-1/2) → 0", fit.describe(), theory, fit.criterion, fit.verdict)
    relative = m.gap / np.maximum(m.scale, np.finfo(np.float64).tiny)
    rows = [[int(w), float(m.gap[wi].mean()), float(m.gap[wi].std(ddof=1)) if m.gap.shape[1] > 1 else 0.0,
             float(m.scale[wi].mean()), float(relative[wi].mean())] for wi, w in enumerate(m.widths.tolist())]
    fig_path = out / f"{prefix}linearization_gap.png"
    figure_rates([("Lee et al.: sup_t ‖f_t − f_lin,t‖", "RMS output gap",
                   [RateSeries("network vs linearisation", m.widths, m.gap, fit)])], fig_path,
                 f"Network against its linearisation ({settings.network.describe()}, {m.gap.shape[1]} seeds)")
    text = [
        "Each trained network of the sweep is trained a second time beside its first-order Taylor expansion in the "
        "parameters, g(x; θ) = f(x; θ₀) + J_θ₀(x)(θ − θ₀) (`torchntk.linearize`, forward-mode derivatives), by the "
        f"same gradient descent (lr {settings.lr:g}, {settings.steps} steps) on the same data ({data.source}). "
        "The gap is the largest, over the recorded steps, root mean square difference of their outputs on the "
        "training points. Lee et al. (2019, Theorem 2.1) bound it by O(n^-1/2); the linearised network's training "
        "is exactly kernel gradient descent with the initial empirical NTK.",
        "This is Lee et al.'s statement, not the paper's: it is shown beside the appendix's rates, judged as a bound."]
    if fit.faster:
        text.append(f"The gap vanishes faster than the bound over these widths (slope {fit.slope:.2f}).")
    return Section(
        f"{prefix}linearization", "Lee et al. (2019): wide networks train like their linearisation", text,
        {"network": settings.network.describe(), "widths": ", ".join(f"{w:,}" for w in m.widths.tolist()),
         "seeds per width": m.gap.shape[1], "learning rate": settings.lr, "steps": settings.steps},
        [claim],
        [Table("Measured per width", ["width n", "gap: mean", "sd over seeds", "output movement sup_t ‖f_t − f_0‖",
                                      "gap / movement"], rows,
               "The output movement shows how far training took the functions; the gap is a small part of it.")],
        [Figure(fig_path, "Every seed is a dot, the per-width geometric mean a circle; the solid line is the fitted "
                          "power law, the dotted line the bound's slope through the data's centre.")],
        {"gap": m.gap, "movement": m.scale, "fit": fit.as_dict()})
