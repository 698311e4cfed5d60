"""An ExactGP with torchntk's NTKKernel beside the same GP with an RBF kernel, on scikit-learn's diabetes data.

Both models are the same GPyTorch ExactGP (constant mean, Gaussian likelihood, ScaleKernel around
the base kernel), fitted the same way: Adam on the exact marginal likelihood, ITERATIONS steps,
learning rate 0.1, float64. Only the base kernel differs:

- NTK: torchntk.gpytorch.NTKKernel(depth=3, relu), bias_std and weight_std learned;
- RBF: gpytorch.kernels.RBFKernel, its lengthscale learned.

Each split is a random 75/25 train/test split (seed = split index), the same for both models;
features and target are standardised on the training part. Test RMSE is in the target's units;
NLPD is the mean negative log predictive density of the test targets (standardised units), which
also judges the predicted variances.

    .venv/bin/python benchmarks/bench_gpytorch.py                # 3 splits
    .venv/bin/python benchmarks/bench_gpytorch.py --splits 1     # one split
"""

from __future__ import annotations

import argparse
import math
import time

import gpytorch
import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from torchntk.gpytorch import NTKKernel

ITERATIONS = 60


class GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, base_kernel):
        super().__init__(x, y, likelihood)
        self.mean = gpytorch.means.ConstantMean()
        self.covar = gpytorch.kernels.ScaleKernel(base_kernel)

    def forward(self, inputs):
        return gpytorch.distributions.MultivariateNormal(self.mean(inputs), self.covar(inputs))


def fit_and_score(kind: str, x_train, y_train, x_test, y_test, y_scale: float) -> dict:
    torch.manual_seed(0)
    base = NTKKernel(depth=3, activation="relu") if kind == "NTK" else gpytorch.kernels.RBFKernel()
    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = GP(x_train, y_train, likelihood, base).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    start = time.perf_counter()
    model.train()
    for _ in range(ITERATIONS):
        optimizer.zero_grad()
        loss = -mll(model(x_train), y_train)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
        pred = likelihood(model(x_test))
        mean, var = pred.mean, pred.variance
    rmse = float(((mean - y_test) ** 2).mean().sqrt()) * y_scale
    nlpd = float((0.5 * torch.log(2 * math.pi * var) + 0.5 * (y_test - mean) ** 2 / var).mean())
    if kind == "NTK":
        hyper = f"bias_std {base.bias_std.item():.3g}, weight_std {base.weight_std.item():.3g}"
    else:
        hyper = f"lengthscale {base.lengthscale.item():.3g}"
    hyper += f", noise {likelihood.noise.item():.3g}"
    return {"rmse": rmse, "nlpd": nlpd, "mll": -loss.item(), "seconds": seconds, "hyper": hyper}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=3)
    args = parser.parse_args()
    X, y = load_diabetes(return_X_y=True)
    results: dict[str, list[dict]] = {"NTK": [], "RBF": []}
    for split in range(args.splits):
        xa, xb, ya, yb = train_test_split(X, y, test_size=0.25, random_state=split)
        scaler = StandardScaler().fit(xa)
        mu, sd = ya.mean(), ya.std()
        tensors = [torch.as_tensor(a, dtype=torch.float64) for a in
                   (scaler.transform(xa), (ya - mu) / sd, scaler.transform(xb), (yb - mu) / sd)]
        for kind in results:
            results[kind].append(fit_and_score(kind, *tensors, y_scale=sd))
    print(f"diabetes (n = {len(y)}, {X.shape[1]} features), {args.splits} random 75/25 splits, "
          f"ExactGP + ScaleKernel, Adam {ITERATIONS} steps; mean +- std over splits")
    print()
    print("| kernel | test RMSE | test NLPD | train MLL / n | fit time (s) | fitted (split 0) |")
    print("|---|---|---|---|---|---|")
    for kind, rows in results.items():
        cells = []
        for key, digits in (("rmse", 1), ("nlpd", 3), ("mll", 3), ("seconds", 1)):
            values = np.array([r[key] for r in rows])
            cells.append(f"{values.mean():.{digits}f} +- {values.std():.{digits}f}")
        name = "NTKKernel(depth=3, relu)" if kind == "NTK" else "RBFKernel"
        print(f"| {name} | " + " | ".join(cells) + f" | {rows[0]['hyper']} |")


if __name__ == "__main__":
    main()
