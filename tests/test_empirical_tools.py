"""Tools for the empirical NTK of large models, against exact references on small random models:
the operator and its eigenvalues, the pNTK, the gradient sketch, and ``params=``.

References are a float64 vmap(jacrev) Jacobian written here, or `empirical_ntk` itself (which
tests/test_empirical.py checks against brute force). float64 throughout: where two computations
of the same sums are compared, 1e-10 relative to the kernel's scale is ~10^5 ulp of margin for
sums over a few hundred parameters.
"""

import math

import numpy as np
import pytest
import scipy.sparse.linalg
import scipy.stats
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

import torchntk as tn
from torchntk.empirical import empirical_ntk
from torchntk.empirical.operator import ntk_operator
from torchntk.empirical.sketch import gradient_sketch, sketched_ntk

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
RTOL = 1e-10   # float64 round-off of reordered sums over <= 10^3 terms, with ~10^5 ulp of margin


class BasicBlock(nn.Module):
    """A tiny ResNet block: conv-BN(eval)-ReLU(inplace)-conv-BN plus the skip, then a readout."""

    def __init__(self, channels=2, k=3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels * 16, k)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)) + x)
        return self.head(out.flatten(1))


def _model(kind, seed=0):
    torch.manual_seed(seed)
    if kind == "mlp":
        model, shape = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 3)), (3,)
    elif kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
        shape = (1, 5, 5)
    else:
        model, shape = BasicBlock(), (2, 4, 4)
        for bn in (model.bn1, model.bn2):   # non-trivial running statistics, as a trained network has
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model.double().eval(), shape


def _x(shape, n, seed):
    return torch.randn(n, *shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _reference(model, x1, x2, names=None):
    """Full kernel (N1, N2, k, k) over the named trainable parameters, by float64 vmap(jacrev)."""
    params = {n: p.detach() for n, p in model.named_parameters()
              if p.requires_grad and (names is None or n in names)}
    # every (module, attribute) slot holding a tied tensor gets its one entry of params, and each
    # slot is named once: swapping a module used twice twice would leave a stand-in in it
    canonical = {id(p): n for n, p in model.named_parameters()}
    aliases, slots = {}, set()
    for n, p in model.named_parameters(remove_duplicate=False):
        prefix, _, attr = n.rpartition(".")
        slot = (id(model.get_submodule(prefix)), attr)
        if slot not in slots:
            slots.add(slot)
            aliases[n] = canonical[id(p)]

    def f(p, x):
        values = {alias: p[name] for alias, name in aliases.items() if name in p}
        return functional_call(model, values, (x.unsqueeze(0).clone(),), tie_weights=False).squeeze(0)

    def jac(x):
        j = vmap(jacrev(f), in_dims=(None, 0))(params, x)
        return torch.cat([t.reshape(x.shape[0], t.shape[1], -1) for t in j.values()], dim=2)

    return torch.einsum("iap,jbp->ijab", jac(x1), jac(x2)).detach()


def _close(got, want):
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= RTOL * scale, float((got - want).abs().max()) / scale


MODELS = ("mlp", "cnn", "residual")


# -- the operator ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MODELS)
def test_operator_products_equal_the_formed_kernel(kind):
    model, shape = _model(kind)
    x = _x(shape, 4, seed=1)
    full = empirical_ntk(model, x, method="jacobian")
    n, k = 4, full.shape[-1]
    matrix = full.permute(0, 2, 1, 3).reshape(n * k, n * k)
    g = torch.Generator().manual_seed(2)
    op = ntk_operator(model, x, batch_size=3)   # two chunks, one of them ragged
    assert op.shape == (n * k, n * k)
    block = torch.randn(n * k, 3, dtype=F64, generator=g)
    _close(op @ block, matrix @ block)
    _close(op @ block[:, 0], matrix @ block[:, 0])
    _close(op.matvec(block[:, 0].reshape(n, k)), (matrix @ block[:, 0]).reshape(n, k))
    got = op @ block.numpy()
    assert isinstance(got, np.ndarray)
    _close(torch.from_numpy(got), matrix @ block)
    op._forward_mode = False   # the double-backward form of the Jacobian-vector products
    _close(op @ block, matrix @ block)
    for outputs, want in (("trace", full.diagonal(dim1=2, dim2=3).mean(-1)), ("pntk", full.sum((2, 3)) / k)):
        op = ntk_operator(model, x, outputs=outputs)
        assert op.shape == (n, n)
        v = block[:n]
        _close(op @ v, want @ v)


class Encoder(nn.Module):
    """A tiny transformer: one eval-mode nn.TransformerEncoderLayer (batch_first), mean-pooled."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.layer(x).mean(1))


class Recurrent(nn.Module):
    """nn.GRU or nn.LSTM, read out at the last step: (N, L, 3) -> (N, 2)."""

    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(3, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def _brute_force(model, x):
    """(N k, N k) from one torch.autograd.grad call per input and output (loops: a reference only)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(model(x[i : i + 1])[0, a], params)])
            for i in range(x.shape[0]) for a in range(2)]
    jac = torch.stack(rows)
    return jac @ jac.t()


@pytest.mark.parametrize("make, shape", [
    (Encoder, (5, 8)), (lambda: Recurrent(nn.GRU), (4, 3)), (lambda: Recurrent(nn.LSTM), (4, 3)),
])
def test_operator_on_attention_and_recurrent_models(make, shape):
    """Forward-mode AD does not go through the fused path of an eval-mode encoder layer: its
    products come from double backward; nn.GRU and nn.LSTM take forward mode."""
    torch.manual_seed(0)
    model = make().double().eval()
    x = _x(shape, 3, seed=19)
    v = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(20))
    _close(ntk_operator(model, x) @ v, _brute_force(model, x) @ v)


def test_operator_of_one_output_and_params():
    model, shape = _model("mlp")
    flat = nn.Sequential(model, nn.Linear(3, 1), nn.Flatten(0)).double().eval()  # outputs (N,)
    x = _x(shape, 5, seed=3)
    v = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    op = ntk_operator(flat, x)
    assert op.shape == (5, 5)
    _close(op @ v, empirical_ntk(flat, x) @ v)
    chosen = ["2.weight", "4.bias"]
    op = ntk_operator(model, x, params=chosen, outputs="trace")
    _close(op @ v, empirical_ntk(model, x, params=chosen, outputs="trace") @ v)
    from_numpy = ntk_operator(model, x.numpy(), params=chosen, outputs="trace") @ v.numpy()
    assert isinstance(from_numpy, np.ndarray)
    _close(torch.from_numpy(from_numpy), op @ v)


@pytest.mark.parametrize("kind", ("mlp", "residual"))
def test_top_eigenvalues_equal_those_of_the_formed_kernel(kind):
    model, shape = _model(kind)
    x = _x(shape, 5, seed=5)
    full = empirical_ntk(model, x)
    n = full.shape[0] * full.shape[2]
    want = torch.linalg.eigvalsh(full.permute(0, 2, 1, 3).reshape(n, n)).flip(0)[:4]
    got = ntk_operator(model, x).top_eigenvalues(4, seed=0)
    # ARPACK to machine precision (tol=0) against LAPACK: both backward stable, float64
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * float(want[0]))
    again = ntk_operator(model, x).top_eigenvalues(4, seed=0)
    assert torch.equal(got, again)   # the start vector comes from the seed


def test_to_scipy_solves_with_conjugate_gradients():
    model, shape = _model("mlp")
    x = _x(shape, 6, seed=6)
    op = ntk_operator(model, x, outputs="trace")
    kernel = empirical_ntk(model, x, outputs="trace").numpy()
    b = np.random.default_rng(0).standard_normal(6)
    shifted = op.to_scipy() + scipy.sparse.linalg.aslinearoperator(np.eye(6))
    sol, info = scipy.sparse.linalg.cg(shifted, b, rtol=1e-12, atol=0.0, maxiter=200)
    assert info == 0
    want = np.linalg.solve(kernel + np.eye(6), b)
    # cg stops at a residual of 1e-12 |b|; with condition number < 1e3 here the error is < 1e-8
    np.testing.assert_allclose(sol, want, rtol=0, atol=1e-8 * np.abs(want).max())
    assert op.to_scipy().matmat(np.eye(6)).shape == (6, 6)


def test_operator_leaves_the_model_and_checks_its_mode():
    model, shape = _model("residual")
    model.conv1.weight.requires_grad_(False)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    x = _x(shape, 3, seed=7)
    x_copy = x.clone()
    op = ntk_operator(model, x)
    op @ torch.ones(op.shape[0], dtype=F64)
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True, True, True]
    assert torch.equal(x, x_copy)
    with torch.no_grad():
        model.head.weight.mul_(2.0)   # the operator reads the parameters at each product
    model.head.bias = nn.Parameter(model.head.bias.detach() + 1.0)
    v = torch.ones(op.shape[0], dtype=F64)
    formed = empirical_ntk(model, x, method="jacobian").permute(0, 2, 1, 3).reshape(9, 9)
    _close(op @ v, formed @ v)
    model.train()
    with pytest.raises(ValueError, match="eval"):
        op @ torch.ones(op.shape[0], dtype=F64)
    with pytest.raises(ValueError, match="eval"):
        ntk_operator(model, x)
    model.eval()
    with pytest.raises(ValueError, match=r"v must have shape \(9,\), \(3, 3\) or \(9, m\)"):
        op @ torch.ones(4, dtype=F64)
    with pytest.raises(TypeError, match="dtype"):
        op @ torch.ones(9)
    with pytest.raises(ValueError, match="NaN"):
        op @ torch.full((9,), float("nan"), dtype=F64)
    with pytest.raises(ValueError, match="1 <= m < 9"):
        op.top_eigenvalues(9)
    with pytest.raises(ValueError, match="outputs must be one of"):
        ntk_operator(model, x, outputs="diag")


# -- the pNTK -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, methods", [
    ("mlp", ("structured", "jacobian", "ntk_vp")),
    ("cnn", ("structured", "jacobian")),
    ("residual", ("auto", "jacobian")),
])
def test_pntk_is_the_mean_of_all_output_pairs(kind, methods):
    model, shape = _model(kind)
    x1, x2 = _x(shape, 4, seed=8), _x(shape, 3, seed=9)
    children = list(model.children())
    for x_other in (None, x2):
        full = _reference(model, x1, x1 if x_other is None else x_other)
        k = full.shape[-1]
        trace = full.diagonal(dim1=2, dim2=3).mean(-1)
        off = (full.sum((2, 3)) - full.diagonal(dim1=2, dim2=3).sum(-1)) / k
        for method in methods:   # "structured" applies: the readout g = sum f / sqrt(k) is a frozen nn.Linear
            got = empirical_ntk(model, x1, x_other, method=method, outputs="pntk", batch_size=3)
            assert got.shape == full.shape[:2]
            _close(got, full.sum((2, 3)) / k)
            _close(got, trace + off)
    diag = empirical_ntk(model, x1, outputs="pntk", diagonal=True)
    _close(diag, (_reference(model, x1, x1).sum((2, 3)) / k).diagonal())
    assert list(model.children()) == children   # the wrapper shares the modules, adds none to the model


def test_pntk_of_a_torchntk_network_and_of_one_output():
    net = tn.mlp(3, "tanh", bias_std=0.2).network(width=6, out_features=3, seed=0, dtype=F64, in_features=3)
    x = _x((3,), 5, seed=10)
    full = empirical_ntk(net, x, method="jacobian")
    _close(empirical_ntk(net, x, method="structured", outputs="pntk"), full.sum((2, 3)) / 3)
    flat = nn.Sequential(net, nn.Linear(3, 1), nn.Flatten(0)).double()
    _close(empirical_ntk(flat, x, outputs="pntk"), empirical_ntk(flat, x))   # one output: its own kernel
    with pytest.raises(ValueError, match="'pntk'"):
        empirical_ntk(net, x, outputs="mean")


# -- params= --------------------------------------------------------------------------------


PARTITIONS = {
    "mlp": (["0.weight", "0.bias"], ["2.weight", "2.bias"], ["4.weight", "4.bias"]),
    "cnn": (["0.weight"], ["0.bias", "3.bias"], ["3.weight"]),
    "residual": (["conv1.weight", "bn1.weight", "bn1.bias"], ["conv2.weight", "bn2.weight", "bn2.bias"],
                 ["head.weight", "head.bias"]),
}


@pytest.mark.parametrize("kind", MODELS)
def test_kernels_of_a_partition_add_up_and_match_the_reference(kind):
    model, shape = _model(kind)
    x1, x2 = _x(shape, 4, seed=11), _x(shape, 3, seed=12)
    full = _reference(model, x1, x2)
    for method in ("auto", "jacobian", "ntk_vp"):
        parts = [empirical_ntk(model, x1, x2, method=method, params=names) for names in PARTITIONS[kind]]
        for names, part in zip(PARTITIONS[kind], parts, strict=True):
            _close(part, _reference(model, x1, x2, names))
        _close(sum(parts), full)
    assert all(p.requires_grad for p in model.parameters())


def test_params_as_names_parameters_and_predicates_agree():
    model, shape = _model("mlp")
    x = _x(shape, 4, seed=13)
    by_name = empirical_ntk(model, x, params=["4.weight", "4.bias"])
    _close(by_name, _reference(model, x, x, ["4.weight", "4.bias"]))
    assert torch.equal(empirical_ntk(model, x, params=model[4].parameters()), by_name)
    assert torch.equal(empirical_ntk(model, x, params=lambda name: name.startswith("4.")), by_name)
    trace = empirical_ntk(model, x, params=["4.weight", "4.bias"], outputs="trace", diagonal=True)
    _close(trace, by_name.diagonal(dim1=2, dim2=3).mean(-1).diagonal())


def test_params_of_tied_and_frozen_parameters():
    torch.manual_seed(1)
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(3, 2)).double()
    model[4].bias.requires_grad_(False)
    x = _x((3,), 4, seed=14)
    # the alias "2.weight" names the same tensor as "0.weight"
    _close(empirical_ntk(model, x, params=["2.weight"]), _reference(model, x, x, ["0.weight"]))
    with pytest.raises(ValueError, match="frozen"):
        empirical_ntk(model, x, params=["4.bias"])
    only_frozen = empirical_ntk(model, x, params=lambda n: n.startswith("4."))   # the frozen bias is skipped
    _close(only_frozen, _reference(model, x, x, ["4.weight"]))
    assert model[4].bias.requires_grad is False and model[0].weight.requires_grad is True


def test_bad_params_are_clear_errors():
    model, shape = _model("mlp")
    x = _x(shape, 3, seed=15)
    with pytest.raises(ValueError, match=r"'9.weight', which is not a parameter of the model; its parameters are "
                                         r"'0.weight'"):
        empirical_ntk(model, x, params=["9.weight"])
    with pytest.raises(ValueError, match="params is empty"):
        empirical_ntk(model, x, params=[])
    with pytest.raises(ValueError, match="selects no trainable parameter"):
        empirical_ntk(model, x, params=lambda n: False)
    with pytest.raises(TypeError, match="wrap it in a list"):
        empirical_ntk(model, x, params="0.weight")
    with pytest.raises(ValueError, match="not a parameter of the model"):
        empirical_ntk(model, x, params=[torch.zeros(3)])
    with pytest.raises(TypeError, match="True or False"):
        empirical_ntk(model, x, params=lambda n: n)
    with pytest.raises(ValueError, match="not a parameter of the model"):
        gradient_sketch(model, x, dim=4, seed=0, params=["nope"])
    with pytest.raises(ValueError, match="not a parameter of the model"):
        ntk_operator(model, x, params=["nope"])
    assert all(p.requires_grad for p in model.parameters())


def test_params_never_touch_the_modules_flags():
    # The restriction lives in the functional view: a module's requires_grad is never switched,
    # not even for the length of the call (another thread could be using the model).
    model, shape = _model("mlp")
    seen, weight = [], model[0].weight
    hook = model[0].register_forward_hook(lambda m, i, o: seen.append(weight.requires_grad))
    try:
        empirical_ntk(model, _x(shape, 3, seed=16), params=["4.weight"])
    finally:
        hook.remove()
    assert seen and all(seen) and all(p.requires_grad for p in model.parameters())
    for method in ("structured", "layerwise"):
        with pytest.raises(ValueError, match="use method='jacobian'"):
            empirical_ntk(model, _x(shape, 3, seed=16), method=method, params=["4.weight"])


# -- the gradient sketch --------------------------------------------------------------------


@pytest.mark.parametrize("kind", MODELS)
def test_sketch_is_reproducible_and_adds_up_over_a_partition(kind):
    model, shape = _model(kind)
    x = _x(shape, 5, seed=16)
    phi = gradient_sketch(model, x, dim=7, seed=3, batch_size=2)
    assert phi.shape == (5, 3, 7)
    assert torch.equal(gradient_sketch(model, x, dim=7, seed=3, batch_size=2), phi)
    assert not torch.allclose(gradient_sketch(model, x, dim=7, seed=4), phi)
    _close(gradient_sketch(model, x, dim=7, seed=3), phi)   # chunking changes round-off only
    # each tensor's rows of R are its own: the sketches of a partition add up to the whole
    _close(sum(gradient_sketch(model, x, dim=7, seed=3, params=names) for names in PARTITIONS[kind]), phi)
    pntk = gradient_sketch(model, x, dim=7, seed=3, outputs="pntk")
    _close(pntk, phi.sum(1) / math.sqrt(3))   # g = sum f / sqrt(k) with the same R
    kernel = sketched_ntk(model, x, dim=7, seed=3)
    _close(kernel, torch.einsum("iad,jbd->ijab", phi, phi))
    _close(sketched_ntk(model, x, dim=7, seed=3, outputs="trace"), kernel.diagonal(dim1=2, dim2=3).mean(-1))
    _close(sketched_ntk(model, x, dim=7, seed=3, outputs="pntk"), pntk @ pntk.t())


def test_sketch_of_one_output_and_numpy():
    model, shape = _model("mlp")
    flat = nn.Sequential(model, nn.Linear(3, 1), nn.Flatten(0)).double().eval()
    x = _x(shape, 4, seed=17)
    phi = gradient_sketch(flat, x, dim=5, seed=0)
    assert phi.shape == (4, 5)
    got = sketched_ntk(flat, x.numpy(), x[:2].numpy(), dim=5, seed=0)
    assert isinstance(got, np.ndarray) and got.shape == (4, 2)
    np.testing.assert_allclose(got, (phi @ phi[:2].t()).numpy(), rtol=RTOL, atol=0)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        gradient_sketch(flat, x, dim=0, seed=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        gradient_sketch(flat, x, dim=3, seed=-1)
    with pytest.raises(ValueError, match="'full'"):
        gradient_sketch(flat, x, dim=3, seed=0, outputs="trace")


def test_sketched_kernel_is_unbiased_with_the_stated_variance():
    """Monte Carlo over S seeds of R: the mean within standard errors of Theta, the variance of
    single entries within a chi-square interval of (K^2 + K_1 K_2) / d."""
    model, shape = _model("mlp")
    x = _x(shape, 3, seed=18)
    exact = _reference(model, x, x)                        # (3, 3, k, k)
    d, seeds = 64, 300
    draws = torch.stack([sketched_ntk(model, x, dim=d, seed=s) for s in range(seeds)])
    diag = exact.diagonal(dim1=0, dim2=1).diagonal(dim1=0, dim2=1).t()   # K_aa(x_i, x_i), (N, k)
    var = (exact ** 2 + diag[:, None, :, None] * diag[None, :, None, :]) / d
    # the mean of S draws: 4.5 standard errors on each of 81 entries (a Gaussian exceeds it w.p. 7e-6 each)
    z = (draws.mean(0) - exact) / (var / seeds).sqrt()
    assert float(z.abs().max()) < 4.5, float(z.abs().max())
    # (S - 1) s^2 / sigma^2 ~ chi^2(S - 1) for Gaussian draws; 1e-4 two-sided quantiles. K_hat is a
    # sum of d = 64 products of Gaussians, of excess kurtosis at most 12 / d: that widens the spread
    # of s^2 by at most sqrt(1 + (S - 1) 12 / (2 d S)) < 1.05, so the interval is widened by 1.05.
    lo, hi = scipy.stats.chi2.ppf([5e-5, 1 - 5e-5], seeds - 1) / (seeds - 1)
    lo, hi = 1 - 1.05 * (1 - lo), 1 + 1.05 * (hi - 1)
    for entry in ((0, 0, 0, 0), (0, 1, 0, 0), (1, 2, 0, 1), (2, 2, 1, 2)):
        ratio = float(draws[(slice(None), *entry)].var() / var[entry])
        assert lo < ratio < hi, (entry, ratio, lo, hi)


def test_sketch_is_the_jacobian_times_the_segmented_gaussian(monkeypatch):
    """Phi = J R with R assembled from its segments: segments of 4 rows here, so every tensor of
    the model spans several (the default segment is larger than these models)."""
    from torchntk.empirical import sketch

    monkeypatch.setattr(sketch, "SEGMENT_ROWS", 4)
    model, shape = _model("cnn")
    x = _x(shape, 5, seed=21)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def f(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    blocks = []
    for name, p in params.items():
        segments = [sketch._gaussian_rows(7, name, s, min(4, p.numel() - first), 6, F64, x.device)
                    for s, first in enumerate(range(0, p.numel(), 4))]
        assert len(segments) == 1 or not torch.equal(segments[0][:1], segments[1][:1])   # own streams
        blocks.append(torch.cat(segments))
    r = torch.cat(blocks) / math.sqrt(6)                                # (P, d)
    want = torch.cat([j.reshape(5, 3, -1) for j in jac.values()], dim=2) @ r
    _close(gradient_sketch(model, x, dim=6, seed=7, batch_size=2), want)
    _close(sum(gradient_sketch(model, x, dim=6, seed=7, params=names) for names in PARTITIONS["cnn"]), want)
