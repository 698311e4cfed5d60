"""The empirical NTK of real models: "auto" says what it did, every method works on residual
networks with in-place ReLU and eval BatchNorm, eval-mode transformers, GRUs and LSTMs (or says
clearly why not), chunks fit a memory budget without changing the kernel, and float32 traces are
as accurate as the full kernel.

References: `_reference` is J J^T from one torch.autograd.grad call per input and output (plain
autograd, loops: a reference only), independent of torch.func and of the library's chunking.
Tolerances: float64 against float64, the same sums of products in another order: 1e-10 relative
(round-off is ~1e-15 per product, a few thousand products per entry here).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import torchntk as tn
from torchntk.empirical import EmpiricalInfo, StructuredFallbackWarning
from torchntk.empirical.memory import parse_bytes

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def _x(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _reference(model, x1, x2=None):
    """(N1, N2, k, k) by per-input, per-output autograd (see the module doc)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def jacobian(x):
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i : i + 1].clone())[0]
            rows.append(torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params,
                                                                                     retain_graph=True)])
                                     for o in out]))
        return torch.stack(rows)

    j1 = jacobian(x1)
    j2 = j1 if x2 is None else jacobian(x2)
    return torch.einsum("akp,blp->abkl", j1, j2)


class BasicBlock(nn.Module):
    """torchvision's residual block: conv-BN-ReLU(inplace)-conv-BN, plus the input, ReLU(inplace)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class TinyResNet(nn.Module):
    def __init__(self, k=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.block = BasicBlock(4)
        self.fc = nn.Linear(4, k)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


class Transformer(nn.Module):
    def __init__(self, nested):
        super().__init__()
        self.embed = nn.Linear(3, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=nested)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


class Recurrent(nn.Module):
    """nn.GRU / nn.LSTM read by a linear layer from the last hidden state: (N, k)."""

    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        _, hidden = self.rnn(x)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM: (h, c)
        return self.head(hidden[-1])


def _randomise_batchnorm(model, seed=0):
    """Running statistics and affine parameters away from 0 / 1, so eval BatchNorm is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model


# -- "auto" says what it did ---------------------------------------------------------------


def test_auto_reports_its_method_and_warns_when_it_falls_back():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    x = _x(4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the structured path: no warning
        kernel, info = tn.empirical_ntk(dense, x, return_info=True)
    assert isinstance(info, EmpiricalInfo) and info.method_used == "structured" and info.fallback_reason is None
    assert torch.equal(kernel, tn.empirical_ntk(dense, x))  # the plain result is the same tensor

    net = _randomise_batchnorm(TinyResNet().double()).eval()
    xr = _x(3, 2, 5, 5)
    with pytest.warns(StructuredFallbackWarning, match=r"method='auto'.*Jacobian.*TinyResNet"):
        kernel, info = tn.empirical_ntk(net, xr, return_info=True)
    assert info.method_used == "jacobian" and "TinyResNet" in info.fallback_reason
    assert info.autodiff == "per-sample"
    torch.testing.assert_close(kernel, tn.empirical_ntk(net, xr, method="jacobian"), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for by name: no warning, no reason
        _, info = tn.empirical_ntk(net, xr, method="jacobian", return_info=True)
    assert info.fallback_reason is None

    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 1)).double()
    with pytest.warns(StructuredFallbackWarning, match="AvgPool2d"):  # names the module it did not recognise
        tn.empirical_ntk(pooled, _x(3, 1, 6, 6))


# -- never crash where the Jacobian works --------------------------------------------------


def test_residual_block_with_inplace_relu_and_eval_batchnorm_under_every_method():
    torch.manual_seed(0)
    net = _randomise_batchnorm(TinyResNet().double()).eval()
    x1, x2 = _x(4, 2, 5, 5), _x(3, 2, 5, 5, seed=1)
    inputs, stats = x1.clone(), [b.clone() for b in net.buffers()]
    want = _reference(net, x1, x2)
    for method in ("auto", "jacobian", "ntk_vp"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StructuredFallbackWarning)
            torch.testing.assert_close(tn.empirical_ntk(net, x1, x2, method=method), want, **TOL)
            trace = tn.empirical_ntk(net, x1, method=method, outputs="trace")
        torch.testing.assert_close(trace, _reference(net, x1).diagonal(dim1=2, dim2=3).mean(-1), **TOL)
    assert torch.equal(x1, inputs)  # the in-place ReLUs wrote into clones only
    assert all(torch.equal(a, b) for a, b in zip(net.buffers(), stats, strict=True))


@pytest.mark.parametrize("nested", [False, True])
def test_eval_transformer_encoder_under_every_method(nested):
    """The eval-mode encoder takes torch's fused fast path (no forward-mode AD: ntk_vp failed with
    NotImplementedError) unless the library switches it off; the value is the same function."""
    torch.manual_seed(0)
    net = Transformer(nested).double().eval()
    x1, x2 = _x(3, 4, 3), _x(2, 4, 3, seed=1)
    want = _reference(net, x1, x2)
    for method in ("auto", "jacobian", "ntk_vp"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nor vmap's "performance drop" warnings of the fused ops
            warnings.simplefilter("ignore", StructuredFallbackWarning)
            torch.testing.assert_close(tn.empirical_ntk(net, x1, x2, method=method), want, **TOL)
    assert torch.backends.mha.get_fastpath_enabled()  # the setting is put back
    # float32 (where the fast path matters most): ntk_vp within float32 round-off of the float64 kernel
    net32 = copy.deepcopy(net).float()
    got = tn.empirical_ntk(net32, x1.float(), x2.float(), method="ntk_vp")
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM], ids=["gru", "lstm"])
def test_recurrent_models_under_every_method(cell):
    """vmap over samples cannot batch torch's RNN ops (a raw RuntimeError under every method
    before); the batched forward is differentiated instead, to the same numbers."""
    torch.manual_seed(0)
    net = Recurrent(cell).double().eval()
    x1, x2 = _x(4, 6, 3), _x(3, 6, 3, seed=1)
    want = _reference(net, x1, x2)
    want_sym = _reference(net, x1)
    for method in ("auto", "jacobian", "ntk_vp"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StructuredFallbackWarning)
            got, info = tn.empirical_ntk(net, x1, x2, method=method, return_info=True)
            torch.testing.assert_close(got, want, **TOL)
            assert info.autodiff == "batched"
            torch.testing.assert_close(tn.empirical_ntk(net, x1, method=method, batch_size=3), want_sym, **TOL)
            diag = tn.empirical_ntk(net, x1, x2[:1].expand(4, 6, 3), method=method, diagonal=True, outputs="trace")
        torch.testing.assert_close(diag, want[:, 0].diagonal(dim1=1, dim2=2).mean(-1), **TOL)
    # float32 LSTM on CPU runs oneDNN's kernel, which has no forward-mode AD; switched off for the call
    net32 = copy.deepcopy(net).float()
    for method in ("jacobian", "ntk_vp"):
        got = tn.empirical_ntk(net32, x1.float(), x2.float(), method=method)
        torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5 * float(want.abs().max()))


class _NoFuncRule(torch.autograd.Function):
    """An autograd.Function without setup_context: torch.func can differentiate it in no way."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return _NoFuncRule.apply(self.lin(x))


@pytest.mark.parametrize("method, alternative", [("jacobian", "ntk_vp"), ("ntk_vp", "jacobian"),
                                                 ("auto", "ntk_vp")])
def test_a_torch_func_failure_is_a_value_error_naming_the_method(method, alternative):
    net = _Custom().double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructuredFallbackWarning)
        with pytest.raises(ValueError, match=rf"could not differentiate the model.*setup_context.*'{alternative}'"):
            tn.empirical_ntk(net, _x(3, 3), method=method)


# -- memory-aware chunking -----------------------------------------------------------------


def test_max_memory_parses_and_rejects_what_it_cannot_read():
    assert parse_bytes("4GiB") == 4 << 30 and parse_bytes("512 MB") == 512 * 10**6 and parse_bytes(1000) == 1000
    assert parse_bytes("1.5KiB") == 1536 and parse_bytes("1e6") == 10**6
    for bad in ("4 parsecs", "", -1, 0, True, [1]):
        with pytest.raises(ValueError, match="max_memory"):
            parse_bytes(bad)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match="too small.*larger max_memory"):
        tn.empirical_ntk(net, _x(4, 3), method="jacobian", max_memory=10)
    _, info = tn.empirical_ntk(net, _x(4, 3), method="jacobian", return_info=True)
    one = info.feature_bytes + info.activation_bytes
    with pytest.raises(ValueError, match="batch_size=4 needs about .* more than max_memory"):
        tn.empirical_ntk(net, _x(4, 3), method="jacobian", batch_size=4, max_memory=int(3 * one))
    tn.empirical_ntk(net, _x(4, 3), method="jacobian", batch_size=2, max_memory=int(3 * one))  # fits


def test_activations_are_measured_and_counted():
    """The activation bytes grow with the image (a convolution with 4 parameters' worth of
    weights per channel keeps 16 x 16 / 8 x 8 = 4 times as much for a larger input), and
    the chunk of "ntk_vp" shrinks to fit its B1 B2 k tangents."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).double()
    wrapped = nn.Sequential(nn.Identity(), nn.Sequential(*net))  # nested: plain Jacobian, not structured
    small = tn.empirical_ntk(TinyResNet().double().eval(), _x(2, 2, 8, 8), method="jacobian", return_info=True)[1]
    large = tn.empirical_ntk(TinyResNet().double().eval(), _x(2, 2, 16, 16), method="jacobian", return_info=True)[1]
    assert 3.5 < large.activation_bytes / small.activation_bytes < 4.5  # 4x the positions
    x = _x(12, 1, 10, 10)
    want = tn.empirical_ntk(wrapped, x, method="jacobian")
    _, roomy = tn.empirical_ntk(wrapped, x, method="ntk_vp", return_info=True)
    assert roomy.batch_size == 12  # everything fits in the default budget
    budget = 40 * roomy.activation_bytes  # a handful of inputs' vector products and their tangents
    got, tight = tn.empirical_ntk(wrapped, x, method="ntk_vp", max_memory=budget, return_info=True)
    assert tight.batch_size < 12 and tight.estimated_peak <= budget
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("method", ["jacobian", "structured"])
def test_max_memory_bounds_the_plan_and_not_the_kernel(method):
    """Every budget gives the same kernel to round-off and a planned peak within the budget. A
    panel of p inputs streams the rest of x2 once, about N + N^2 / (2 p) feature computations in
    all: each input once when x1 fits, at most twice when about half of it does. When x1 does not
    fit, chunks take at most an eighth of the budget so the panel gets 7/8 of it (a chunk of a
    third, as the fixed 2 GiB chunk beside a 4 GiB panel was, leaves it 2/3 and fails here)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 64), nn.Tanh(), nn.Linear(64, 3)).double()
    n = 48
    x, x2 = _x(n, 5), _x(7, 5, seed=1)
    ref, info = tn.empirical_ntk(net, x, method=method, return_info=True)
    assert info.feature_rows == n  # everything in one panel: each input once
    per_input = info.feature_bytes + info.activation_bytes

    def budget(fraction):  # a fraction of x1's (estimated) features and three chunks of one input
        return int(fraction * n * info.feature_bytes + 3 * per_input)

    for memory in (budget(0.6), budget(0.15), f"{int(40 * per_input)}B"):
        got, used = tn.empirical_ntk(net, x, method=method, max_memory=memory, return_info=True)
        torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-14)  # regrouped sums: round-off
        assert used.estimated_peak <= parse_bytes(memory) == used.max_memory
        torch.testing.assert_close(tn.empirical_ntk(net, x, x2, method=method, max_memory=memory),
                                   tn.empirical_ntk(net, x, x2, method=method), rtol=1e-13, atol=1e-14)
    diagonal = tn.empirical_ntk(net, x, method=method, diagonal=True, max_memory=budget(0.15))
    torch.testing.assert_close(diagonal, ref.diagonal(0, 0, 1).permute(2, 0, 1), rtol=1e-13, atol=1e-14)
    _, half = tn.empirical_ntk(net, x, method=method, max_memory=budget(0.6), return_info=True)
    assert half.batch_size < n and half.feature_rows <= 2 * n
    _, tight = tn.empirical_ntk(net, x, method=method, max_memory=budget(0.15), return_info=True)
    assert tight.panel_bytes >= 7 / 8 * tight.max_memory
    if method == "jacobian":  # (the structured features are far smaller than their estimate: one panel)
        assert tight.feature_rows <= 3 * n


# -- float32 accuracy ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["jacobian", "structured"])
def test_float32_trace_is_as_accurate_as_full(method):
    """A 2.1e5-parameter layer and k = 10: the trace sums 2.1e6 products per entry, "full" 2.1e5.
    Measured: one float32 matrix product for the trace was ~1e-4 off the float64 kernel of the same
    model on such reductions (against ~1e-7 for "full"); column blocks of 16384 summed in float64
    bring both to ~1e-7. Bound: 2e-6 relative (Frobenius) for each, 20 float32 epsilons."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(420, 500), nn.ReLU(), nn.Linear(500, 10)).eval()
    x = _x(4, 420, dtype=torch.float32)
    net64 = copy.deepcopy(net).double()
    for outputs in ("full", "trace"):
        want = tn.empirical_ntk(net64, x.double(), method=method, outputs=outputs)
        got = tn.empirical_ntk(net, x, method=method, outputs=outputs)
        assert got.dtype == torch.float32
        assert float((got.double() - want).norm() / want.norm()) < 2e-6, outputs
