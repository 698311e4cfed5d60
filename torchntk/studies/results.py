"""What an experiment hands to the report: claims with verdicts, tables of numbers, figures.

Every number in a `Table` or `Claim` is the run's own measurement (or the theory it is set
against); `Section.numbers` keeps the raw values for the machine-readable results.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Claim:
    """One statement of the paper, and whether this run bears it out.

    Attributes:
        statement: the claim in words ("Theorem 1: the empirical NTK at init tends to ...").
        measured: what the run measured, formatted ("-0.49 ± 0.03 (95%: [...])").
        theory: what the paper predicts ("-0.5").
        criterion: the rule that decided the verdict.
        verdict: "borne out", "inconclusive" or "not borne out".
    """

    statement: str
    measured: str
    theory: str
    criterion: str
    verdict: str


@dataclass(frozen=True)
class Table:
    """A table of measured numbers beside the theory's: ``rows`` hold floats, ints or strings."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG written by the run, with a caption saying what to look at."""

    path: Path
    caption: str


@dataclass
class Section:
    """One experiment's part of the report.

    Attributes:
        key: a short identifier ("fig1", "theorem1").
        title: heading.
        text: paragraphs of explanation (settings, what the theory predicts).
        settings: the configuration that produced the numbers.
        claims, tables, figures: what the run found.
        numbers: raw measurements (nested lists / floats) for results.json.
    """

    key: str
    title: str
    text: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The section as plain JSON data (figures by file name; numpy and torch values converted by `jsonable`)."""
        return {"key": self.key, "title": self.title, "text": self.text, "settings": jsonable(self.settings),
                "claims": [asdict(c) for c in self.claims],
                "tables": [{"title": t.title, "columns": t.columns, "rows": jsonable(t.rows), "note": t.note}
                           for t in self.tables],
                "figures": [{"path": f.path.name, "caption": f.caption} for f in self.figures],
                "numbers": jsonable(self.numbers)}


def jsonable(value: Any) -> Any:
    """numpy and torch values as plain JSON types (floats, lists), recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def fmt(value: Any, digits: int = 4) -> str:
    """A number as text with ``digits`` significant digits; other values as str."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}g}"
    return str(value)


def section_from_dict(data: dict[str, Any], folder: str | Path) -> Section:
    """The inverse of `Section.as_dict` (numbers stay as plain lists); figure files are looked up
    in ``folder``. Used to resume a run from the sections it had already finished."""
    return Section(data["key"], data["title"], list(data["text"]), dict(data["settings"]),
                   [Claim(**c) for c in data["claims"]],
                   [Table(t["title"], list(t["columns"]), [list(r) for r in t["rows"]], t["note"])
                    for t in data["tables"]],
                   [Figure(Path(folder) / f["path"], f["caption"]) for f in data["figures"]],
                   dict(data["numbers"]))
