"""Sphinx configuration for torchntk's documentation.

Build the site (warnings are errors, so a broken cross-reference fails the build):

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))
# The gallery figures are drawn off-screen; torch's threads would only fight Sphinx for the cores.
os.environ.setdefault("MPLBACKEND", "Agg")

from docstring_markup import escape_docstring  # noqa: E402

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
    "sphinx-mathjax-offline",  # after sphinx.ext.mathjax, whose mathjax_path it sets
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
# No default "members": a default of True would replace every directive's own `:members:` list
# (autodoc only merges string defaults), so the pages would show the engine's protocol methods
# beside the public ones. Each directive below says which members it shows.
autodoc_default_options = {"member-order": "bysource", "show-inheritance": False}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autosummary_generate = False
# `x` in single backticks is code; formulas are :math: roles.
default_role = "code"

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The maths ships with the site, so that it renders with no network: sphinx-mathjax-offline
# copies MathJax 3 (its scripts and fonts) into _static/mathjax/ when the build ends and sets
# mathjax_path to its copy (whatever this file says), so the pages never load a CDN's.
# docs/check_offline.py checks that nothing else is loaded from outside the site.

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


# -- docstrings ---------------------------------------------------------------------------------
# Formulas are :math: roles and `.. math::` blocks; the prose around them is escaped where
# reStructuredText would misread plain text (docstring_markup.py says what and why).


def _escape_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    escape_docstring(lines)


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn adds set_*_request methods (metadata routing) to every estimator; they are
    # scikit-learn's, documented there, and their docstrings link into its own site.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app) -> None:
    app.connect("autodoc-process-docstring", _escape_docstring, priority=400)  # napoleon runs at 500
    app.connect("autodoc-skip-member", _skip_member)
