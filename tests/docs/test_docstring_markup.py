"""docs/docstring_markup.py, the docstring hook of the site: prose is escaped where
reStructuredText would misread it, and maths, code, doctests and literal blocks are left as
written (an escaped ``|`` inside :math: would turn a norm into a double bar)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))

from docstring_markup import escape_docstring, escape_plain  # noqa: E402


def _escaped(text: str) -> str:
    lines = text.split("\n")
    escape_docstring(lines)
    assert len(lines) == text.count("\n") + 1  # autodoc keeps one entry per line
    return "\n".join(lines)


def test_prose_is_escaped():
    assert escape_plain("the norm |x|, dual_coef_ and (*batch, n)") == \
        "the norm \\|x\\|, dual_coef\\_ and (\\*batch, n)"


def test_math_roles_and_code_are_left_alone():
    text = r"with :math:`\lVert x \rVert = |x|_2` and :math:`a_{ij}^* b_` and ``|y|`` and `dual_coef_`"
    assert escape_plain(text) == text


def test_a_math_role_over_a_line_break_is_left_alone():
    text = "Args:\n    x: the kernel :math:`\\Theta(x, x') = |x|\n        \\cdot |x'|` of |x|."
    assert _escaped(text) == "Args:\n    x: the kernel :math:`\\Theta(x, x') = |x|\n        \\cdot |x'|` of \\|x\\|."


def test_math_blocks_doctests_and_literal_blocks_are_left_alone():
    text = "\n".join([
        "The kernel |K|:",
        "",
        ".. math::",
        "",
        r"    \Theta_{kk'} = \sum_p |\partial_p f_k|^2 *",
        "",
        ".. math:: a_ = |b|",
        "",
        "Example::",
        "",
        "    x_ = |y|",
        "",
        ">>> abs_ = |1|",
        "... z_",
        "After |x|.",
    ])
    expected = text.replace("The kernel |K|", "The kernel \\|K\\|").replace("After |x|", "After \\|x\\|")
    assert _escaped(text) == expected


def _docstring_nodes(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                yield first.value


def test_docstrings_with_latex_are_raw_strings():
    # In a plain string "\tilde" starts with a tab and "\beta" with a backspace: the maths would
    # render wrong with no error anywhere. A docstring with LaTeX must be r"""...""".
    offenders = []
    for path in sorted((ROOT / "torchntk").rglob("*.py")):
        source = path.read_text()
        for node in _docstring_nodes(ast.parse(source)):
            written = ast.get_source_segment(source, node) or ""
            if ("\\" in written and (":math:" in written or ".. math::" in written)
                    and not written.lstrip("bBuU").lower().startswith("r")):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "docstrings with LaTeX that are not raw strings:\n  " + "\n  ".join(offenders)
