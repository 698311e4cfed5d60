"""The examples in the public modules' docstrings run and print what they say (doctest)."""

from __future__ import annotations

import doctest
import importlib

import pytest

# Every module whose docstrings hold `>>>` examples. test_every_docstring_example_is_collected
# below fails when a module gains examples without being listed here.
MODULES = [
    "torchntk",
    "torchntk.dynamics",
    "torchntk.dynamics.flow",
    "torchntk.empirical",
    "torchntk.empirical.operator",
    "torchntk.scale",
    "torchntk.scale.compute",
    "torchntk.scale.regression",
    "torchntk.studies",
    "torchntk.sklearn",
    "torchntk.sklearn.estimators",
    "torchntk.sklearn.kernels",
    "torchntk.sklearn.packing",
    "torchntk.model_io",
    "torchntk.networks.network",
    "torchntk.engine.serial",
    "torchntk.gpytorch",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name)
    assert any(t.examples for t in tests), f"{name} lists no docstring examples; remove it from MODULES"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (see the output above)"


def test_every_docstring_example_is_collected():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2] / "torchntk"
    with_examples = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        # A skipped example is one nobody checks: make it small enough to run instead.
        assert "doctest: +SKIP" not in text, f"{path.relative_to(root.parent)} skips a docstring example"
        if ">>> " in text:
            parts = path.relative_to(root.parent).with_suffix("").parts
            with_examples.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert with_examples <= set(MODULES), f"add these modules to MODULES: {sorted(with_examples - set(MODULES))}"
