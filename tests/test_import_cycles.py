"""No import circle inside torchntk, counting imports inside functions: a lazy import that only
dodges a circle at run time is still a circle in the design.

Edges: module A imports module B when A names B (or a name from B) in any import statement,
anywhere in A. Two kinds of edge are not design dependencies and are left out: to A's own
ancestors (Python imports them before A anyway) and from a package's __init__ to its own
children (re-exports).
"""

import ast
from pathlib import Path

import torchntk


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at ``root``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement of ``module`` refers to (targets and, for
    ``from X import Y``, X.Y as well, in case Y is a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                head = ".".join(base + ([node.module] if node.module else []))
            else:
                head = node.module or ""
            names.add(head)
            names.update(f"{head}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (see the module docstring for what is left out)."""
    modules = module_files(root)
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(module, path):
            while name and name not in modules:      # a name inside a module: that module
                name = name.rpartition(".")[0]
            if not name or name == module or module.startswith(name + "."):
                continue
            if path.name == "__init__.py" and name.startswith(module + "."):
                continue
            targets.add(name)
        graph[module] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_torchntk_has_no_import_circle():
    root = Path(torchntk.__file__).parent
    graph = import_graph(root)
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100   # the walk saw the package
    assert circles(graph) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_lazy_import_that_closes_a_circle_is_caught(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import g\n\ndef f():\n    return g()\n",
        "b.py": "def g():\n    from .a import f  # only at call time\n    return f\n",
        "sub/__init__.py": "from .c import h\n",
        "sub/c.py": "from ..a import f\n\ndef h():\n    return f\n",
    })
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.sub"] == set()            # a re-export from a package's own child
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert circles(graph) == [["pkg.a", "pkg.b"]]


def test_a_chain_through_packages_is_no_circle(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "from .top import run\n",
        "top.py": "from . import low\nfrom .mid.m import m\n\ndef run():\n    return m(low)\n",
        "low.py": "import math\n",
        "mid/__init__.py": "",
        "mid/m.py": "from .. import low\n\ndef m(x):\n    return x\n",
    })
    graph = import_graph(root)
    assert graph["pkg.top"] == {"pkg.low", "pkg.mid.m"} and circles(graph) == []
