"""Escapes that let docstrings stay readable as plain text and still be valid reStructuredText.

Docstrings write norms as ``|x|``, scikit-learn's fitted attributes as ``dual_coef_`` and batch
shapes as ``(*batch, n)``, which reStructuredText would read as substitutions, link targets and
emphasis. `escape_docstring` escapes these in prose, before napoleon turns the Google sections
into fields, and leaves alone what is not prose:

- inline code and roles: ````x````, ```x```, ``:class:`x```` and above all ``:math:`...```, whose
  ``|``, ``*`` and ``_`` are LaTeX (``\\|`` is a norm in LaTeX, not an escaped bar), even when the
  role runs over a line break;
- doctests (``>>>`` and ``...`` lines);
- literal blocks (the indented lines after a line ending in ``::``) and ``.. math::`` blocks,
  including a formula written on the directive's own line.
"""

from __future__ import annotations

import re

# Inline spans whose content is not prose: inline literals, math roles, any other role or
# default-role text. A span may run over a line break: runs of prose lines are escaped as one text.
_SPAN = re.compile(r"(``.+?``|:math:`[^`]*`|`[^`]+`)", re.S)
_TRAILING_UNDERSCORE = re.compile(r"(\w)_(?=[\s,.;:)\]]|$)")
_LEADING_STAR = re.compile(r"(^|[\s(\[,])\*(?=\w)")
_MATH_DIRECTIVE = re.compile(r"^\s*\.\. math::")


def escape_plain(text: str) -> str:
    """``text`` with ``|``, a leading ``*`` and a trailing ``_`` escaped outside inline spans."""
    parts = _SPAN.split(text)
    for i in range(0, len(parts), 2):
        escaped = _TRAILING_UNDERSCORE.sub(r"\1\\_", parts[i].replace("|", "\\|"))
        parts[i] = _LEADING_STAR.sub(r"\1\\*", escaped)
    return "".join(parts)


def escape_docstring(lines: list[str]) -> None:
    """Escape the prose of a docstring's ``lines`` in place (autodoc's process-docstring hook
    hands over the list it will render; it keeps one entry per line)."""
    verbatim = [False] * len(lines)
    block_indent = None
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if line.strip() and indent <= block_indent:
                block_indent = None
            else:
                verbatim[i] = True
                continue
        stripped = line.strip()
        if stripped.startswith((">>>", "... ")) or stripped == "...":
            verbatim[i] = True
        elif _MATH_DIRECTIVE.match(line):
            verbatim[i] = True
            block_indent = indent
        elif line.rstrip().endswith("::"):
            block_indent = indent  # the line itself is prose ("Example::"), the block is not
    start = 0
    while start < len(lines):
        if verbatim[start]:
            start += 1
            continue
        end = start
        while end < len(lines) and not verbatim[end]:
            end += 1
        escaped = escape_plain("\n".join(lines[start:end])).split("\n")
        lines[start:end] = escaped
        start = end
