"""The layer-wise empirical NTK of any module (torchntk.empirical.layerwise) against a float64
per-sample Jacobian reference written here (torch.func.vmap(jacrev) over all trainable
parameters, then contracted).

Tolerance: both sides are float64 sums of the same products (at most ~10^4 terms of O(1) size
here) in another order, so they agree to a few hundred ulp (~1e-14 relative to the largest
entry); 1e-10 of the largest entry leaves four orders of margin for round-off while any missing,
doubled or misplaced term (tied weights, a wrong patch, padding or group) is O(1e-2) or more.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from torchntk.empirical import _method, empirical_ntk, layerwise
from torchntk.empirical.jacobian import JacobianMethod
from torchntk.empirical.layerwise import AUTO_SAVING, LayerwiseMethod

F64 = torch.float64
SEEDS = (0, 1, 2)

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors (tests/conftest.py)


def reference(model, x1, x2=None):
    """Theta (N1, N2, k, k) from per-sample Jacobians over every trainable parameter, float64."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def single(p, x):
        return functional_call(model, p, (x.unsqueeze(0).clone(),)).reshape(-1)

    def jac(x):
        j = vmap(jacrev(single), in_dims=(None, 0))(params, x)
        return torch.cat([t.reshape(x.shape[0], t.shape[1], -1) for t in j.values()], dim=2)

    with sdpa_kernel([SDPBackend.MATH]):  # torch.func has no batching rule for the fused CPU attention
        j1 = jac(x1)
        j2 = j1 if x2 is None else jac(x2)
    return torch.einsum("ikp,jlp->ijkl", j1, j2)


def check(model, x1, x2, **kwargs):
    """Full, trace and diagonal outputs, x2=None (exactly symmetric) and x2 given, against `reference`."""
    for other in (None, x2):
        want = reference(model, x1, other)
        atol = 1e-10 * float(want.abs().max())
        got = empirical_ntk(model, x1, other, method="layerwise", outputs="full", batch_size=2, **kwargs)
        torch.testing.assert_close(got, want, rtol=0, atol=atol)
        trace = empirical_ntk(model, x1, other, method="layerwise", outputs="trace", batch_size=3, **kwargs)
        torch.testing.assert_close(trace, want.diagonal(dim1=2, dim2=3).mean(-1), rtol=0, atol=atol)
        if other is None:
            assert torch.equal(got, got.permute(1, 0, 3, 2)) and torch.equal(trace, trace.t())
    pairs = x2[:1].expand(*x1.shape)
    want = reference(model, x1, pairs).diagonal(dim1=0, dim2=1).movedim(-1, 0)
    atol = 1e-10 * float(want.abs().max())
    got = empirical_ntk(model, x1, pairs, method="layerwise", outputs="full", diagonal=True, batch_size=2)
    torch.testing.assert_close(got, want, rtol=0, atol=atol)
    got = empirical_ntk(model, x1, pairs, method="layerwise", outputs="trace", diagonal=True, batch_size=2)
    torch.testing.assert_close(got, want.diagonal(dim1=1, dim2=2).mean(-1), rtol=0, atol=atol)


def randomise_batchnorm(model, g):
    """Non-trivial running statistics and affines, so eval-mode BatchNorm is not the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=F64))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=F64) + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=F64))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=F64))


class BasicBlock(nn.Module):
    """conv-BN-ReLU(inplace)-conv-BN + skip (a 1x1 strided projection when the shape changes), ReLU(inplace)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.skip(x)
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, k=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(BasicBlock(4, 4, 1), BasicBlock(4, 6, 2))
        self.head = nn.Linear(6, k)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class TinyEncoder(nn.Module):
    """One TransformerEncoderLayer (batch_first, eval), mean over tokens, a linear readout."""

    def __init__(self, d=8, k=3):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, k)

    def forward(self, x):
        return self.head(self.layer(x).mean(1))


class TokenModel(nn.Module):
    """Embedding (with a padding index) -> Linear -> tanh -> mean over tokens -> Linear."""

    def __init__(self, vocab=7, d=5, k=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.mix = nn.Linear(d, 6)
        self.head = nn.Linear(6, k)

    def forward(self, tokens):
        return self.head(torch.tanh(self.mix(self.emb(tokens))).mean(1))


def conv_net():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2), nn.Tanh(),
        nn.Conv2d(4, 4, 2, padding=1, padding_mode="reflect", groups=2, bias=False), nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, 3, padding="same", padding_mode="circular"), nn.GELU(),
        nn.Flatten(), nn.Linear(6 * 5 * 5, 3))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, stride=2, padding=1, dilation=2, groups=2)
        self.same = nn.Conv1d(4, 3, 4, padding="same")  # even filter: one more zero on the right
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.sin(self.same(torch.sin(self.conv(x)))).mean(-1))


class SplitImages(nn.Module):
    """Each input (2 C, H, W) is cut into two images (C, H, W) that one convolution sees as a batch
    of two: the convolution's per-sample batch is 2, and both halves belong to the same input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.head = nn.Linear(2 * 3, 2)

    def forward(self, x):
        n, c2, h, w = x.shape
        z = torch.tanh(self.conv(x.reshape(2 * n, c2 // 2, h, w))).mean((2, 3))
        return self.head(z.reshape(n, -1))


@pytest.mark.parametrize("seed", SEEDS)
def test_residual_block_with_eval_batchnorm_and_inplace_relu(seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(100 + seed)
    model = TinyResNet().double().eval()
    randomise_batchnorm(model, g)
    x1, x2 = torch.randn(5, 2, 6, 6, generator=g, dtype=F64), torch.randn(3, 2, 6, 6, generator=g, dtype=F64)
    saved = x1.clone()
    runner = _method(model, "layerwise", 3, x1)
    # every convolution takes (b), the Jacobian's own per-example gradients: nothing saved, so auto
    # keeps the Jacobian (the Sequential conv path declines the residual blocks)
    assert runner.saving(5) < AUTO_SAVING and isinstance(_method(model, "auto", 3, x1), JacobianMethod)
    assert set(runner.plan.fallback) == {n for n, _ in model.named_parameters() if ".bn" in n or "stem.1" in n
                                          or "skip.1" in n}  # only the BatchNorm affines
    check(model, x1, x2)
    assert torch.equal(x1, saved)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("seed", SEEDS)
def test_transformer_encoder_layer(seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(200 + seed)
    model = TinyEncoder().double().eval()
    x1, x2 = torch.randn(4, 4, 8, generator=g, dtype=F64), torch.randn(3, 4, 8, generator=g, dtype=F64)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    runner = _method(model, "layerwise", 3, x1)
    # attention reads in_proj and out_proj through F.multi_head_attention_forward: those fall back
    assert {"layer.self_attn.in_proj_weight", "layer.self_attn.out_proj.weight"} <= set(runner.plan.fallback)
    assert {"layer.linear1.weight", "layer.linear2.weight", "head.weight"} <= set(runner.plan.weight_names)
    check(model, x1, x2)
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own, from the model
@pytest.mark.parametrize("seed", SEEDS)
def test_convolutions_with_stride_dilation_groups_and_padding(seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(300 + seed)
    model = conv_net().double()
    x1, x2 = torch.randn(4, 2, 7, 7, generator=g, dtype=F64), torch.randn(3, 2, 7, 7, generator=g, dtype=F64)
    runner = _method(model, "layerwise", 3, x1)
    assert runner.plan.fallback == []  # every parameter has a rule
    check(model, x1, x2)
    model1d = Conv1dNet().double()
    y1, y2 = torch.randn(4, 2, 9, generator=g, dtype=F64), torch.randn(3, 2, 9, generator=g, dtype=F64)
    check(model1d, y1, y2)
    split = SplitImages().double()
    z1, z2 = torch.randn(4, 4, 5, 5, generator=g, dtype=F64), torch.randn(3, 4, 5, 5, generator=g, dtype=F64)
    check(split, z1, z2)


@pytest.mark.parametrize("seed", SEEDS)
def test_embedding_on_integer_tokens(seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(400 + seed)
    model = TokenModel().double()
    x1, x2 = torch.randint(0, 7, (5, 6), generator=g), torch.randint(0, 7, (3, 6), generator=g)
    x1[0, :2] = 0  # the padding index: no gradient for its row
    runner = _method(model, "layerwise", 3, x1)
    assert runner.plan.fallback == []
    check(model, x1, x2)


@pytest.mark.parametrize("mode", ["a", "b"])
def test_both_contractions_on_every_layer_kind(mode, monkeypatch):
    """Each untied weight forced to (a) or (b): the two contractions (and, for (a), both orders of
    its products) agree with the reference on convolutions, tokens and embeddings."""
    monkeypatch.setattr(LayerwiseMethod, "_cheaper", lambda self, use, n: mode)
    g = torch.Generator().manual_seed(500)
    torch.manual_seed(5)
    cases = [(conv_net().double(), torch.randn(4, 2, 7, 7, generator=g, dtype=F64)),
             (SplitImages().double(), torch.randn(4, 4, 5, 5, generator=g, dtype=F64)),
             (TinyEncoder().double().eval(), torch.randn(4, 4, 8, generator=g, dtype=F64)),
             (TokenModel().double(), torch.randint(0, 7, (4, 6), generator=g))]
    for model, x in cases:
        runner = _method(model, "layerwise", 3, x)
        assert {u.mode for u in runner.plan.uses if u.weight is not None} == {mode}
        check(model, x[:3], x[3:])


def test_a_blocks_in_slices(monkeypatch):
    """(a) over positions with one row of the first chunk per slice (PAIR_BYTES of 1 byte)."""
    monkeypatch.setattr(LayerwiseMethod, "_cheaper", lambda self, use, n: "a")
    monkeypatch.setattr(layerwise, "PAIR_BYTES", 1)
    g = torch.Generator().manual_seed(510)
    torch.manual_seed(6)
    for model, x in [(TinyEncoder().double().eval(), torch.randn(5, 4, 8, generator=g, dtype=F64)),
                     (conv_net().double(), torch.randn(5, 2, 7, 7, generator=g, dtype=F64))]:
        check(model, x[:3], x[3:])


class Flaky(nn.Module):
    """Calls its layer once more from its third forward on: a layer structure the first input does not show."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = torch.tanh(self.lin(x))
        return self.lin(h) if self.calls > 2 else h


def test_a_changing_layer_structure_is_an_error_and_leaves_no_hooks():
    model = Flaky().double()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="depends on the input values; use method='jacobian'"):
        empirical_ntk(model, torch.randn(4, 3, dtype=F64), method="layerwise")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


class TiedModel(nn.Module):
    """An embedding whose weight is the output head's (module tying), a Linear called twice, and
    a second Linear sharing the first one's bias Parameter."""

    def __init__(self, vocab=6, d=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.inner = nn.Linear(d, d)
        self.other = nn.Linear(d, d)
        self.other.bias = self.inner.bias
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens):
        h = torch.tanh(self.inner(self.emb(tokens)))
        h = torch.tanh(self.inner(h)) + self.other(h)
        return self.head(h.mean(1))


class DirectTie(nn.Module):
    """An output head reading the embedding's weight directly (F.linear): the hooks cannot see that use."""

    def __init__(self, vocab=6, d=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)

    def forward(self, tokens):
        return F.linear(torch.tanh(self.mix(self.emb(tokens))).mean(1), self.emb.weight)


@pytest.mark.parametrize("seed", SEEDS)
def test_tied_weights(seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(600 + seed)
    model = TiedModel().double()
    x1, x2 = torch.randint(0, 6, (4, 5), generator=g), torch.randint(0, 6, (3, 5), generator=g)
    runner = _method(model, "layerwise", 6, x1)
    assert runner.plan.fallback == []
    assert {u.mode for u in runner.plan.uses if u.weight is not None} == {"b"}  # every weight is used twice
    check(model, x1, x2)
    direct = DirectTie().double()
    runner = _method(direct, "layerwise", 6, x1)
    assert runner.plan.fallback == ["emb.weight"]
    check(direct, x1, x2)


class ResidualMLP(nn.Module):
    """Pre-norm residual dense blocks: the dense layers are at one position each, so (a) saves
    almost all of the Jacobian's work, but the module is no nn.Sequential."""

    def __init__(self, d=6, width=12, k=3, blocks=2):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(blocks))
        self.ups = nn.ModuleList(nn.Linear(d, width) for _ in range(blocks))
        self.downs = nn.ModuleList(nn.Linear(width, d) for _ in range(blocks))
        self.head = nn.Linear(d, k)

    def forward(self, x):
        h = self.inp(x)
        for norm, up, down in zip(self.norms, self.ups, self.downs, strict=True):
            h = h + down(F.gelu(up(norm(h))))
        return self.head(h)


@pytest.mark.parametrize("seed", SEEDS)
def test_auto_takes_layerwise_where_it_saves(seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(800 + seed)
    model = ResidualMLP().double()
    x1, x2 = torch.randn(6, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
    runner = _method(model, "auto", 3, x1)
    assert isinstance(runner, LayerwiseMethod) and runner.saving(6) >= AUTO_SAVING
    assert {u.mode for u in runner.plan.uses} == {"a"}
    assert all(".norms." in "." + n for n in runner.plan.fallback) and len(runner.plan.fallback) == 4
    check(model, x1, x2)
    for outputs in ("full", "trace"):  # auto is this method
        torch.testing.assert_close(empirical_ntk(model, x1, x2, outputs=outputs),
                                   empirical_ntk(model, x1, x2, method="layerwise", outputs=outputs), rtol=0, atol=0)


class CustomLinear(nn.Linear):
    """A Linear subclass with a forward of its own: not torch's rule, so its parameters fall back."""

    def forward(self, x):
        return F.linear(x, self.weight.tanh(), self.bias)


def test_unrecognised_parameters_fall_back_and_float32():
    torch.manual_seed(7)
    g = torch.Generator().manual_seed(700)
    model = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), CustomLinear(5, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x1, x2 = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(3, 3, generator=g, dtype=F64)
    runner = _method(model, "layerwise", 2, x1)
    assert runner.plan.fallback == ["1.weight", "1.bias", "2.weight", "2.bias"]
    check(model, x1, x2)
    model[0].weight.requires_grad_(False)  # frozen tensors count nowhere; the bias alone still has its rule
    model[4].bias.requires_grad_(False)
    runner = _method(model, "layerwise", 2, x1)
    assert runner.plan.weight_names == ["0.bias", "4.weight"]
    check(model, x1, x2)
    model.float()
    got = empirical_ntk(model, x1.float(), method="layerwise")
    ref = reference(model.double(), x1)
    # float32 rounding of O(1) sums of ~10^2 products: ~1e-6 relative; 1e-5 leaves a margin
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_nothing_recognised():
    class Raw(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 2, dtype=F64))

        def forward(self, x):
            return torch.tanh(x @ self.w.t())

    x = torch.randn(4, 2, dtype=F64)
    assert isinstance(_method(Raw(), "auto", 3, x), JacobianMethod)
    with pytest.raises(ValueError, match="nn.Linear.*method='jacobian'"):
        empirical_ntk(Raw(), x, method="layerwise")
