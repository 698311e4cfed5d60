"""Architecture descriptions work wherever a description is taken: gradient-flow predictions,
kernel stores, and 1-D / 3-D inputs."""

from __future__ import annotations

import numpy as np
import torch

import torchntk as tn


def cnn():
    return tn.serial(tn.Conv((3, 3), padding="same"), tn.ReLU(), tn.AvgPool(2), tn.Conv((2, 2)), tn.Erf(),
                     tn.GlobalAvgPool(), tn.Dense())


def test_gradient_flow_predictions_use_the_architecture_kernels():
    rng = np.random.default_rng(0)
    x, xs = rng.standard_normal((12, 1, 6, 6)), rng.standard_normal((3, 1, 6, 6))
    y = rng.standard_normal((12, 2))
    pred = tn.predict_gradient_flow(cnn(), x, y, xs, t=[float("inf")])
    # t = inf: the kernel regression mean Theta(xs, X) Theta(X, X)^-1 y, from the kernels directly
    ntk = cnn().ntk(np.concatenate([x, xs]))
    expect = ntk[12:, :12] @ np.linalg.solve(ntk[:12, :12], y)
    np.testing.assert_allclose(np.asarray(pred.mean[0]), expect, rtol=1e-8, atol=1e-10)   # condition ~1e3


def test_kernel_stores_hold_architecture_kernels(tmp_path):
    from torchntk.scale import kernel_matrix

    x = np.random.default_rng(1).standard_normal((10, 1, 6, 6))
    stored = kernel_matrix(cnn(), x, store=tmp_path / "K.zarr", tile=4, dtype=torch.float64, progress=False)
    # tiles of 4 against the library's own tiling: the same recursion per pair, so round-off only
    np.testing.assert_allclose(np.asarray(stored), cnn().ntk(x), rtol=1e-13, atol=0)


def test_sequences_and_volumes():
    seq = tn.serial(tn.Conv(3, padding="circular"), tn.ReLU(), tn.GlobalAvgPool(), tn.Dense())
    x = np.random.default_rng(2).standard_normal((4, 2, 7))
    k = seq.nngp(x)
    # circular 1-D conv + global pool: invariant to a cyclic shift of a sequence
    np.testing.assert_allclose(seq.nngp(np.roll(x, 3, axis=2)), k, rtol=1e-12)
    vol = tn.serial(tn.Conv((2, 2, 2), padding="same"), tn.ReLU(), tn.Flatten(), tn.Dense())
    v = np.random.default_rng(3).standard_normal((3, 1, 3, 4, 3))
    kv = vol.nngp(v)
    net = vol.network(width=4, out_features=1, seed=0, input_shape=(1, 3, 4, 3))
    assert kv.shape == (3, 3) and net(torch.as_tensor(v, dtype=torch.float32)).shape == (3, 1)
