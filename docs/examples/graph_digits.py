"""A graph neural tangent kernel on digits turned into graphs, beside a bag-of-nodes kernel and the FC NTK.

Each of scikit-learn's 8x8 digits becomes a graph: a node for every pixel brighter than 8 (of
16), with three features (its intensity / 16 and its row and column scaled to [-1, 1]), and an
arc between every two nodes whose pixels touch (the 8 neighbours), plus a self-loop at every
node. The graphs have 10 to 27 nodes; each is padded to V = 27 with a mask of its real nodes,
so (N, C, V) = (N, 3, 27). Aggregation is the mean over a node's predecessors and itself, the
weights A[n, i, j] = 1 / (in-degree of j + 1) of Du et al. (2019)'s scaling factor
c_u = 1 / |N(u)|.

Three infinitely wide networks, trained to convergence (t = inf) on centred one-hot targets
with a ridge of 1e-4 times the mean training diagonal:

- the graph NTK: two rounds of (node-wise layer, Aggregate, ReLU), a node-wise layer and ReLU,
  the mean over the real nodes, a dense readout;
- the bag of nodes: the same network without the Aggregate layers, which sees each graph as
  the set of its nodes' features;
- the fully-connected depth-3 ReLU NTK on the 64 raw pixels (all of them, the dim ones too).

The depth and the mean aggregation were picked on 300 / 300 digits of the training pool (one
and three rounds, and sum aggregation, did no better there; a threshold of 4, 34 nodes at most, did
slightly better at three times the cost), never on the test digits. Split:
numpy's default_rng(0) permutation of the digits; the first 400 are the training pool (the
smaller training sets are its first n), the last 300 the test digits.

This example needs tn.Aggregate and masks.

    python docs/examples/graph_digits.py            # 400 training / 300 test graphs (a minute or two)
    python docs/examples/graph_digits.py --small    # seconds (what the tests run)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

import torchntk as tn

THRESHOLD = 8.0


def digit_graphs(images: np.ndarray, *, threshold: float = THRESHOLD) -> tuple[torch.Tensor, ...]:
    """Graphs of the pixels above ``threshold`` of 8x8 images (N, 8, 8), padded to the most nodes V.

    Returns x (N, 3, V) node features (intensity / 16, row and column in [-1, 1], zero at padding),
    arcs (N, V, V) boolean (8-neighbours and self-loops, none at padding), mean (N, V, V) the
    aggregation weights arcs[n, i, j] / (number of arcs into j), and mask (N, V), True at real nodes.
    Nodes are the bright pixels in raster order.
    """
    n = len(images)
    flat = torch.from_numpy(images.reshape(n, 64))
    bright = flat > threshold
    v = int(bright.sum(1).max())
    pixel = torch.argsort((~bright).to(torch.int8), dim=1, stable=True)[:, :v]   # bright pixels first
    mask = torch.gather(bright, 1, pixel)
    row, col = torch.arange(64) // 8, torch.arange(64) % 8
    touching = ((row[:, None] - row[None]).abs() <= 1) & ((col[:, None] - col[None]).abs() <= 1)
    arcs = touching[pixel[:, :, None], pixel[:, None, :]] & mask[:, :, None] & mask[:, None, :]
    weights = arcs.double()
    mean = weights / weights.sum(1, keepdim=True).clamp(min=1)   # padding columns have no arcs: stay zero
    x = torch.stack([torch.gather(flat, 1, pixel) / 16, (row[pixel] - 3.5) / 3.5, (col[pixel] - 3.5) / 3.5], 1)
    return x * mask[:, None], arcs, mean, mask


def node_network(*, aggregate: bool) -> tn.Serial:
    """Two rounds of (node-wise layer, Aggregate, ReLU), or the same without Aggregate; then the readout."""
    rounds = [[tn.Conv((1,), bias_std=0.1), *([tn.Aggregate()] if aggregate else []), tn.ReLU()] for _ in range(2)]
    return tn.serial(*rounds[0], *rounds[1], tn.Conv((1,), bias_std=0.1), tn.ReLU(),
                     tn.GlobalAvgPool(), tn.Dense(bias_std=0.1))


def run(small: bool, out: Path) -> dict:
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    sizes = (20, 40) if small else (50, 100, 200, 400)
    n_test = 30 if small else 300
    chosen = np.concatenate([order[:sizes[-1]], order[-n_test:]])          # training pool first, then test
    x, arcs, mean, mask = digit_graphs(digits.images[chosen])
    labels = torch.from_numpy(digits.target[chosen])
    y = torch.nn.functional.one_hot(labels, 10).double() - 0.1
    test = slice(sizes[-1], None)

    kernels = {"graph NTK (Aggregate)": node_network(aggregate=True).ntk(x, adjacency=mean, mask=mask),
               "bag of nodes (no Aggregate)": node_network(aggregate=False).ntk(x, mask=mask),
               "fully-connected NTK (64 pixels)": tn.mlp(depth=3, activation="relu", bias_std=0.1).ntk(
                   torch.from_numpy(digits.images[chosen].reshape(len(chosen), 64) / 16.0))}
    accuracy = {}
    for name, ntk in kernels.items():
        accuracy[name] = []
        for n in sizes:
            k_train = ntk[:n, :n]
            flow = tn.GradientFlow(k_train, y[:n], ridge=1e-4 * float(k_train.diagonal().mean()))
            prediction = flow.predict(float("inf"), ntk_test_train=ntk[test, :n], cov=None).mean[0]
            accuracy[name].append(float((prediction.argmax(-1) == labels[test]).double().mean()))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    for name, values in accuracy.items():
        left.plot(sizes, values, "o-", label=name)
    left.set(xscale="log", xlabel="training graphs", ylabel="test accuracy",
             title=f"NTK regression at t = inf, {n_test} test graphs")
    left.legend()
    real = int(mask[0].sum())
    rows = (x[0, 1, :real] * 3.5 + 3.5).numpy()
    cols = (x[0, 2, :real] * 3.5 + 3.5).numpy()
    right.imshow(digits.images[chosen[0]], cmap="gray_r", alpha=0.4)
    tails, heads = torch.nonzero(arcs[0] & ~torch.eye(arcs.shape[1], dtype=torch.bool), as_tuple=True)
    for i, j in zip(tails.tolist(), heads.tolist(), strict=True):
        right.plot([cols[i], cols[j]], [rows[i], rows[j]], "-", color="C0", lw=1)
    right.scatter(cols, rows, c=x[0, 0, :real].numpy(), cmap="viridis", zorder=3)
    right.set(title=f"digit {int(labels[0])} as a graph: {real} nodes", xticks=[], yticks=[])
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "graph_digits.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)

    nodes = mask.sum(1)
    between = arcs.sum((1, 2)) - nodes                                     # the self-loops left out
    print(f"graphs: {len(chosen)}, nodes {int(nodes.min())} to {int(nodes.max())} "
          f"(mean {float(nodes.double().mean()):.1f}), arcs between nodes {float(between.double().mean()):.1f} "
          "per graph on average")
    width = max(map(len, accuracy))
    print(f"{'test accuracy':<{width}}  " + "  ".join(f"{n:>6}" for n in sizes))
    for name, values in accuracy.items():
        print(f"{name:<{width}}  " + "  ".join(f"{a:6.3f}" for a in values))
    print(f"figure: {path}")
    return {"figure": path, "accuracy": accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    args = parser.parse_args()
    run(args.small, args.out)
