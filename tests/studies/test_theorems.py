"""The width sweep: its numbers are the networks' own, recomputed here by independent routes."""

import numpy as np
import pytest
import torch
from studies_reference import gradient_descent

from torchntk.studies.config import NetworkSettings, SweepSettings, derive_seed
from torchntk.studies.data import unit_circle
from torchntk.studies.rates import BORNE_OUT, INCONCLUSIVE, NOT_BORNE_OUT, NOT_CLAIMED
from torchntk.studies.theorems import analyse_sweep
from torchntk.studies.width_sweep import measure_sweep

SETTINGS = SweepSettings(network=NetworkSettings(depth=3), widths=(8, 16, 32), seeds=2, gaussian_seeds=4,
                         out_features=2, points=5, steps=4, record_every=2)


@pytest.fixture(scope="module")
def sweep():
    data = unit_circle(SETTINGS.points)
    return data, measure_sweep(SETTINGS, data, seed=3)


def test_shapes(sweep):
    _, m = sweep
    w, s, g = len(SETTINGS.widths), SETTINGS.seeds, SETTINGS.gaussian_seeds
    assert m.outputs.shape == (w, g, 2, 5) and m.variances.shape == (w, g, 5)
    assert m.ntk_init.shape == m.ntk_move.shape == m.conditional.shape == (w, s)
    assert m.weights.shape == (w, s, 3) and m.activations.shape == (w, s, 2)
    assert np.all(m.ntk_init > 0) and np.all(m.ntk_move > 0)


def test_measurements_are_the_networks_own(sweep):
    data, m = sweep
    spec = SETTINGS.network.spec()
    x = torch.as_tensor(data.x, dtype=torch.float32)
    y = torch.as_tensor(np.repeat(data.y, 2, axis=1), dtype=torch.float32)
    limit_nngp, limit_ntk = spec.kernels(data.x.astype(np.float64))  # numpy in, numpy out
    wi, width = 1, 16
    net = spec.network(width=width, out_features=2, seed=derive_seed(3, "sweep", width, 0), in_features=2)
    with torch.no_grad():
        f, hidden = net(x, return_hidden=True)
    # float32 networks: outputs agree to float32 rounding.
    assert np.allclose(m.outputs[wi, 0], f.T.numpy(), rtol=0, atol=1e-6)
    a = hidden["activations"][-1].double().numpy()
    sigma_tilde = a @ a.T / width + 0.1 ** 2
    expected = np.abs(np.linalg.eigvals(sigma_tilde - limit_nngp)).max() / 5
    assert m.conditional[wi, 0] == pytest.approx(expected, rel=1e-5)  # float32 activations, float64 algebra
    kernels = gradient_descent(net, x, y, SETTINGS.lr, SETTINGS.steps, every=SETTINGS.record_every)
    flat = [k.permute(0, 2, 1, 3).reshape(10, 10).numpy() for k in kernels]
    distance = np.abs(np.linalg.eigvals(flat[0] - np.kron(limit_ntk, np.eye(2)))).max() / 5
    movement = max(np.abs(np.linalg.eigvals(g - flat[0])).max() / 5 for g in flat[1:])
    # The references use per-entry autograd Jacobians instead of the structured NTK: float32
    # rounding of O(1) kernels is ~1e-6, far below the distances (~0.1) being compared.
    assert m.ntk_init[wi, 0] == pytest.approx(distance, rel=1e-4)
    assert m.ntk_move[wi, 0] == pytest.approx(movement, rel=1e-3, abs=1e-6)


def test_analysis_writes_sections_figures_and_verdicts(sweep, tmp_path):
    data, m = sweep
    sections = analyse_sweep(m, SETTINGS, data, 3, tmp_path)
    assert [s.key for s in sections] == ["rates", "prop1", "theorem1", "theorem2", "lemma1"]
    assert (tmp_path / "rates.png").stat().st_size > 10_000
    assert (tmp_path / "prop1_gaussian.png").stat().st_size > 10_000
    verdicts = {c.verdict for s in sections for c in s.claims}
    assert verdicts <= {BORNE_OUT, INCONCLUSIVE, NOT_BORNE_OUT}
    thm1 = sections[2]
    assert thm1.numbers["fit"]["slope"] == pytest.approx(
        np.polyfit(np.repeat(np.log(SETTINGS.widths), 2), np.log(m.ntk_init).reshape(-1), 1)[0], rel=1e-10)
    # The table's first row is the narrowest width's mean distance.
    assert thm1.tables[0].rows[0][1] == pytest.approx(m.ntk_init[0].mean())


def test_depth_one_is_refused():
    with pytest.raises(ValueError, match="depth >= 2"):
        measure_sweep(SweepSettings(network=NetworkSettings(depth=1)), unit_circle(4), seed=0)


def test_singular_data_and_divergent_learning_rates_fail_before_training():
    twice = unit_circle(4)
    doubled = type(twice)(np.vstack([twice.x, twice.x[:1]]), np.vstack([twice.y, twice.y[:1]]), "dup", "dup")
    with pytest.raises(ValueError, match="singular"):
        measure_sweep(SETTINGS, doubled, seed=0)
    with pytest.raises(ValueError, match="too large"):
        measure_sweep(SweepSettings(network=NetworkSettings(depth=3), lr=1e3), unit_circle(4), seed=0)


def test_lemma_one_measures_the_pre_activations(sweep):
    """The lemma's quantity: sup_t ||a~(t) - a~(0)||_F / ||a~(0)||_F per hidden layer, recomputed by
    plain gradient descent on C = (1/2N) sum |f - y|^2 (float32 networks: 1e-4 relative)."""
    data, m = sweep
    spec = SETTINGS.network.spec()
    x = torch.as_tensor(data.x, dtype=torch.float32)
    y = torch.as_tensor(np.repeat(data.y, 2, axis=1), dtype=torch.float32)
    width = 32
    net = spec.network(width=width, out_features=2, seed=derive_seed(3, "sweep", width, 1), in_features=2)
    with torch.no_grad():
        pre0 = [a.clone() for a in net(x, return_hidden=True)[1]["preactivations"]]
    sup = np.zeros(len(pre0))
    for step in range(1, SETTINGS.steps + 1):
        net.zero_grad()
        loss = ((net(x) - y) ** 2).sum() / (2 * x.shape[0])
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= SETTINGS.lr * p.grad
        if step % SETTINGS.record_every == 0:
            with torch.no_grad():
                pre = net(x, return_hidden=True)[1]["preactivations"]
            sup = np.maximum(sup, [float((a - a0).norm() / a0.norm()) for a, a0 in zip(pre, pre0, strict=True)])
    np.testing.assert_allclose(m.preactivations[2, 1], sup, rtol=1e-4)
    assert m.preactivations.shape == m.activations.shape == (3, 2, 2)
    assert not np.allclose(m.preactivations, m.activations)  # post-activations are kept, separately


def test_each_statement_has_a_convergence_verdict_and_a_labelled_rate_comparison(sweep, tmp_path):
    data, m = sweep
    sections = {s.key: s for s in analyse_sweep(m, SETTINGS, data, 3, tmp_path)}
    for key in ("prop1", "theorem1", "theorem2", "lemma1"):
        claims = sections[key].claims
        paper = [c for c in claims if c.theory.startswith("→ 0")]
        rates = [c for c in claims if c.statement.split(":")[0].endswith(NOT_CLAIMED)]
        assert paper and len(paper) == len(rates), key
        assert all("local slopes" in c.criterion for c in paper)
    # The outputs' excess kurtosis: Proposition 1's claim is that it vanishes; its 1/n is a rate of our
    # own (Var Σ~ = O(1/n)), labelled as such and fitted over groups of initializations, not one value
    # per width.
    prop1 = sections["prop1"]
    kurtosis = [c for c in prop1.claims if "kurtosis" in c.statement]
    assert [c.theory for c in kurtosis] == ["→ 0 as n → ∞ (the paper: convergence, no rate)", "slope -1"]
    assert kurtosis[1].statement.startswith("Leading-order rate, not the paper's claim:")
    groups = np.asarray(prop1.numbers["kurtosis_groups"])
    assert groups.shape == (len(SETTINGS.widths), 10 if SETTINGS.gaussian_seeds >= 20 else SETTINGS.gaussian_seeds // 2)
    assert sections["theorem1"].numbers["convergence"]["verdict"] == sections["theorem1"].claims[0].verdict
