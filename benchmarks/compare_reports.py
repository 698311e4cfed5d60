"""Print two `torchntk reproduce` runs' claims side by side, as a Markdown table (README's).

    .venv/bin/python benchmarks/compare_reports.py QUICK_OUT FULL_OUT [--paper-only]

QUICK_OUT and FULL_OUT are the ``--out`` folders of a quick and a full run with the same seed
(each holds its results.json). Claims are paired by experiment and by their position within it,
since a statement's text names the run's widths; the script stops if the two runs do not have
the same claims per experiment. Each cell gives the measured figure (the fitted slope, ratio or
statistic, without its interval) and the verdict; the reports themselves have the intervals and
criteria. ``--paper-only`` leaves out the rows that test a rate the paper does not claim (Lee et al.'s
n^-1/2, the excess kurtosis' 1/n).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from torchntk.studies.rates import LEE, NOT_CLAIMED


def load_claims(folder: Path) -> tuple[dict, dict[str, list[dict]]]:
    """(meta, {section key: its claims in report order}) from ``folder/results.json``."""
    with open(folder / "results.json", encoding="utf-8") as handle:
        results = json.load(handle)
    by_section: dict[str, list[dict]] = defaultdict(list)
    for claim in results["claims"]:
        by_section[claim["section"]].append(claim)
    return results["meta"], by_section


def short_measure(measured: str) -> str:
    """The point figure of a claim's ``measured`` text: the interval and local slopes dropped."""
    text = measured.removeprefix("overall ")
    for cut in (" (95%", " [", "; local"):
        text = text.split(cut)[0]
    return text


def cell(claim: dict) -> str:
    verdict = claim["verdict"]
    return f"{short_measure(claim['measured'])}: " + (f"**{verdict}**" if verdict != "borne out" else verdict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("quick", type=Path)
    parser.add_argument("full", type=Path)
    parser.add_argument("--paper-only", action="store_true", help="leave out the Lee et al. rate rows")
    args = parser.parse_args()
    (quick_meta, quick), (full_meta, full) = load_claims(args.quick), load_claims(args.full)
    if quick.keys() != full.keys() or any(len(quick[k]) != len(full[k]) for k in quick):
        raise SystemExit("The two runs do not have the same claims per experiment: "
                         f"{ {k: len(v) for k, v in quick.items()} } against { {k: len(v) for k, v in full.items()} }.")
    print(f"quick: mode {quick_meta['mode']}, seed {quick_meta['seed']}, torchntk {quick_meta['torchntk']}; "
          f"full: mode {full_meta['mode']}, seed {full_meta['seed']}, torchntk {full_meta['torchntk']}\n")
    print("| statement (full run's wording) | quick mode | full mode |")
    print("|---|---|---|")
    for key in full:
        for q, f in zip(quick[key], full[key], strict=True):
            if args.paper_only and f["statement"].split(":")[0].endswith(NOT_CLAIMED):
                continue
            statement = f["statement"].replace(f"{LEE}: ", "Lee et al. rate: ")
            print(f"| {statement} | {cell(q)} | {cell(f)} |")


if __name__ == "__main__":
    main()
