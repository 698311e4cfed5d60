"""Any torch.nn.Module as a pure function of its trainable parameters (for torch.func)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.func import functional_call


class FunctionalModel:
    """f(params, x) = model(x) with ``params`` the trainable parameters (requires_grad=True).

    Frozen parameters and buffers are held fixed: the empirical NTK sums over trainable ones only.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        named = dict(model.named_parameters())
        self.params = {name: p.detach() for name, p in named.items() if p.requires_grad}
        self.fixed = {name: p.detach() for name, p in named.items() if not p.requires_grad}
        self.fixed.update(dict(model.named_buffers()))

    def __call__(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.model, (params, self.fixed), (x,))

    def single(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """f on one input x (no batch axis) -> (k,): for vmap over samples."""
        return self(params, x.unsqueeze(0)).squeeze(0)

    @property
    def num_params(self) -> int:
        """P, the number of trainable scalars (the sum the empirical NTK runs over)."""
        return sum(p.numel() for p in self.params.values())
