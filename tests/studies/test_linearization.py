"""The linearisation gap of the width sweep (Lee et al. 2019), recomputed by independent routes:
the network by plain gradient descent, its linearisation by kernel gradient descent with the
network's initial NTK, g_s(X) = y + (I - lr Theta_0 / N)^s (f_0(X) - y)."""

import json

import numpy as np
import pytest
import torch
from studies_reference import jacobian_ntk

from torchntk.studies.config import NetworkSettings, SweepSettings, derive_seed
from torchntk.studies.data import unit_circle
from torchntk.studies.linearization import linearization_section, measure_gaps
from torchntk.studies.runner import study

SETTINGS = SweepSettings(network=NetworkSettings(depth=3, activation="tanh"), widths=(8, 16, 32), seeds=2,
                         gaussian_seeds=4, out_features=2, points=5, steps=6, record_every=3)


pytestmark = pytest.mark.usefixtures("one_thread")   # small tensors (tests/conftest.py)


def _reference_gap(net, x, y, lr, steps, every):
    n, k = y.shape
    theta = jacobian_ntk(net, x, x).permute(0, 2, 1, 3).reshape(n * k, n * k)
    step = torch.eye(n * k, dtype=torch.float64) - lr * theta / n
    with torch.no_grad():
        f0 = net(x).double()
    params = list(net.parameters())
    gaps = []
    for s in range(steps + 1):
        if s % every == 0 or s == steps:
            with torch.no_grad():
                f = net(x).double()
            g = y.double().reshape(-1) + torch.linalg.matrix_power(step, s) @ (f0 - y.double()).reshape(-1)
            gaps.append(float((f.reshape(-1) - g).pow(2).mean().sqrt()))
        if s == steps:
            break
        cost = 0.5 * ((net(x) - y) ** 2).sum() / n
        grads = torch.autograd.grad(cost, params)
        with torch.no_grad():
            for p, grad in zip(params, grads, strict=True):
                p -= lr * grad
    return max(gaps)


def test_the_gaps_are_the_networks_own(tmp_path):
    data = unit_circle(SETTINGS.points)
    m = measure_gaps(SETTINGS, data, seed=3)
    assert m.gap.shape == m.scale.shape == (3, 2) and np.all(m.gap > 0) and np.all(m.gap < m.scale)
    spec = SETTINGS.network.spec()
    x = torch.as_tensor(data.x, dtype=torch.float32)
    y = torch.as_tensor(np.repeat(data.y, 2, axis=1), dtype=torch.float32)
    width = 16
    net = spec.network(width=width, out_features=2, seed=derive_seed(3, "sweep", width, 1), in_features=2)
    want = _reference_gap(net, x, y, SETTINGS.lr, SETTINGS.steps, SETTINGS.record_every)
    # float32 networks against a float64 kernel recursion: outputs agree to ~1e-6, gaps are ~1e-2.
    assert abs(m.gap[1, 1] - want) <= 1e-4 * max(want, 1e-2)
    section = linearization_section(m, SETTINGS, data, tmp_path)
    assert section.claims[0].statement.startswith("Lee et al. (2019)")
    assert section.claims[0].verdict in ("borne out", "inconclusive", "not borne out")
    assert (tmp_path / "linearization_gap.png").exists()


def test_study_reports_the_gap(tmp_path):
    data = unit_circle(SETTINGS.points)
    study(SETTINGS, data, seed=3, out=tmp_path)
    payload = json.loads((tmp_path / "results.json").read_text())
    section = next(s for s in payload["sections"] if s["key"] == "linearization")
    assert np.asarray(section["numbers"]["gap"]).shape == (3, 2)
    assert "linearisation" in (tmp_path / "report.md").read_text()
