"""Running a model where torch.func can differentiate it, and saying clearly where it cannot.

Two of torch's inference shortcuts have no derivative rules for torch.func: the fused fast path
of nn.TransformerEncoderLayer / nn.MultiheadAttention in eval mode (no forward-mode AD, no vmap
batching rule), and the fused CPU/GPU attention kernels of scaled_dot_product_attention (flash,
memory-efficient). A third: oneDNN's (mkldnn's) CPU LSTM kernel has no forward-mode AD.
`differentiable_kernels` switches these off for the duration of a kernel computation (oneDNN only
for models holding a recurrent module, as its convolutions have the rules and are faster), so
that attention runs as plain matrix products and softmax and recurrences by torch's own cells:
the same function (equal to round-off), differentiable by every method. Every setting is put back
afterwards.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

AUTODIFF_ERRORS = (RuntimeError, NotImplementedError)
"""What torch raises where an op has no torch.func rule (a batching rule, forward-mode AD)."""

SUSPECT_MODULES = (nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
"""Modules whose fused kernels are the usual reason torch.func fails on a model."""


@contextlib.contextmanager
def differentiable_kernels(model: nn.Module) -> Iterator[None]:
    """Within: no MHA fast path, scaled_dot_product_attention by its math backend only, and for a
    model holding an nn.RNNBase no oneDNN (see the module doc)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            if any(isinstance(m, nn.RNNBase) for m in model.modules()):
                with warnings.catch_warnings():  # setting the flags reports that oneDNN's TF32 needs an Intel GPU
                    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
                    stack.enter_context(torch.backends.mkldnn.flags(
                        enabled=False, deterministic=torch.backends.mkldnn.deterministic))
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def suspects(model: nn.Module) -> str:
    """' (the model holds GRU 'rnn', ...)' naming the modules likely behind a torch.func failure, or ''."""
    found = [f"{type(m).__name__} {name!r}" if name else type(m).__name__
             for name, m in model.named_modules() if isinstance(m, SUSPECT_MODULES)]
    return f" (the model holds {', '.join(found[:3])}{', ...' if len(found) > 3 else ''})" if found else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


ALTERNATIVES = {
    "jacobian": "method='ntk_vp' (vector products) may work where the Jacobian does not",
    "ntk_vp": "method='jacobian' may work where vector products do not",
    "layerwise": "method='jacobian' may work where per-sample layer-wise products do not (it differentiates the "
                 "batched forward of models that vmap cannot batch, such as RNNs)",
    "structured": "method='jacobian' differentiates any module",
}


def autodiff_error(method: str, model: nn.Module, *errors: BaseException) -> ValueError:
    """A ValueError naming the method, the torch error(s) behind it and what to try instead."""
    what = "; then ".join(_first_line(e) for e in errors)
    return ValueError(f"method={method!r} could not differentiate the model{suspects(model)}: {what}. "
                      f"{ALTERNATIVES[method][0].upper()}{ALTERNATIVES[method][1:]}.")
