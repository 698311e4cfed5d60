"""Any torch.nn.Module as a pure function of its trainable parameters (for torch.func)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.func import functional_call

from .keywords import Inputs


class FunctionalModel:
    """f(params, x) = model(x) with ``params`` the trainable parameters (requires_grad=True).

    Frozen parameters and buffers are held fixed: the empirical NTK sums over trainable ones only.
    ``params`` holds each tensor once (under its first name); a tied tensor is passed to every
    (module, attribute) slot that holds it, so its gradient sums over its uses. Each slot is
    swapped exactly once per call: torch's own weight tying swaps a module used twice twice, and
    then restores the stand-in instead of the user's nn.Parameter.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params: dict[str, Tensor] = {}
        self.fixed: dict[str, Tensor] = {}
        self._slots: dict[str, str] = {}  # one name per (module, attribute) -> the name in params/fixed
        first: dict[int, str] = {}
        taken: set[tuple[int, str]] = set()
        named = [(n, t, True) for n, t in model.named_parameters(remove_duplicate=False)]
        named += [(n, t, False) for n, t in model.named_buffers(remove_duplicate=False)]
        for name, tensor, is_param in named:
            prefix, _, attr = name.rpartition(".")
            slot = (id(model.get_submodule(prefix)), attr)
            if slot in taken:
                continue  # the same module reached under another name
            taken.add(slot)
            canonical = first.setdefault(id(tensor), name)
            self._slots[name] = canonical
            if canonical == name:
                target = self.params if is_param and tensor.requires_grad else self.fixed
                target[name] = tensor.detach()

    def __call__(self, params: dict[str, Tensor], x: Tensor | Inputs) -> Tensor:
        """f(params, x), or f(params, x; **kw) for inputs with keyword tensors (`Inputs`)."""
        values = {slot: params[c] if c in params else self.fixed[c] for slot, c in self._slots.items()}
        # a clone: a model whose first op is in place (nn.ReLU(inplace=True)) would write into the
        # caller's inputs, and torch.func refuses writes into a tensor captured from outside
        x = x.clone()
        if isinstance(x, Inputs):
            return functional_call(self.model, values, (x.x,), x.kwargs, tie_weights=False)
        return functional_call(self.model, values, (x,), tie_weights=False)

    def single(self, params: dict[str, Tensor], x: Tensor | Inputs) -> Tensor:
        """f on one input x (no batch axis) -> (k,): for vmap over samples."""
        return self(params, x.unsqueeze(0)).squeeze(0)

    @property
    def num_params(self) -> int:
        """P, the number of trainable scalars (the sum the empirical NTK runs over)."""
        return sum(p.numel() for p in self.params.values())
