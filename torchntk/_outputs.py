"""Output files torchntk may replace: only its own. Every file a command writes carries a mark
(a ``written_by`` field in JSON, a comment line in HTML and Markdown, the Software field of a
PNG), so a rerun replaces its earlier outputs but never another program's file of the same name.
`check_replaceable` is the one guard: reports (`torchntk reproduce`, `torchntk study`) and saved
models (`torchntk fit -o`) call it before any work."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ._json import read_json

WRITER = "torchntk"
"""What the mark names: JSON files hold ``"written_by": "torchntk ..."``."""

COMMENT = "<!-- written by torchntk; rerunning the command replaces this file -->"
"""The first line (after an HTML doctype) of each HTML and Markdown report."""

PNG_SOFTWARE = "torchntk"
"""The Software text of each PNG figure (fixed, so the same seed gives the same bytes)."""

_HEAD = 4096
"""Bytes of a text or PNG file searched for its mark (the mark lies at the start)."""

# Reports written before files were marked (by torchntk 0.1.0) are recognised by their
# headings, so that rerunning a command over its old report folder still replaces it.
_UNMARKED_HEADS = (b"<title>torchntk", b"# torchntk", b"# Width sweep of an architecture at initialisation")
_UNMARKED_ARCH_KEYS = {"architecture", "input_shape", "widths", "ntk_init", "theorem1"}


def written_by_torchntk(path: Path) -> bool:
    """Whether the file at ``path`` carries torchntk's mark (see the module docstring), or is
    a report torchntk wrote before it marked its files. An unmarked PNG counts as torchntk's
    when it lies beside torchntk's results.json (figures of that report)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return _torchntk_json(read_json(path))
        with open(path, "rb") as handle:
            head = handle.read(_HEAD)
    except (OSError, ValueError):
        return False
    if suffix == ".png":
        results = path.parent / "results.json"
        return (b"tEXtSoftware\x00" + PNG_SOFTWARE.encode() in head
                or (results.is_file() and written_by_torchntk(results)))
    return COMMENT.encode() in head or any(mark in head[:200] for mark in _UNMARKED_HEADS)


def _torchntk_json(document: object) -> bool:
    if not isinstance(document, dict):
        return False
    writer = document.get("written_by")
    if isinstance(writer, str):
        return writer.split(" ")[0] == WRITER
    meta = document.get("meta")
    return (isinstance(meta, dict) and "torchntk" in meta) or _UNMARKED_ARCH_KEYS <= document.keys()


def check_replaceable(folder: Path, names: Iterable[str],
                      ours: Callable[[Path], bool] = written_by_torchntk) -> None:
    """Raise ValueError unless each of ``names`` in ``folder`` is absent or a file ``ours`` accepts
    (by default: one torchntk wrote), so that writing them overwrites nothing of anyone else's."""
    foreign = [name for name in names
               if (folder / name).exists() and not ((folder / name).is_file() and ours(folder / name))]
    if foreign:
        many = len(foreign) > 1
        raise ValueError(f"{folder} holds {', '.join(foreign)}, which torchntk did not write (another program's "
                         f"file{'s' if many else ''}?); {'they are' if many else 'it is'} never overwritten: choose a "
                         f"new or empty folder, or move {'them' if many else 'it'} away.")
