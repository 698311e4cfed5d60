"""Figure 1 of the paper: the NTK of finite networks converges to the limit Theta(L).

Depth-4 ReLU networks (beta = 0.1) on inputs of the unit circle: Theta(x0, x) for x0 = (1, 0)
and x = (cos g, sin g), for several initializations of two widths, at initialization and after
gradient descent on the least-squares cost C = (1/2N) sum_i (f(x_i) - y_i)^2 with target
f*(x) = x1 x2 on N random Gaussian inputs (the paper does not give N; 20 is our choice). The
limit is `spec.ntk`. Theorem 1 says the spread over initializations shrinks as n^-1/2;
Theorem 2 says the movement during training is O(n^-1/2).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .config import Fig1Settings, derive_seed
from .data import circle_points, gaussian
from .measures import bootstrap_ratio
from .pieces import PieceStore
from .progress import ProgressLike, Silent
from .rates import BORNE_OUT, INCONCLUSIVE, NOT_BORNE_OUT
from .results import Claim, Figure, Section, Table


def _spread(batch: np.ndarray) -> np.ndarray:
    """Std over seeds (axis 1), averaged over the circle: (R, S, G) -> (R,)."""
    return batch.std(axis=1, ddof=1).mean(axis=-1)


def _mean_over_seeds(batch: np.ndarray) -> np.ndarray:
    return batch.mean(axis=1)


def ratio_verdict(low: float, high: float, predicted: float, kind: str) -> str:
    """Verdict on a ratio narrow/wide whose theory is ``predicted`` (> 1): for a "rate" the
    interval must contain it and lie above 1; for a "bound" (the wide one is at least that much
    smaller) the interval must lie above 1 and not entirely below the prediction."""
    if (kind == "rate" and not low <= predicted <= high) or (kind == "bound" and high < predicted):
        return NOT_BORNE_OUT
    return BORNE_OUT if low > 1 else INCONCLUSIVE


def run_fig1(settings: Fig1Settings, seed: int, out: Path, progress: ProgressLike | None = None,
             store: str | Path | None = None) -> Section:
    """Train and measure the networks of Figure 1; write ``fig1_ntk.png`` into ``out``.

    ``store``: a folder that keeps each network's curves (`pieces.PieceStore`), so that a rerun
    after an interruption computes only the networks still missing."""
    from ..empirical import empirical_ntk
    from ..training import train
    from .plots import figure_ntk

    progress = progress or Silent()
    net_settings = settings.network
    spec = net_settings.spec()
    angles = np.linspace(-np.pi, np.pi, settings.grid)
    x0 = np.array([[1.0, 0.0]])
    theory = spec.ntk(x0, circle_points(angles))[0]
    data = gaussian(settings.train_points, 2, seed=derive_seed(seed, "fig1-data"))
    x = torch.as_tensor(data.x, dtype=torch.float32)
    y = torch.as_tensor(data.y, dtype=torch.float32)
    x0_t = torch.as_tensor(x0, dtype=torch.float32)
    grid_t = torch.as_tensor(circle_points(angles), dtype=torch.float32)
    curves: dict[int, dict[str, np.ndarray]] = {}
    losses: dict[int, np.ndarray] = {}
    if settings.spread_inits < settings.inits:
        raise ValueError(f"spread_inits ({settings.spread_inits}) must be at least inits ({settings.inits}).")
    draws = settings.spread_inits
    task = progress.task("Figure 1: NTK on the circle", len(settings.widths) * (draws + 5 * settings.inits))
    pieces = PieceStore(store, {"settings": asdict(settings), "seed": seed}, (data.x, data.y))
    for width in settings.widths:
        init = np.zeros((draws, settings.grid))
        trained = np.zeros((settings.inits, settings.grid))
        loss = np.zeros(settings.inits)
        for i in range(draws):
            name = f"width{width}-init{i}"
            saved = pieces.load(name)
            if saved is not None:
                init[i] = saved["init"]
                if i < settings.inits:
                    trained[i], loss[i] = saved["trained"], float(saved["loss"])
                task.advance(1 if i >= settings.inits else 6)
                continue
            net = spec.network(width=width, out_features=1, seed=derive_seed(seed, "fig1", width, i), in_features=2)
            init[i] = empirical_ntk(net, x0_t, grid_t, outputs="trace")[0].double().numpy()
            task.advance()
            if i >= settings.inits:
                pieces.save(name, init=init[i])
                continue
            run = train(net, x, y, lr=settings.lr, steps=settings.steps, record_every=settings.steps, record=())
            trained[i] = empirical_ntk(net, x0_t, grid_t, outputs="trace")[0].double().numpy()
            loss[i] = run.loss[-1]
            pieces.save(name, init=init[i], trained=trained[i], loss=np.asarray(loss[i]))
            task.advance(5)
        curves[width] = {"init": init, "trained": trained}
        losses[width] = loss
    shown = {w: {"init": c["init"][:settings.inits], "trained": c["trained"]} for w, c in curves.items()}
    path = figure_ntk(angles, theory, shown, settings.steps, settings.lr, Path(out) / "fig1_ntk.png",
                      net_settings.depth, net_settings.activation)
    return _section(settings, seed, data.source, angles, theory, curves, losses, path)


def _section(settings, seed, data_source, angles, theory, curves, losses, path) -> Section:
    widths = list(curves)
    depth = settings.network.depth
    rows = []
    movement = {}
    for width in widths:
        c = curves[width]
        trained_init = c["init"][:settings.inits]
        dist = np.sqrt(((c["init"] - theory) ** 2).mean(axis=1))
        movement[width] = np.sqrt(((c["trained"] - trained_init) ** 2).mean(axis=1))
        rows.append([width, float(_spread(c["init"][None])[0]), float(_spread(c["trained"][None])[0]),
                     float(dist.mean()), float(movement[width].mean()), float(movement[width].std(ddof=1)),
                     float(losses[width].mean())])
    claims = []
    narrow, wide = min(widths), max(widths)
    predicted = float(np.sqrt(wide / narrow))
    boot_seed = derive_seed(seed, "fig1-bootstrap")
    r, lo, hi = bootstrap_ratio(curves[narrow]["init"], curves[wide]["init"], _spread, seed=boot_seed)
    claims.append(Claim(
        f"Theorem 1: the wider network's NTK varies less across initializations (spread ∝ n^-1/2: width {narrow:,} "
        f"over width {wide:,})", f"spread ratio {r:.3f} (95% bootstrap: [{lo:.3f}, {hi:.3f}])",
        f"√({wide:,}/{narrow:,}) = {predicted:.3f}",
        "the seed-bootstrap 95% interval of the ratio of spreads contains √(n_wide/n_narrow) and lies above 1",
        ratio_verdict(lo, hi, predicted, "rate")))
    r, lo, hi = bootstrap_ratio(movement[narrow], movement[wide], _mean_over_seeds, seed=boot_seed + 1)
    claims.append(Claim(
        f"Theorem 2: the wider network's NTK moves less in training (movement O(n^-1/2): width {narrow:,} over "
        f"width {wide:,})", f"movement ratio {r:.3f} (95% bootstrap: [{lo:.3f}, {hi:.3f}])",
        f"≥ √({wide:,}/{narrow:,}) = {predicted:.3f}",
        "the seed-bootstrap 95% interval of the ratio of mean movements lies above 1 and not entirely below "
        "√(n_wide/n_narrow)", ratio_verdict(lo, hi, predicted, "bound")))
    text = [
        f"Θ(x0, x) with x0 = (1, 0) and x = (cos γ, sin γ) on {len(angles)} angles, for {settings.inits} "
        f"initializations of each width, at initialization and after {settings.steps} steps of gradient descent "
        f"with learning rate {settings.lr:g} (time t = {settings.steps * settings.lr:g}) on the least-squares cost "
        f"C = (1/2N) Σ (f(x_i) − y_i)² over {data_source}. The paper does not state the number of training "
        "inputs; this run uses the number shown. "
        f"The black curve is the limit Θ({depth}) of Theorem 1.",
        f"Spread is the standard deviation over initializations averaged over the circle (at initialization over "
        f"{settings.spread_inits} draws: the {settings.inits} shown, which are then trained, and "
        f"{settings.spread_inits - settings.inits} more); distance and movement are root mean squares over the "
        "circle (per initialization, then averaged).",
    ]
    if 10_000 not in widths:
        text.append(f"Quick mode: the paper's widths are 500 and 10,000; this run's widest is {wide:,} (run "
                    "`torchntk reproduce --full` for the paper's).")
    return Section(
        "fig1", "Figure 1: convergence of the NTK on the unit circle", text,
        {"network": settings.network.describe(), "widths": ", ".join(f"{w:,}" for w in widths),
         "initializations (trained)": settings.inits, "initializations (spread at init)": settings.spread_inits,
         "steps": settings.steps, "learning rate": settings.lr,
         "training data": data_source, "angles": len(angles)},
        claims,
        [Table("Measured per width",
               ["width n", "spread at init", "spread after training", f"RMS distance to Θ({depth}) at init",
                "RMS movement in training: mean", "sd", "final training cost"], rows)],
        [Figure(path, f"Thin lines: one initialization each; black: the limit Θ({depth}). Left at initialization, "
                      "right after training.")],
        {"angles": angles, "theory": theory, "curves": {str(w): c for w, c in curves.items()},
         "final_loss": {str(w): v for w, v in losses.items()}})
