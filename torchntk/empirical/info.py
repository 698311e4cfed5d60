"""What `empirical_ntk` did: the method it used, why "auto" declined the structured path, and how
it chunked the inputs (`EmpiricalInfo`, from ``return_info=True``); and the warning "auto" gives
when it falls back to the Jacobian (`StructuredFallbackWarning`)."""

from __future__ import annotations

from dataclasses import dataclass


class StructuredFallbackWarning(UserWarning):
    """method="auto" computed the empirical NTK by the per-sample Jacobian because the structured
    path does not recognise the model; the message says which module or op it declined. The kernel
    is the same, only slower and larger in memory: silence it with method="jacobian"."""


@dataclass(frozen=True)
class EmpiricalInfo:
    """How one `empirical_ntk` call computed its kernel.

    Attributes:
        method_used: "structured", "layerwise", "jacobian" or "ntk_vp".
        fallback_reason: why method="auto" did not take the structured path (what it declined),
            or None where it took it or another method was asked for.
        autodiff: how torch.func differentiated the model: "per-sample" (vmap over the inputs of
            a chunk), "batched" (the batched forward differentiated at once, for modules such as
            nn.GRU and nn.LSTM that vmap cannot batch; the same numbers since the inputs are
            independent), or None for the structured path.
        batch_size: inputs per chunk.
        panel_bytes: memory for the panel of x1 chunks whose features are kept and reused.
        max_memory: the memory budget, in bytes, that chunks and panel were sized for.
        feature_bytes: estimated bytes of features (and their temporaries) per input.
        activation_bytes: bytes the forward keeps for the backward per input (measured by
            counting saved tensors on one input), plus `memory.COTANGENTS` k copies of the
            largest of them for the backward of k outputs;
            for "ntk_vp" also the k parameter-space vectors of an x2 input. 0 for the structured
            path, whose ``feature_bytes`` count its activations.
        estimated_peak: the planned peak in bytes besides the result: the panel, one streamed
            chunk's features and its activations (and for "ntk_vp" the tangents of a block). An
            estimate from one input's saved tensors, not a measurement.
        feature_calls: chunks whose features were computed, counting recomputations.
        feature_rows: inputs whose features were computed, counting recomputations: equal to the
            number of inputs when each is computed once.
    """

    method_used: str
    fallback_reason: str | None
    autodiff: str | None
    batch_size: int
    panel_bytes: int
    max_memory: int
    feature_bytes: float
    activation_bytes: int
    estimated_peak: int
    feature_calls: int
    feature_rows: int
