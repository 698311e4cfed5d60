"""Network descriptions as plain JSON data, and back, without pickle.

    data = spec.to_dict()     # {"format": "torchntk.spec", "version": 1, "network": {...}}
    spec = from_dict(data)    # the same description: same kernels, same networks per seed

Each layer is ``{"layer": NAME, **arguments}``; ``serial`` holds ``"layers"``, ``parallel``
holds ``"branches"``. Activations are saved by class (``{"layer": "LeakyReLU", "slope": 0.1}``)
or, for the quadrature ones, by name (``{"layer": "Activation", "name": "tanh", "nodes": 32}``);
a user's own callable cannot be saved as data, and says so. Reading checks every field: unknown
layers or arguments, wrong types and documents nested deeper than `MAX_DEPTH` are refused.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any

from ..activations import QUADRATURE, Activation

FORMAT = "torchntk.spec"
VERSION = 1
MAX_DEPTH = 64
"""Deepest nesting of serial/parallel accepted when reading (a bound, so hostile documents fail
with a clear error instead of exhausting the stack)."""


def activation_to_dict(act: Activation) -> dict[str, Any]:
    """The plain-data form of an activation (see the module docstring)."""
    if hasattr(act, "config"):
        return {"layer": type(act).__name__, **act.config()}
    if type(act) is Activation:
        if act.name in QUADRATURE and act.fn is QUADRATURE[act.name] and act.derivative is None:
            return {"layer": "Activation", "name": act.name, "nodes": act.nodes}
        raise ValueError(f"activation {act.name!r} is a user callable and cannot be saved as data; use a built-in "
                         f"activation or a named one ({', '.join(sorted(QUADRATURE))}).")
    params = [p for p in inspect.signature(type(act).__init__).parameters if p != "self"]
    if not params:
        return {"layer": type(act).__name__}
    from ..activations import LeakyReLU, PiecewiseLinear
    if isinstance(act, LeakyReLU):
        return {"layer": "LeakyReLU", "slope": act.slope}
    if type(act) is PiecewiseLinear:
        return {"layer": "PiecewiseLinear", "a": act.a, "b": act.b}
    raise ValueError(f"activation {act!r} cannot be saved as data (it has no config()).")


def node_of(layer) -> dict[str, Any]:
    """One layer's plain-data node (a nested serial gives its node, not a whole document)."""
    return layer.node() if hasattr(layer, "node") else layer.to_dict()


def to_dict(spec) -> dict[str, Any]:
    """The versioned plain-data document of a description."""
    return {"format": FORMAT, "version": VERSION, "network": spec.node()}


def _registry() -> dict[str, Any]:
    import torchntk as tn

    from . import branches, pointwise, spatial
    names = {"Dense": tn.Dense, "Conv": spatial.Conv, "AvgPool": spatial.AvgPool, "MaxPool": spatial.MaxPool,
             "GlobalAvgPool": spatial.GlobalAvgPool, "Flatten": spatial.Flatten, "LayerNorm": pointwise.LayerNorm,
             "FanOut": branches.FanOut, "FanInSum": branches.FanInSum, "FanInConcat": branches.FanInConcat}
    import torchntk.activations as acts
    for name in dir(acts):
        obj = getattr(acts, name)
        if isinstance(obj, type) and issubclass(obj, Activation) and obj is not Activation:
            names.setdefault(name, obj)
    return names


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
    from ..spec import Serial
    spec = _layer(data["network"], "network", 0)
    if not isinstance(spec, Serial):
        raise ValueError("the description's top level must be a serial(...) of layers.")
    return spec


def _layer(node: Any, where: str, depth: int):
    from ..spec import parallel, serial
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: the description nests deeper than {MAX_DEPTH} levels.")
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
        if set(args) - {"name", "nodes"} or args.get("name") not in QUADRATURE:
            raise ValueError(f"{where}: an Activation entry needs a 'name' among {sorted(QUADRATURE)} (and optional "
                             "'nodes').")
        _check_values(args, where)
        return Activation(QUADRATURE[args["name"]], name=args["name"], nodes=args.get("nodes", 32))
    registry = _registry()
    if kind not in registry:
        raise ValueError(f"{where}: unknown layer {kind!r}; known: {sorted(registry) + ['parallel', 'serial']}.")
    _check_values(args, where)
    cls = registry[kind]
    params = inspect.signature(cls.__init__).parameters
    unknown = set(args) - set(params)
    if unknown:
        raise ValueError(f"{where}: {kind} takes no argument(s) {sorted(unknown)}.")
    positional = [p.name for p in params.values() if p.kind == p.POSITIONAL_OR_KEYWORD and p.name != "self"]
    call_args = [_untuple(args.pop(name)) for name in positional if name in args]
    try:
        return cls(*call_args, **{k: _untuple(v) for k, v in args.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot build {kind} from {node}: {exc}") from None


def _check_values(args: dict, where: str) -> None:
    for key, value in args.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            ok = item is None or isinstance(item, str) or (
                isinstance(item, numbers.Real) and not isinstance(item, bool))
            if not ok:
                raise ValueError(f"{where}: argument {key!r} must be a number, a string or a list of numbers, "
                                 f"got {_brief(value)}.")


def _untuple(value):
    return tuple(value) if isinstance(value, list) else value


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."
