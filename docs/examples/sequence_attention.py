"""A transformer kernel on digits read as sequences of rows, beside the fully-connected NTK and an RBF kernel.

scikit-learn's 8x8 digits as sequences of their 8 rows, (N, C, L) = (N, 16, 8): each position
is a row, its channels the row's 8 pixels and a one-hot code of the row's index (the positional
encoding of the values: the attention layer's own positional embeddings enter its queries and
keys only, and the readout averages over positions). The infinitely wide transformer embeds
each row (a width-1 convolution), adds a softmax self-attention over the rows to it (a residual
block; random positional embeddings on the keys' input as well), then ReLU, a position-wise
layer, ReLU, the mean over the rows and a dense readout. The same network without the attention
block is shown too. Baselines on the same split: the fully-connected depth-3 ReLU NTK on the 64
flat pixels, and an RBF kernel (scikit-learn's KernelRidge) whose bandwidth and ridge are chosen
by 5-fold cross-validation on the training digits only. The NTKs are trained to convergence
(t = inf) on centred one-hot targets with a ridge of 1e-4 times the mean training diagonal, and
have no tuned hyperparameters. The architecture was picked among a few (the same one without
one-hot positions, with a Flatten readout, with a width-3 embedding, without the residual sum)
on 500 / 500 digits of the training pool, never the test digits.

Split: the digits in the order of numpy's default_rng(0) permutation; the first 1,000 are the
training pool (the curve's smaller training sets are its first n), the last 797 the test digits.

Variable length: each digit keeps only its first L rows, L drawn uniformly from 3 to 8
(default_rng(1)), the rest set to zero. With a mask of its real rows the attention kernel is
that of the truncated sequence (checked here against the unpadded sequences, length by length);
without one, the zeros are rows like any other.

This example needs tn.SelfAttention and masks (spec.kernels(x1, x2, mask=(m1, m2))).

    python docs/examples/sequence_attention.py            # 1,000 training / 797 test digits (a minute or two)
    python docs/examples/sequence_attention.py --small    # seconds (what the tests run)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold

import torchntk as tn


def transformer(*, attention: bool = True) -> tn.Serial:
    """Embedding, residual self-attention block (or nothing), a position-wise ReLU layer, the mean over rows."""
    block = [tn.FanOut(2), tn.parallel(tn.SelfAttention(positional="sum", bias_std=0.1), tn.Identity()),
             tn.FanInSum()] if attention else []
    return tn.serial(tn.Conv((1,), bias_std=0.1), *block, tn.ReLU(),
                     tn.Conv((1,), bias_std=0.1), tn.ReLU(),
                     tn.GlobalAvgPool(), tn.Dense(bias_std=0.1))


def ntk_accuracy(ntk: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, n: int, test: slice) -> float:
    """Test accuracy of the t = inf NTK predictor trained on the first n rows of ``ntk``."""
    k_train = ntk[:n, :n]
    flow = tn.GradientFlow(k_train, y[:n], ridge=1e-4 * float(k_train.diagonal().mean()))
    mean = flow.predict(float("inf"), ntk_test_train=ntk[test, :n], cov=None).mean[0]
    return float((mean.argmax(-1) == labels[test]).double().mean())


def rbf_accuracy(x: np.ndarray, y: np.ndarray, labels: np.ndarray, n: int, test: slice) -> tuple[float, dict]:
    """Kernel ridge regression with an RBF kernel, gamma and alpha chosen on the first n digits only."""
    def accuracy(estimator, x_fold, y_fold):
        return float((estimator.predict(x_fold).argmax(1) == y_fold.argmax(1)).mean())

    grid = {"gamma": np.logspace(-3, 0, 7), "alpha": np.logspace(-4, 0, 5)}
    search = GridSearchCV(KernelRidge(kernel="rbf"), grid, scoring=accuracy,
                          cv=KFold(5, shuffle=True, random_state=0))
    search.fit(x[:n], y[:n])
    return float((search.predict(x[test]).argmax(1) == labels[test]).mean()), search.best_params_


def run(small: bool, out: Path) -> dict:
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    sizes = (20, 40) if small else (50, 100, 200, 500, 1000)
    n_test = 30 if small else 797
    chosen = np.concatenate([order[:sizes[-1]], order[-n_test:]])          # training pool first, then test
    images = torch.from_numpy(digits.images[chosen] / 16.0)                # (N, 8 rows, 8 columns)
    pixels = images.transpose(1, 2)                                        # (N, 8 pixels, L=8 rows)
    positions = torch.eye(8, dtype=pixels.dtype).expand(len(chosen), 8, 8)  # channel 8 + i is 1 at row i
    rows = torch.cat([pixels, positions], dim=1)                           # (N, C=16, L=8)
    flat = images.flatten(1)                                               # (N, 64)
    labels = torch.from_numpy(digits.target[chosen])
    y = torch.nn.functional.one_hot(labels, 10).double() - 0.1
    test = slice(sizes[-1], None)

    spec = transformer()
    kernels = {"transformer NTK (rows)": spec.ntk(rows),
               "same without attention": transformer(attention=False).ntk(rows),
               "fully-connected NTK (64 pixels)": tn.mlp(depth=3, activation="relu", bias_std=0.1).ntk(flat)}
    accuracy = {name: [ntk_accuracy(k, y, labels, n, test) for n in sizes] for name, k in kernels.items()}
    rbf = [rbf_accuracy(flat.numpy(), y.numpy(), labels.numpy(), n, test) for n in sizes]
    accuracy["RBF kernel ridge (tuned on train)"] = [a for a, _ in rbf]

    # Variable length: the first L rows of each digit, zeros after them.
    lengths = torch.from_numpy(np.random.default_rng(1).integers(3, 9, size=len(chosen)))
    mask = torch.arange(8)[None, :] < lengths[:, None]                     # (N, L), True at real rows
    padded = rows * mask[:, None, :]
    masked_ntk = spec.ntk(padded, mask=mask)
    # Padding plus mask is the truncated sequence: every pair of digits of one length, unpadded.
    worst = 0.0
    check = slice(0, 40)                                  # 5 to 8 digits of each length among the first 40
    for length in range(3, 9):
        group = torch.nonzero(lengths[check] == length).flatten()
        assert len(group), f"no digit of length {length} among the first {check.stop} to check"
        truncated = spec.ntk(rows[group][:, :, :length])
        worst = max(worst, float(((masked_ntk[group][:, group] - truncated).abs() / truncated.abs().max()).max()))
    # The same sums with exact zeros added: float64 rounding (1e-16 per operation) over a few hundred operations.
    assert worst < 1e-12, f"padded + mask differs from the truncated sequences by {worst:.2e}"
    n = sizes[-1]
    padded_flat = padded[:, :8].transpose(1, 2).flatten(1)                 # (N, 64) pixels, the zeros included
    variable = {"transformer NTK, mask": ntk_accuracy(masked_ntk, y, labels, n, test),
                "transformer NTK, zeros as rows": ntk_accuracy(spec.ntk(padded), y, labels, n, test),
                "fully-connected NTK, zeros": ntk_accuracy(
                    tn.mlp(depth=3, activation="relu", bias_std=0.1).ntk(padded_flat), y, labels, n, test),
                "RBF, zeros": rbf_accuracy(padded_flat.numpy(), y.numpy(), labels.numpy(), n, test)[0]}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    for name, values in accuracy.items():
        left.plot(sizes, values, "o-", label=name)
    left.set(xscale="log", xlabel="training digits", ylabel="test accuracy",
             title=f"full digits, {n_test} test digits")
    left.legend()
    names = list(variable)
    right.barh(range(len(names)), [variable[k] for k in names], color=["C0", "C0", "C2", "C3"])
    right.set_yticks(range(len(names)), names)
    right.invert_yaxis()
    low = min(variable.values())
    right.set(xlim=(max(0.0, low - 0.1), 1.0), xlabel="test accuracy",
              title=f"first 3-8 rows only, {n} training digits")
    for i, k in enumerate(names):
        right.text(variable[k], i, f" {variable[k]:.3f}", va="center")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sequence_attention.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)

    width = max(map(len, accuracy))
    print(f"{'test accuracy':<{width}}  " + "  ".join(f"{n:>6}" for n in sizes))
    for name, values in accuracy.items():
        print(f"{name:<{width}}  " + "  ".join(f"{a:6.3f}" for a in values))
    print("RBF hyperparameters chosen on each training set: "
          + ", ".join(f"{n}: gamma {p['gamma']:.3g}, alpha {p['alpha']:.3g}" for n, (_, p) in zip(sizes, rbf,
                                                                                                  strict=True)))
    print(f"variable length (first 3-8 rows), {n} training digits:")
    for name, value in variable.items():
        print(f"  {name:<32} {value:.3f}")
    print(f"padded + mask against the truncated sequences: largest relative difference {worst:.1e}")
    print(f"figure: {path}")
    return {"figure": path, "accuracy": accuracy, "variable": variable, "mask_error": worst}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    args = parser.parse_args()
    run(args.small, args.out)
