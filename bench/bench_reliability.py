"""Run the fault, restart and load scenarios of tests/test_reliability.py and write their measured figures
to docs/reliability.md (between the ``<!-- bench:reliability -->`` markers).

The figures are the ones the tests assert on, recorded while they run, so the table cannot drift from what is
tested. Takes about five minutes on 2 cores::

    .venv/bin/python bench/bench_reliability.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- bench:reliability -->", "<!-- /bench:reliability -->"
COLUMNS = ("images", "tasks_created", "requests_retried", "results_lost", "duplicates")


def run_scenarios(figures_file: Path) -> None:
    command = [sys.executable, "-m", "pytest", "tests/test_reliability.py", "-q", "-p", "no:cacheprovider"]
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "RELIABILITY_FIGURES": str(figures_file)})


def render(figures: dict[str, dict]) -> str:
    lines = [
        START,
        "| scenario | images | tasks created | requests retried | results lost | duplicates | other figures |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, row in sorted(figures.items()):
        other = ", ".join(f"{key} {value}" for key, value in sorted(row.items()) if key not in (*COLUMNS, "scenario"))
        cells = [str(row.get(column, "-")) for column in COLUMNS]
        lines.append(f"| {row['scenario']} | {' | '.join(cells)} | {other} |")
    lines.append(END)
    return "\n".join(lines)


def write_section(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    DOC.write_text(pattern.sub(lambda _: section, text))


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        figures_file = Path(scratch, "figures.json")
        run_scenarios(figures_file)
        figures = json.loads(figures_file.read_text())
    write_section(render(figures))
    print(render(figures))


if __name__ == "__main__":
    main()
