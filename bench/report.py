"""Renders every bench/results/*.json into the README, between `<!-- bench:begin -->` and `<!-- bench:end -->`.

The result format is described in bench/common.py. Rendering and splicing are pure; `main` reads
the results and rewrites only the marked block of the README (run by `make bench` last).

    .venv/bin/python -m bench.report [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
ORDER = (
    "real_corpus",
    "kb_build",
    "kb_incremental",
    "sharded_build",
    "retrieval",
    "query_cpu",
    "vector_memory",
    "version_switch",
    "canary_split",
    "hostile_clients",
    "operator_scale",
)
REQUIRED = {"benchmark", "machine", "ran_at", "rows"}
ROW_KEYS = {"measure", "value", "unit", "baseline", "ratio", "repeats"}
README = Path(__file__).resolve().parent.parent / "README.md"
RESULTS = Path(__file__).resolve().parent / "results"


def validate(document: dict[str, Any], source: str) -> dict[str, Any]:
    missing = REQUIRED - document.keys()
    if missing:
        raise ValueError(f"{source}: missing {', '.join(sorted(missing))}")
    for number, row in enumerate(document["rows"]):
        if ROW_KEYS - row.keys():
            raise ValueError(f"{source}: row {number} lacks {', '.join(sorted(ROW_KEYS - row.keys()))}")
    return document


def describe_machine(machine: dict[str, Any]) -> str:
    return (
        f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('memory_gb', '?')} GB RAM; "
        f"Python {machine.get('python', '?')}; {machine.get('postgres', '?')}"
    )


def format_number(value: float) -> str:
    """Four significant digits, thousands separated; integers stay integers."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def sort_key(document: dict[str, Any]) -> tuple[int, str]:
    name = str(document["benchmark"])
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def render(documents: Sequence[dict[str, Any]]) -> str:
    """The README block: the machine once (or per benchmark when they differ), then a table per benchmark."""
    if not documents:
        return "No results yet: run `make bench`."
    ordered = sorted(documents, key=sort_key)
    machines = {describe_machine(d["machine"]) for d in ordered}
    shared = len(machines) == 1
    lines = [f"Machine: {next(iter(machines))}."] if shared else []
    lines.append(
        "Values are medians over `repeats`; a ratio is the value divided by its baseline's value, "
        "both measured in the same run (below 1: less time, or a lower rate)."
    )
    for document in ordered:
        heading = f"**{document['benchmark']}** (`bench/{document['benchmark']}.py`), ran {document['ran_at']}"
        if document.get("load"):
            heading += f", 1-min load average {document['load']}"
        lines += ["", heading]
        if not shared:
            lines.append(f"on {describe_machine(document['machine'])}")
        lines += ["", "| measure | value | ratio | baseline | repeats |", "|---|---|---|---|---|"]
        for row in document["rows"]:
            ratio = f"{row['ratio']:.3g}" if row["ratio"] is not None else ""
            lines.append(
                f"| {_cell(row['measure'])} | {format_number(row['value'])} {_cell(row['unit'])} | {ratio} "
                f"| {_cell(row['baseline'] or '')} | {row['repeats']} |"
            )
    return "\n".join(lines)


def splice(text: str, block: str) -> str:
    """`text` with everything between the markers replaced by `block`; the markers must each appear once."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"the README must contain {BEGIN} and {END} exactly once each")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    if END in head:
        raise ValueError(f"{END} comes before {BEGIN}")
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def load_results(directory: Path) -> list[dict[str, Any]]:
    return [validate(json.loads(path.read_text()), str(path)) for path in sorted(directory.glob("*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when the README block is not up to date")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    current = args.readme.read_text()
    updated = splice(current, render(load_results(args.results)))
    if args.check:
        if updated != current:
            print(f"{args.readme} is not up to date with {args.results}: run `python -m bench.report`")
            sys.exit(1)
        return
    if updated != current:
        args.readme.write_text(updated)
    print(f"{args.readme}: benchmark table from {len(load_results(args.results))} result files")


if __name__ == "__main__":
    main()
