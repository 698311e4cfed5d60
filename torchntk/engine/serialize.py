"""Network descriptions as plain JSON data, and back, without pickle.

    data = spec.to_dict()     # {"format": "torchntk.spec", "version": 1, "network": {...}}
    spec = from_dict(data)    # the same description: same kernels, same networks per seed

Each layer is ``{"layer": NAME, **arguments}``; ``serial`` holds ``"layers"``, ``parallel``
holds ``"branches"``. Activations are saved by class (``{"layer": "LeakyReLU", "slope": 0.1}``)
or, for the quadrature ones, by name (``{"layer": "Activation", "name": "tanh", "nodes": 32}``);
a user's own callable cannot be saved as data, and says so. Reading checks every field: unknown
layers or arguments, wrong types and documents nested deeper than `base.MAX_NESTING` are refused.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any

from .. import activations
from ..activations import QUADRATURE, Activation
from .attention import SelfAttention
from .base import FORMAT, MAX_NESTING, VERSION, Layer
from .branches import FanInConcat, FanInProd, FanInSum, FanOut
from .dense import Dense
from .graph import Aggregate
from .local import ConvLocal, ConvTranspose
from .pointwise import LayerNorm
from .serial import Serial, parallel, serial
from .spatial import AvgPool, Conv, Flatten, GlobalAvgPool, GlobalSumPool, MaxPool, SumPool

_LAYERS: dict[str, type] = {cls.__name__: cls for cls in (
    Dense, Conv, AvgPool, SumPool, MaxPool, GlobalAvgPool, GlobalSumPool, Flatten, LayerNorm, FanOut, FanInSum,
    FanInProd, FanInConcat, SelfAttention, Aggregate, ConvLocal, ConvTranspose)}
_ACTIVATIONS: dict[str, type] = {name: obj for name, obj in vars(activations).items()
                                 if isinstance(obj, type) and issubclass(obj, Activation) and obj is not Activation}


def from_dict(data: Any):
    """The description saved by `to_dict` (a `Serial`); raises ValueError on anything else."""
    if isinstance(data, dict) and data.get("layer") == "serial":
        data = {"format": FORMAT, "version": VERSION, "network": data}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a torchntk network description: expected a dict with format {FORMAT!r}.")
    if data.get("version") != VERSION:
        raise ValueError(f"unsupported description version {data.get('version')!r}; this torchntk reads {VERSION}.")
    if set(data) != {"format", "version", "network"}:
        raise ValueError(f"unexpected keys in the description: {sorted(set(data) - {'format', 'version', 'network'})}.")
    spec = _layer(data["network"], "network", 0)
    if not isinstance(spec, Serial):
        raise ValueError("the description's top level must be a serial(...) of layers.")
    return spec


def _layer(node: Any, where: str, depth: int) -> Layer | Activation:
    if depth > MAX_NESTING:
        raise ValueError(f"{where}: the description nests deeper than the {MAX_NESTING} levels of serial / "
                         "parallel a description may hold.")
    if not isinstance(node, dict) or not isinstance(node.get("layer"), str):
        raise ValueError(f"{where}: each layer must be a dict with a string 'layer' entry, got {_brief(node)}.")
    kind, args = node["layer"], {k: v for k, v in node.items() if k != "layer"}
    if kind in ("serial", "parallel"):
        key = "layers" if kind == "serial" else "branches"
        if set(args) != {key} or not isinstance(args[key], list):
            raise ValueError(f"{where}: a {kind} holds exactly one list {key!r}.")
        parts = [_layer(item, f"{where}.{key}[{i}]", depth + 1) for i, item in enumerate(args[key])]
        return serial(*parts) if kind == "serial" else parallel(*parts)
    if kind == "Activation":
        if "fn" in args:
            raise ValueError(f"{where}: activation {args.get('name')!r} is user code ({args['fn']!r}); a description "
                             "holding it is recorded by name only and cannot be rebuilt from data.")
        if set(args) - {"name", "nodes"} or args.get("name") not in QUADRATURE:
            raise ValueError(f"{where}: an Activation entry needs a 'name' among {sorted(QUADRATURE)} (and optional "
                             "'nodes').")
        _check_values(args, where)
        return Activation(QUADRATURE[args["name"]], name=args["name"], nodes=args.get("nodes"))
    cls = _LAYERS.get(kind) or _ACTIVATIONS.get(kind)
    if cls is None:
        known = sorted([*_LAYERS, *_ACTIVATIONS, "Activation", "parallel", "serial"])
        raise ValueError(f"{where}: unknown layer {kind!r}; known: {known}.")
    _check_values(args, where)
    params = {name for name, p in inspect.signature(cls.__init__).parameters.items()
              if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = set(args) - params
    if unknown:
        raise ValueError(f"{where}: {kind} takes no argument(s) {sorted(unknown)}.")
    try:   # every argument by its name: a document's keys are names, never positions
        return cls(**{k: _untuple(v) for k, v in args.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot build {kind} from {node}: {exc}") from None


def _check_values(args: dict, where: str) -> None:
    for key, value in args.items():
        if isinstance(value, bool):   # a switch (normalize_edges); never inside a list of sizes
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            ok = item is None or isinstance(item, str) or (
                isinstance(item, numbers.Real) and not isinstance(item, bool))
            if not ok:
                raise ValueError(f"{where}: argument {key!r} must be a number, a string, true/false or a list of "
                                 f"numbers, got {_brief(value)}.")


def _untuple(value):
    return tuple(value) if isinstance(value, list) else value


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
