"""The standard parameterisation on diabetes regression: its width-dependent NTK, and a finite network trained by it.

scikit-learn's diabetes data (442 patients, 10 features, a disease-progression target), 5-fold
cross-validation (KFold, shuffled, random_state=0); on each fold the features and the target
are standardised with the training fold's mean and standard deviation.

Left panel: a depth-3 ReLU network with `parameterization="standard"` and hidden widths n has
the NTK parameterisation's NNGP (checked here to 1e-12) but not its NTK: by the conventions'
recursion Theta' = n_l K + sigma_w^2 Theta + 1 the standard NTK grows like the width. The panel
shows the entries of Theta_standard / Theta_ntk on the first training fold, divided by n:
they settle as n grows, but on a spread of values, so the standard NTK is not a multiple of
the NTK and the two predict differently.

Right panel, test R^2 on the same five folds (mean and the folds' spread) of:

- linear ridge regression (scikit-learn's RidgeCV, its ridge chosen by leave-one-out on the
  training fold) and RBF kernel ridge (scikit-learn's rbf_kernel, its bandwidth and ridge chosen
  by 5-fold cross-validation inside the training fold);
- kernel ridge regression with the NNGP, the NTK, and the standard NTK at widths 64, 256 and
  1,024: each kernel divided by its mean training diagonal, its ridge chosen the same way;
- finite standard networks of widths 64 and 256 (seed 0, float64), trained by full-batch gradient
  descent (tn.train, learning rate half the largest stable one, 2 N / lambda_max of its limiting
  NTK) for a number of steps chosen on the training fold (the steps of the limiting kernel's
  gradient descent with the best validation R^2 on a 4:1 split of the training fold), beside
  their kernel's prediction of the same network's trajectory (GradientFlow.predict_steps with
  the network's outputs at initialisation) and of the mean over initialisations.

This example needs parameterization="standard" (tn.mlp(..., parameterization="standard", width=n)).

    python docs/examples/standard_parameterization.py            # 5 folds, under a minute
    python docs/examples/standard_parameterization.py --small    # seconds (what the tests run)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import RidgeCV
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import KFold

import torchntk as tn

DEPTH, BIAS = 3, 0.1
RIDGES = np.logspace(-4, 1, 11)
GAMMAS = np.logspace(-3, 0, 7)


def standard(width: int) -> tn.Serial:
    return tn.mlp(DEPTH, "relu", bias_std=BIAS, parameterization="standard", width=width)


def r2(prediction: np.ndarray, target: np.ndarray) -> float:
    return float(1 - ((prediction - target) ** 2).sum() / ((target - target.mean()) ** 2).sum())


def cross_validated_ridge(k: torch.Tensor, y: np.ndarray, train: np.ndarray) -> tuple[float, float]:
    """The ridge among RIDGES with the best mean R^2 over 5 folds of the training rows, and that R^2."""
    target, ridges = torch.from_numpy(y), torch.from_numpy(RIDGES)
    inner = np.zeros(len(RIDGES))
    for fit, held in KFold(5, shuffle=True, random_state=0).split(train):
        fit, held = train[fit], train[held]
        values, vectors = torch.linalg.eigh(k[fit][:, fit])
        # every ridge at once: (K + r I)^-1 y = V diag(1 / (lambda + r)) V^T y, one column per r
        coef = vectors @ ((vectors.T @ target[fit])[:, None] / (values[:, None] + ridges[None, :]))
        predictions = (k[held][:, fit] @ coef).numpy()
        inner += [r2(predictions[:, j], y[held]) / 5 for j in range(len(RIDGES))]
    best = int(np.argmax(inner))
    return float(RIDGES[best]), float(inner[best])


def kernel_ridge(kernel: torch.Tensor, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Test R^2 of kernel ridge regression, the kernel scaled to unit mean training diagonal and the
    ridge chosen on the training rows (`cross_validated_ridge`), and the inner cross-validated R^2."""
    k = kernel / kernel[train][:, train].diagonal().mean()
    ridge, inner = cross_validated_ridge(k, y, train)
    k_train = k[train][:, train]
    coef = torch.linalg.solve(k_train + ridge * torch.eye(len(train), dtype=k.dtype), torch.from_numpy(y[train]))
    return r2((k[test][:, train] @ coef).numpy(), y[test]), inner


def chosen_steps(ntk: torch.Tensor, y: torch.Tensor, lr: float, grid: np.ndarray) -> int:
    """The number of gradient-descent steps of the limiting kernel with the best R^2 on a 4:1 split."""
    n = len(y)
    split = np.random.default_rng(0).permutation(n)
    fit, held = split[: 4 * n // 5], split[4 * n // 5:]
    flow = tn.GradientFlow(ntk[fit][:, fit], y[fit])
    # lr was set for all n training points; the 4/5 subset's own rate scales with its size.
    mean = flow.predict_steps(torch.from_numpy(grid), lr * len(fit) / n, ntk_test_train=ntk[held][:, fit],
                              cov=None).mean
    scores = [r2(m.numpy(), y[held].numpy()) for m in mean]
    return int(grid[int(np.argmax(scores))])


def run(small: bool, out: Path) -> dict:
    x_all, y_all = load_diabetes(return_X_y=True)
    folds = list(KFold(5, shuffle=True, random_state=0).split(x_all))
    if small:
        folds = folds[:1]
    widths = (64, 256) if small else (64, 256, 1024)
    ratio_widths = (16, 64, 256) if small else (16, 64, 256, 1024, 4096)
    net_widths = (16, 64) if small else (64, 256)
    step_grid = np.unique(np.logspace(0, 2 if small else 3, 13).astype(int))
    ntk_spec = tn.mlp(DEPTH, "relu", bias_std=BIAS)

    scores: dict[str, list[float]] = {}
    ratios = {}
    gaps: dict[int, list[float]] = {}   # per network width: its largest test gap to its kernel prediction, per fold
    for fold, (train, test) in enumerate(folds):
        mean, std = x_all[train].mean(0), x_all[train].std(0)
        x = torch.from_numpy((x_all - mean) / std)
        y = (y_all - y_all[train].mean()) / y_all[train].std()
        nngp, ntk = ntk_spec.kernels(x)
        kernels = {"NNGP": nngp, "NTK": ntk}
        for width in widths:
            std_nngp, std_ntk = standard(width).kernels(x)
            gap = float(((std_nngp - nngp).abs() / nngp.abs().max()).max())
            assert gap < 1e-12, f"the standard NNGP differs from the NTK parameterisation's by {gap:.1e}"
            kernels[f"standard NTK, n={width}"] = std_ntk
        if fold == 0:
            tr = torch.from_numpy(train)
            for width in ratio_widths:
                ratios[width] = (standard(width).ntk(x[tr]) / ntk[tr][:, tr] / width).flatten().numpy()

        def score(name: str, value: float) -> None:
            scores.setdefault(name, []).append(value)

        score("linear ridge", r2(RidgeCV(alphas=RIDGES).fit(x[train], y[train]).predict(x[test]), y[test]))
        # RBF: the bandwidth and the ridge chosen together on the training fold.
        rbf = [kernel_ridge(torch.from_numpy(rbf_kernel(x.numpy(), gamma=g)), y, train, test) for g in GAMMAS]
        score("RBF kernel ridge", max(rbf, key=lambda result: result[1])[0])   # by the inner score only
        for name, kernel in kernels.items():
            score(name + " (ridge)", kernel_ridge(kernel, y, train, test)[0])

        # Finite standard networks, trained by gradient descent, beside their limiting kernel's predictions.
        for net_width in net_widths:
            spec = standard(net_width)
            limit = spec.ntk(x)
            k_train, k_test = limit[train][:, train], limit[test][:, train]
            y_train = torch.from_numpy(y[train])[:, None]
            lr = tn.dynamics.max_learning_rate(k_train) / 2
            steps = chosen_steps(k_train, y_train, lr, step_grid)
            net = spec.network(out_features=1, seed=0, dtype=torch.float64)
            with torch.no_grad():
                f0_train, f0_test = net(x[train]), net(x[test])
            trained = tn.train(net, x[train], y_train, lr=lr, steps=steps, x_test=x[test], record=("outputs",),
                               record_every=max(steps, 1))
            flow = tn.GradientFlow(k_train, y_train)
            own = flow.predict_steps(steps, lr, ntk_test_train=k_test, f0_train=f0_train, f0_test=f0_test,
                                     cov=None).mean[0, :, 0].numpy()
            ensemble = flow.predict_steps(steps, lr, ntk_test_train=k_test, cov=None).mean[0, :, 0].numpy()
            finite = trained.outputs_test[-1, :, 0]
            score(f"finite standard net, n={net_width}", r2(finite, y[test]))
            score(f"  its kernel's prediction of it, n={net_width}", r2(own, y[test]))
            score(f"  kernel, mean over inits, n={net_width}", r2(ensemble, y[test]))
            gap = float(np.abs(finite - own).max())
            gaps.setdefault(net_width, []).append(gap)
            print(f"fold {fold + 1}, width {net_width}: {steps} steps at lr {lr:.3g} (t = {steps * lr:.3g}); the "
                  f"network's test outputs against its kernel prediction: largest gap {gap:.3f}", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [2, 3]})
    left.boxplot([ratios[w] for w in ratio_widths], whis=(5, 95), showfliers=False)   # whiskers: 5% and 95%
    left.set_xticks(range(1, len(ratio_widths) + 1), [str(w) for w in ratio_widths])
    left.set(xlabel="hidden width n", ylabel="Theta_standard / (n Theta_ntk)",
             title="standard NTK over NTK, per entry (fold 1)")
    methods = list(scores)
    means = [np.mean(scores[k]) for k in methods]
    spread = [np.std(scores[k]) for k in methods]
    colours = ["C7"] * 2 + ["C0"] * (2 + len(widths)) + ["C3", "C1", "C2"] * len(net_widths)
    right.barh(range(len(methods)), means, xerr=spread, color=colours)
    right.set_yticks(range(len(methods)), methods)
    right.invert_yaxis()
    right.set(xlabel="test R^2 (mean and spread over folds)", title=f"diabetes, {len(folds)}-fold cross-validation")
    for i, value in enumerate(means):
        right.text(0.01, i, f"{value:.3f}", va="center", color="white")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "standard_parameterization.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)

    print("Theta_standard / (n Theta_ntk) on the first training fold, median [5%, 95%] of the entries:")
    for width in ratio_widths:
        low, mid, high = np.percentile(ratios[width], [5, 50, 95])
        print(f"  n = {width:>5}: {mid:.3f} [{low:.3f}, {high:.3f}]")
    width = max(map(len, scores))
    print(f"{'':<{width}}  {'mean':>7}  {'std':>7}  per fold")
    for name, values in scores.items():
        print(f"{name:<{width}}  {np.mean(values):7.3f}  {np.std(values):7.3f}  "
              + " ".join(f"{v:.3f}" for v in values))
    for net_width, values in gaps.items():
        print(f"width {net_width}: largest gap between the trained network and its kernel prediction, "
              f"mean over folds {np.mean(values):.3f} (the target has unit variance)")
    print(f"figure: {path}")
    return {"figure": path, "scores": scores, "ratios": ratios, "gaps": gaps}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    args = parser.parse_args()
    run(args.small, args.out)
