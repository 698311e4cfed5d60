"""Infinite-width NTK and NNGP predictors beside the models people know, on scikit-learn's real data.

Classification (accuracy): iris, wine, breast cancer, digits. Regression (RMSE): diabetes.
Every model sees the same outer folds (5-fold, stratified for classes, fixed seed) and
standardised features (StandardScaler inside its Pipeline, fitted on the training folds only).
Hyperparameters are chosen by inner 3-fold cross-validation on the training folds:

- NTK / NNGP (torchntk.sklearn, t = inf): depth in {2, 3, 5}, bias_std in {0.1, 1}, ridge in
  {1e-10, 1, 10} (the baselines tune their regularisation, so these do too).
- RBF SVC: C in {0.1, 1, 10, 100}, gamma in {0.1, 1, 10} / n_features.
- RBF kernel ridge: alpha in {0.01, 0.1, 1, 10}, gamma in {0.1, 1, 10} / n_features.
- GP regression, RBF + white noise, and GP with torchntk's NNGPKernel + white noise: kernel
  hyperparameters by maximum marginal likelihood (scikit-learn's optimiser, gradients exact).
- Random forest: 500 trees, scikit-learn's defaults otherwise (not tuned).

Arora et al. (2019, "Harnessing the Power of Infinitely Wide Deep Nets on Small-data Tasks")
found infinite-width kernels competitive with random forests on small UCI data sets. The table
says where that holds here; differences below about one standard deviation over folds are noise.

    .venv/bin/python benchmarks/bench_real_data.py                 # all five data sets
    .venv/bin/python benchmarks/bench_real_data.py --quick         # iris, wine, diabetes only
    .venv/bin/python benchmarks/bench_real_data.py --threads 1     # one BLAS/torch thread everywhere
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections import Counter


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Only the three smallest data sets.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the folds and the forests.")
    parser.add_argument("--folds", type=int, default=5, help="Outer folds.")
    parser.add_argument("--threads", type=int, default=None, help="BLAS / torch threads (default: library default).")
    return parser.parse_args()


ARGS = parse()
if ARGS.threads is not None:  # must be set before numpy / torch load their BLAS
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import torch  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor  # noqa: E402
from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: E402
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel  # noqa: E402
from sklearn.kernel_ridge import KernelRidge  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_validate  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from torchntk.sklearn import NNGPKernel, NTKClassifier, NTKRegressor  # noqa: E402

if ARGS.threads is not None:
    torch.set_num_threads(ARGS.threads)

NETWORK_GRID = {"model__depth": [2, 3, 5], "model__bias_std": [0.1, 1.0], "model__ridge": [1e-10, 1.0, 10.0]}
CLASSIFICATION = {"iris": datasets.load_iris, "wine": datasets.load_wine,
                  "breast cancer": datasets.load_breast_cancer, "digits": datasets.load_digits}
REGRESSION = {"diabetes": datasets.load_diabetes}
QUICK = {"iris", "wine", "diabetes"}


def pipeline(model) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("model", model)])


def tuned(model, grid: dict, inner) -> GridSearchCV:
    return GridSearchCV(pipeline(model), grid, cv=inner, n_jobs=1)


def classifiers(n_features: int, seed: int) -> dict:
    inner = StratifiedKFold(3, shuffle=True, random_state=seed + 1)
    gammas = [g / n_features for g in (0.1, 1.0, 10.0)]
    return {
        "NTK": tuned(NTKClassifier(kernel="ntk"), NETWORK_GRID, inner),
        "NNGP": tuned(NTKClassifier(kernel="nngp"), NETWORK_GRID, inner),
        "RBF SVC": tuned(SVC(kernel="rbf"), {"model__C": [0.1, 1, 10, 100], "model__gamma": gammas}, inner),
        "random forest": pipeline(RandomForestClassifier(n_estimators=500, random_state=seed, n_jobs=1)),
    }


def regressors(n_features: int, seed: int) -> dict:
    inner = KFold(3, shuffle=True, random_state=seed + 1)
    gammas = [g / n_features for g in (0.1, 1.0, 10.0)]
    rbf_gp = ConstantKernel(1.0) * RBF(1.0) + WhiteKernel(0.1)
    nngp_gp = NNGPKernel(depth=3, activation="relu", bias_std=0.1, weight_std=1.0) + WhiteKernel(0.1)
    return {
        "NTK": tuned(NTKRegressor(kernel="ntk", normalize_y=True), NETWORK_GRID, inner),
        "NNGP": tuned(NTKRegressor(kernel="nngp", normalize_y=True), NETWORK_GRID, inner),
        "GP, NNGP kernel (ML-II)": pipeline(GaussianProcessRegressor(nngp_gp, normalize_y=True, random_state=seed)),
        "RBF kernel ridge": tuned(KernelRidge(kernel="rbf"), {"model__alpha": [0.01, 0.1, 1, 10],
                                                              "model__gamma": gammas}, inner),
        "GP, RBF (ML-II)": pipeline(GaussianProcessRegressor(rbf_gp, normalize_y=True, random_state=seed)),
        "random forest": pipeline(RandomForestRegressor(n_estimators=500, random_state=seed, n_jobs=1)),
    }


def chosen(estimators) -> str:
    """The most frequent inner-CV choice over the outer folds, e.g. 'depth 3, bias_std 1, ridge 1 (4/5)'."""
    if not isinstance(estimators[0], GridSearchCV):
        return ""
    picks = Counter(tuple(sorted(e.best_params_.items())) for e in estimators)
    best, count = picks.most_common(1)[0]
    text = ", ".join(f"{k.removeprefix('model__')} {v:g}" for k, v in best)
    return f"{text} ({count}/{len(estimators)})"


def evaluate(name: str, load, models: dict, scoring: str, outer) -> dict:
    x, y = load(return_X_y=True)
    rows = {}
    for label, model in models.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GP optimiser convergence chatter; the scores speak
            out = cross_validate(model, x, y, cv=outer, scoring=scoring, return_estimator=True, n_jobs=1)
        scores = out["test_score"] if scoring == "accuracy" else -out["test_score"]
        rows[label] = {"mean": scores.mean(), "std": scores.std(), "seconds": time.perf_counter() - start,
                       "chosen": chosen(out["estimator"]), "scores": scores}
        print(f"  {name:14s} {label:24s} {scores.mean():8.4f} ± {scores.std():.4f}   "
              f"{rows[label]['seconds']:7.1f} s  {rows[label]['chosen']}", flush=True)
    return rows


def table(results: dict, metric: str, better: str) -> str:
    labels = list(next(iter(results.values())))
    lines = [f"| data set ({metric}, {better}) | " + " | ".join(labels) + " |",
             "|---|" + "---|" * len(labels)]
    for name, rows in results.items():
        best = (max if better == "higher is better" else min)(rows[l]["mean"] for l in labels)
        cells = []
        for l in labels:
            cell = f"{rows[l]['mean']:.3f} ± {rows[l]['std']:.3f}" if metric == "accuracy" else \
                f"{rows[l]['mean']:.1f} ± {rows[l]['std']:.1f}"
            cells.append(f"**{cell}**" if rows[l]["mean"] == best else cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| time (s), inner CV included | " + " | ".join(labels) + " |")
    lines.append("|---|" + "---|" * len(labels))
    for name, rows in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{rows[l]['seconds']:.1f}" for l in labels) + " |")
    return "\n".join(lines)


def main() -> None:
    start = time.perf_counter()
    seed = ARGS.seed
    print(f"seed {seed}, {ARGS.folds} outer folds, torch threads {torch.get_num_threads()}")
    class_results, reg_results = {}, {}
    for name, load in CLASSIFICATION.items():
        if ARGS.quick and name not in QUICK:
            continue
        x, _ = load(return_X_y=True)
        outer = StratifiedKFold(ARGS.folds, shuffle=True, random_state=seed)
        class_results[name] = evaluate(name, load, classifiers(x.shape[1], seed), "accuracy", outer)
    for name, load in REGRESSION.items():
        x, _ = load(return_X_y=True)
        outer = KFold(ARGS.folds, shuffle=True, random_state=seed)
        reg_results[name] = evaluate(name, load, regressors(x.shape[1], seed), "neg_root_mean_squared_error", outer)
    total = time.perf_counter() - start

    print("\n## Classification: accuracy, mean ± std over outer folds (best in bold)\n")
    print(table(class_results, "accuracy", "higher is better"))
    print("\n## Regression: RMSE in the target's units, mean ± std over outer folds (best in bold)\n")
    print(table(reg_results, "RMSE", "lower is better"))
    print("\nNTK / NNGP choices (most frequent over the outer folds):")
    for results in (class_results, reg_results):
        for name, rows in results.items():
            for label in ("NTK", "NNGP"):
                print(f"- {name}, {label}: {rows[label]['chosen']}")
    print("\nPaired differences over the same outer folds (mean ± standard error; positive = first is better):")
    for results, sign in ((class_results, 1), (reg_results, -1)):
        for name, rows in results.items():
            for label in ("NTK", "NNGP"):
                diff = sign * (rows[label]["scores"] - rows["random forest"]["scores"])
                error = diff.std(ddof=1) / len(diff) ** 0.5
                print(f"- {name}: {label} vs random forest {diff.mean():+.3f} ± {error:.3f}")
    print(f"\ntotal time {total:.0f} s")


if __name__ == "__main__":
    main()
