"""The width sweep's measurements: networks drawn, measured at initialization and trained.

For each width n and seed s a network of the description is drawn, measured at initialization
and trained by full-batch gradient descent (`torchntk.training.train`); `SweepMeasurements`
holds what each of the appendix's statements speaks about, and `torchntk.studies.theorems`
judges the statements on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .config import SweepSettings, derive_seed
from .data import Dataset
from .measures import conditional_nngp, kernel_movement, ntk_distance, op_norm
from .pieces import PieceStore
from .progress import ProgressLike, Silent


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

_TRAINED = ("conditional", "ntk_init", "ntk_move", "weights", "activations", "preactivations", "final_loss")
"""The measurements of a trained network, per (width, seed)."""


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

    _check_settings(settings)
    net_settings = settings.network
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


def _check_settings(settings: SweepSettings) -> None:
    """Refuse a sweep whose slopes could not be fitted, or that trains nothing."""
    if settings.network.depth < 2:
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
