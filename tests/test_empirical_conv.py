"""The exact structured empirical NTK of convolutional networks (torchntk.empirical.conv_method).

Every case is checked against the Jacobian contraction (torch.func, per-sample Jacobians) on small
float64 networks: the same sums of products in another order, so they agree to round-off.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchntk.empirical import _method, empirical_ntk
from torchntk.empirical.conv_method import ConvStructuredMethod
from torchntk.networks.modules import pad_input

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-12}  # relative to O(1) entries: ~10^4 ulp of margin for sums of ~10^3 terms


pytestmark = pytest.mark.usefixtures("one_thread")   # small tensors (tests/conftest.py)


class ProtocolConv(nn.Module):
    """An NTK-parameterised convolution with the protocol the structured path reads:
    forward = conv(pad(x), weight, stride) * weight_scale + bias_scale * bias, padded as torchntk's
    layers pad ("same" with stride s: (ceil(n / s) - 1) s + f - n in all, the lower half first)."""

    def __init__(self, c_in, c_out, filt, stride=1, padding="same", bias_std=0.5, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        filt = tuple(filt)
        self.weight = nn.Parameter(torch.randn(c_out, c_in, *filt, generator=g, dtype=F64))
        self.bias = nn.Parameter(torch.randn(c_out, generator=g, dtype=F64))
        self.weight_scale = 1.3 / math.sqrt(c_in * math.prod(filt))
        self.bias_scale = bias_std
        self.stride = (stride,) * len(filt)
        self.padding = padding

    def forward(self, x):
        x = pad_input(x, tuple(self.weight.shape[2:]), self.stride, self.padding)
        conv = F.conv1d if self.weight.dim() == 3 else F.conv2d
        z = conv(x, self.weight, stride=self.stride) * self.weight_scale
        return z + self.bias_scale * self.bias.reshape(-1, *([1] * (self.weight.dim() - 2)))


class ProtocolDense(nn.Module):
    def __init__(self, n_in, n_out, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(n_out, n_in, generator=g, dtype=F64))
        self.bias = nn.Parameter(torch.randn(n_out, generator=g, dtype=F64))
        self.weight_scale, self.bias_scale = 1 / math.sqrt(n_in), 0.2

    def forward(self, a):
        return self.weight_scale * a @ self.weight.t() + self.bias_scale * self.bias


def _cases():
    torch.manual_seed(0)
    yield "gap readout", nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding="same"), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)), (2, 6, 5)
    yield "flatten readout, stride, valid", nn.Sequential(
        nn.Conv2d(2, 3, (3, 2)), nn.GELU(), nn.Conv2d(3, 4, 2, stride=2, bias=False), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 5), nn.Tanh(), nn.Linear(5, 3)), (2, 6, 5)
    yield "circular and reflect padding", nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular"), nn.Softplus(),
        nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Tanh(), nn.Flatten(), nn.Linear(3, 2)), (1, 5, 5)
    yield "conv1d", nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 3, 2, stride=2), nn.Tanh(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(3, 2)), (2, 8)
    yield "one output, single conv", nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 3, 1)), (2, 6, 5)
    yield "protocol modules", nn.Sequential(
        ProtocolConv(2, 4, (3, 3), padding="same", seed=1), nn.ReLU(),
        ProtocolConv(4, 4, (3, 3), stride=2, padding="circular", seed=2), nn.ReLU(),
        ProtocolConv(4, 3, (2, 2), padding="valid", seed=3), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), ProtocolDense(3, 2, seed=4)), (2, 6, 6)
    yield "protocol conv1d", nn.Sequential(
        ProtocolConv(1, 3, (3,), padding="circular", seed=5), nn.ReLU(), ProtocolConv(3, 2, (2,), seed=6),
        nn.Flatten(), ProtocolDense(2 * 7, 2, seed=7)), (1, 7)
    yield "max pooling", nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 3, 2), nn.Tanh(),
        nn.MaxPool2d((2, 1), stride=1), nn.Flatten(), nn.Linear(3 * 1 * 1, 2)), (2, 6, 5)
    yield "max pooling 1d", nn.Sequential(
        nn.Conv1d(2, 3, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(3 * 3, 2)), (2, 8)
    frozen = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    frozen[0].weight.requires_grad_(False)
    frozen[2].bias.requires_grad_(False)
    frozen[6].weight.requires_grad_(False)
    yield "frozen tensors", frozen, (2, 5, 4)


CASES = list(_cases())


@pytest.mark.parametrize("name, model, shape", CASES, ids=[c[0] for c in CASES])
def test_structured_equals_the_jacobian_contraction(name, model, shape):
    model = model.double()
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(5, *shape, generator=g, dtype=F64), torch.randn(3, *shape, generator=g, dtype=F64)
    assert isinstance(_method(model, "auto", model(x1[:1]).shape[1], x1), ConvStructuredMethod)
    for x_other in (None, x2):
        for outputs in ("full", "trace"):
            want = empirical_ntk(model, x1, x_other, method="jacobian", outputs=outputs)
            got = empirical_ntk(model, x1, x_other, method="structured", outputs=outputs, batch_size=2)
            torch.testing.assert_close(got, want, **TOL)
    for outputs in ("full", "trace"):
        want = empirical_ntk(model, x1, x2[:1].expand(5, *shape), method="jacobian", outputs=outputs)
        want = want.diagonal(dim1=0, dim2=1).movedim(-1, 0)
        got = empirical_ntk(model, x1, x2[:1].expand(5, *shape), method="structured", outputs=outputs,
                            diagonal=True, batch_size=2)
        torch.testing.assert_close(got, want, **TOL)


def test_float32_and_batch_sizes():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    x = torch.randn(7, 1, 6, 6)
    ref = empirical_ntk(model.double(), x.double(), method="jacobian")
    model.float()
    for b in (1, 3, 7):
        got = empirical_ntk(model, x, batch_size=b)
        # float32 rounding of O(1) sums of ~10^3 products: ~1e-6 relative; 1e-5 leaves a margin.
        torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_other_modules_fall_back_or_say_why():
    torch.manual_seed(0)
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 1)).double()
    x = torch.randn(3, 1, 6, 6, dtype=F64)
    assert not isinstance(_method(pooled, "auto", 1, x), ConvStructuredMethod)  # the Jacobian contraction
    with pytest.raises(ValueError, match="AvgPool2d.*method='jacobian'"):
        empirical_ntk(pooled, x, method="structured")
    grouped = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(32, 1)).double()
    with pytest.raises(ValueError, match="groups or dilation"):
        empirical_ntk(grouped, torch.randn(2, 2, 6, 6, dtype=F64), method="structured")
