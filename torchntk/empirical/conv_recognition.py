"""Reading a model as a chain of operations (`conv_ops`) for `conv_method`, or declining with NotStructured.

Applies to nn.Sequential stacks of convolutions (nn.Conv1d / nn.Conv2d, or any module with the
NTK-parameterised conv protocol below), dense layers, elementwise activations, nn.Flatten,
global average pooling (nn.AdaptiveAvgPool1d(1) / nn.AdaptiveAvgPool2d(1)) and max pooling
(nn.MaxPool1d / nn.MaxPool2d without padding or dilation), and to the networks of architecture
descriptions without branches; no trainable parameter may serve two layers (tied weights decline).

Conv protocol (torchntk's NTK-parameterised convolutions; plain nn.Conv has scales 1): attributes
``weight`` (C_out, C_in, *filter), ``bias`` (C_out,) or None, floats ``weight_scale`` and
``bias_scale``, tuple ``stride`` and str ``padding`` in {"valid", "same", "circular"}; forward
= conv(pad(x), weight, stride) * weight_scale + bias_scale * bias, padded as
`torchntk.networks.modules.pad_input` pads ("same" and "circular" with stride s pad an axis of n
positions by (ceil(n / s) - 1) s + f - n in all, the lower half first). Each convolution is
checked against its module on the first input (`conv_method`): one that pads or strides
otherwise declines.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..networks import modules as finite
from ..networks.network import NTKNetwork
from .conv_ops import ConvOp, FlattenOp, MaxPoolOp, Op, PoolOp
from .structured import ELEMENTWISE_MODULES, DenseOp, ElementwiseOp, NotStructured, check_untied, elementwise_op

PAD_MODES = {"zeros": "constant", "circular": "circular", "reflect": "reflect", "replicate": "replicate"}


def conv_plan(model: nn.Module) -> list[Op]:
    """The chain of operations of ``model``, or NotStructured saying why (see the module doc)."""
    if isinstance(model, NTKNetwork) and isinstance(model.body, nn.Sequential):
        model = model.body   # a network of a description: its chain of modules
    if not isinstance(model, nn.Sequential):
        raise NotStructured(f"{type(model).__name__} is not an nn.Sequential of convolutions, dense layers, "
                            "elementwise activations, Flatten and global average pooling.")
    check_untied(model)
    ops = _ops(model)
    if not any(isinstance(op, (ConvOp, PoolOp, FlattenOp, MaxPoolOp)) for op in ops):
        raise NotStructured("it holds no convolution, pooling or Flatten.")
    return ops


class _MeanKeepDims(nn.Module):
    """Global average pooling that keeps singleton positions, as nn.AdaptiveAvgPool*(1) does."""

    def forward(self, a: Tensor) -> Tensor:
        return a.mean(dim=tuple(range(2, a.dim())), keepdim=True)


class _SumKeepDims(nn.Module):
    """Global sum pooling that keeps singleton positions."""

    def forward(self, a: Tensor) -> Tensor:
        return a.sum(dim=tuple(range(2, a.dim())), keepdim=True)


def _ops(module: nn.Module) -> list[Op]:
    if isinstance(module, nn.Sequential):
        return [op for child in module for op in _ops(child)]
    if isinstance(module, finite.Elementwise):
        return [ElementwiseOp(module.activation)]
    if isinstance(module, finite.Flatten):
        return [FlattenOp()]
    if isinstance(module, finite.GlobalAvgPool):   # (N, C, *S) -> (N, C): a pool then a flatten
        return [PoolOp(_MeanKeepDims()), FlattenOp()]
    if isinstance(module, finite.GlobalSumPool):
        return [PoolOp(_SumKeepDims(), mean=False), FlattenOp()]
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return [_torch_conv(module)]
    if _is_protocol_conv(module):
        return [_protocol_conv(module)]
    if isinstance(module, nn.Linear):
        bias = module.bias
        return [DenseOp(module.weight.detach(), None if bias is None else bias.detach(), 1.0, 1.0,
                        module.weight.requires_grad, bias is not None and bias.requires_grad)]
    weight = getattr(module, "weight", None)
    if isinstance(weight, Tensor) and weight.dim() == 2 and hasattr(module, "weight_scale"):  # NTKDense
        bias = getattr(module, "bias", None)
        return [DenseOp(weight.detach(), None if bias is None else bias.detach(), float(module.weight_scale),
                        float(module.bias_scale), weight.requires_grad, bias is not None and bias.requires_grad)]
    if isinstance(module, ELEMENTWISE_MODULES):
        return [elementwise_op(module)]
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise NotStructured("it contains nn.Flatten with start_dim/end_dim other than 1 and -1.")
        return [FlattenOp()]
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
        dilation = module.dilation if isinstance(module.dilation, tuple) else (module.dilation,)
        padding = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        if any(d != 1 for d in dilation) or any(p != 0 for p in padding) or module.return_indices:
            raise NotStructured("it contains max pooling with padding, dilation or return_indices.")
        return [MaxPoolOp(module, 1 if isinstance(module, nn.MaxPool1d) else 2)]
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        size = module.output_size
        if all(s == 1 for s in ((size,) if isinstance(size, int) else tuple(size))):
            return [PoolOp(module)]
        raise NotStructured("it contains adaptive average pooling to a size other than 1.")
    if any(p.requires_grad for p in module.parameters()):
        raise NotStructured(f"it contains {type(module).__name__}, which has trainable parameters and is not a "
                            "known convolution or dense layer.")
    raise NotStructured(f"it contains {type(module).__name__}, which is not a convolution, dense layer, known "
                        "elementwise activation, Flatten or global average pooling.")


def _torch_conv(module: nn.Conv1d | nn.Conv2d) -> ConvOp:
    if module.groups != 1 or any(d != 1 for d in module.dilation):
        raise NotStructured(f"it contains {type(module).__name__} with groups or dilation other than 1.")
    filt = module.kernel_size
    if module.padding == "valid":
        per_axis = [(0, 0)] * len(filt)
    elif module.padding == "same":
        per_axis = [((f - 1) // 2, f - 1 - (f - 1) // 2) for f in filt]
    else:
        per_axis = [(p, p) for p in module.padding]
    pads = tuple(v for pair in reversed(per_axis) for v in pair)
    bias = module.bias
    return ConvOp(module, module.weight.detach(), None if bias is None else bias.detach(), 1.0, 1.0,
                  tuple(module.stride), pads, PAD_MODES[module.padding_mode], module.weight.requires_grad,
                  bias is not None and bias.requires_grad)


def _is_protocol_conv(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    # a module that says it is not a plain convolution (per-position weights, a dilated input)
    # is never read as one, whatever its attributes look like
    return (getattr(module, "plain_convolution", True)
            and isinstance(weight, Tensor) and weight.dim() in (3, 4) and hasattr(module, "weight_scale")
            and hasattr(module, "bias_scale") and isinstance(getattr(module, "padding", None), str)
            and hasattr(module, "stride"))


def _protocol_conv(module: nn.Module) -> ConvOp:
    weight, bias = module.weight, getattr(module, "bias", None)
    filt = tuple(weight.shape[2:])
    stride = module.stride
    stride = tuple(stride) if isinstance(stride, (tuple, list)) else (int(stride),) * len(filt)
    padding = module.padding.lower()
    if padding not in ("valid", "same", "circular"):
        raise NotStructured(f"it contains a convolution with padding {module.padding!r} (not valid/same/circular).")
    return ConvOp(module, weight.detach(), None if bias is None else bias.detach(), float(module.weight_scale),
                  float(module.bias_scale), stride, None, "circular" if padding == "circular" else "constant",
                  weight.requires_grad, bias is not None and bias.requires_grad, padding)
