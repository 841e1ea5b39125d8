"""Run the fault, restart and load scenarios of tests/test_reliability.py and write their measured figures
to docs/reliability.md (between the ``<!-- bench:reliability -->`` markers).

The figures are the ones the tests assert on, recorded while they run, so the table cannot drift from what is
tested. Takes about five minutes on 2 cores::

    .venv/bin/python bench/bench_reliability.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from report import DOCS, write_section

ROOT = Path(__file__).resolve().parent.parent
DOC = DOCS / "reliability.md"
COLUMNS = ("images", "tasks_created", "requests_retried", "results_lost", "duplicates")


def run_scenarios(figures_file: Path) -> None:
    command = [sys.executable, "-m", "pytest", "tests/test_reliability.py", "-q", "-p", "no:cacheprovider"]
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "RELIABILITY_FIGURES": str(figures_file)})


def render(figures: dict[str, dict]) -> str:
    lines = [
        "| scenario | images | tasks created | requests retried | results lost | duplicates | other figures |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, row in sorted(figures.items()):
        other = ", ".join(f"{key} {value}" for key, value in sorted(row.items()) if key not in (*COLUMNS, "scenario"))
        cells = [str(row.get(column, "-")) for column in COLUMNS]
        lines.append(f"| {row['scenario']} | {' | '.join(cells)} | {other} |")
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        figures_file = Path(scratch, "figures.json")
        run_scenarios(figures_file)
        figures = json.loads(figures_file.read_text())
    write_section("reliability", render(figures), DOC)
    print(render(figures))


if __name__ == "__main__":
    main()
