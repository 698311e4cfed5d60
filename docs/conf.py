"""Sphinx configuration for torchntk's documentation.

Build the site (warnings are errors, so a broken cross-reference fails the build):

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The gallery figures are drawn off-screen; torch's threads would only fight Sphinx for the cores.
os.environ.setdefault("MPLBACKEND", "Agg")

import torchntk  # noqa: E402

project = "torchntk"
author = "the torchntk authors"
copyright = "the torchntk authors; Apache-2.0"
version = release = torchntk.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# Google-style docstrings ("Args:", "Returns:"), the style of the whole code base.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections as fields, so that a documented property does not appear twice.
napoleon_use_ivar = True
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": False}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autosummary_generate = False
# Docstrings write formulas as plain text (Theta(L), Sigma(l+1)); `x` in backticks is code.
default_role = "code"

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"torchntk {release}"
html_static_path = ["_static"]


def _write_cli_help() -> None:
    """The command line's reference is its own ``--help`` text, written at build time so that it
    can never drift from the code (docs/api/_generated/, not committed)."""
    from click.testing import CliRunner

    from torchntk.cli import main

    out = Path(__file__).parent / "api" / "_generated"
    out.mkdir(exist_ok=True)
    runner = CliRunner()
    names = ["", *sorted(main.commands)]
    for name in names:
        result = runner.invoke(main, [*([name] if name else []), "--help"], prog_name="torchntk",
                               terminal_width=100)
        if result.exit_code != 0:
            raise RuntimeError(f"`torchntk {name} --help` failed: {result.output}")
        (out / f"{name or 'main'}.txt").write_text(result.output)
    (out / "commands.txt").write_text("\n".join(names[1:]) + "\n")


def _write_gpytorch_page() -> None:
    """torchntk.gpytorch needs GPyTorch (an optional extra): document it when it imports, and say
    how to get it otherwise, instead of failing the build."""
    import importlib

    out = Path(__file__).parent / "api" / "_generated"
    out.mkdir(exist_ok=True)
    title = "GPyTorch\n========\n\n"
    try:
        importlib.import_module("torchntk.gpytorch")
    except ImportError as error:
        body = (f"``torchntk.gpytorch`` could not be imported when this site was built ({error}). "
                'Install the extra, ``pip install "torchntk[gpytorch]"``, and build again.\n')
    else:
        body = (".. automodule:: torchntk.gpytorch\n   :no-members:\n\n.. currentmodule:: torchntk.gpytorch\n\n"
                ".. autoclass:: NTKKernel\n   :members: forward\n\n.. autoclass:: NNGPKernel\n   :members: forward\n")
    (out / "gpytorch.rst").write_text(title + body)


_write_cli_help()
_write_gpytorch_page()


# -- docstrings are plain text with formulas ---------------------------------------------------
# They write norms as |x|, scikit-learn's fitted attributes as dual_coef_ and batch shapes as
# (*batch, n), which reStructuredText would read as substitutions, link targets and emphasis.
# Escape these outside code spans, doctests and literal blocks (before napoleon turns the Google
# sections into fields), so the docstrings stay readable as plain text in the source.

_CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")
_TRAILING_UNDERSCORE = re.compile(r"(\w)_(?=[\s,.;:)\]]|$)")
_LEADING_STAR = re.compile(r"(^|[\s(\[,])\*(?=\w)")


def _escape_plain(text: str) -> str:
    parts = _CODE_SPAN.split(text)
    for i in range(0, len(parts), 2):
        text = _TRAILING_UNDERSCORE.sub(r"\1\\_", parts[i].replace("|", "\\|"))
        parts[i] = _LEADING_STAR.sub(r"\1\\*", text)
    return "".join(parts)


def _escape_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    literal_indent = None
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if line.strip() and indent <= literal_indent:
                literal_indent = None
            else:
                continue
        if line.lstrip().startswith((">>>", "... ")) or line.strip() == "...":
            continue
        lines[i] = _escape_plain(line)
        if line.rstrip().endswith("::"):
            literal_indent = indent


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn adds set_*_request methods (metadata routing) to every estimator; they are
    # scikit-learn's, documented there, and their docstrings link into its own site.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app) -> None:
    app.connect("autodoc-process-docstring", _escape_docstring, priority=400)  # napoleon runs at 500
    app.connect("autodoc-skip-member", _skip_member)
