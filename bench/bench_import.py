"""DAG-parse cost: what importing the provider's operator and sensor adds to a DAG file, against HttpSensor.

Each figure comes from ``python -X importtime`` in a fresh process that first imports Airflow's base
classes (``airflow.providers.common.compat.sdk``, which any provider's operator needs), then the modules
measured: the sum of the cumulative times of the top-level imports made after that point. aiohttp is
measured the same way, to show what importing it only where the async path runs keeps off DAG parsing.
Runs alternate between the targets; medians of ``--runs`` each. Writes the ``import`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from importlib.metadata import version

from report import write_section

BASELINE = "airflow.providers.common.compat.sdk"
MARK = "--measured imports start here--"
TARGETS = {
    "HttpSensor (apache-airflow-providers-http)": ["airflow.providers.http.sensors.http"],
    "ImageContainsOperator and ImageContainsSensor": [
        "airflow_provider_imagecontains.operators.imagecontains",
        "airflow_provider_imagecontains.sensors.imagecontains",
    ],
    "aiohttp alone (not imported by the above)": ["aiohttp"],
}


def measure(modules: list[str]) -> tuple[float, bool]:
    """Milliseconds the imports of ``modules`` add after the baseline, and whether aiohttp got imported."""
    script = (
        f"import sys; import {BASELINE}; sys.stderr.write({MARK!r} + '\\n'); sys.stderr.flush(); "
        + "; ".join(f"import {module}" for module in modules)
        + "; print('aiohttp' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    measured = result.stderr.split(MARK, 1)[1]
    total_us = 0
    for line in measured.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split(":", 1)[1].split("|")
        # A top-level import's name follows one space; nested ones are indented further and already
        # counted in their parent's cumulative time.
        if not name[1:].startswith(" "):
            total_us += int(cumulative)
    return total_us / 1000, result.stdout.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in TARGETS}
    loads_aiohttp: dict[str, bool] = {}
    for _ in range(args.runs):
        for name, modules in TARGETS.items():
            elapsed, aiohttp_loaded = measure(modules)
            times[name].append(elapsed)
            loads_aiohttp[name] = aiohttp_loaded
    http = statistics.median(times["HttpSensor (apache-airflow-providers-http)"])
    rows = [
        f"| {name} | {statistics.median(values):.0f} ms | {min(values):.0f}-{max(values):.0f} ms | "
        f"{statistics.median(values) / http:.2f} | {'yes' if loads_aiohttp[name] else 'no'} |"
        for name, values in times.items()
    ]
    body = "\n".join(
        [
            "## DAG-parse cost: importing the operator and sensor (bench/bench_import.py)",
            "",
            f"`python -X importtime`, after Airflow's base classes (`{BASELINE}`) are imported: what each import "
            f"adds, median of {args.runs} fresh processes per row (runs alternate), Python "
            f"{sys.version.split()[0]}, Airflow {version('apache-airflow')}, "
            f"apache-airflow-providers-http {version('apache-airflow-providers-http')}, aiohttp {version('aiohttp')}.",
            "",
            "| imports | added (median) | range | vs HttpSensor | aiohttp imported |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "aiohttp is imported only when a bulk or async call runs (the operator's submit and waits, the trigger),",
            "so a scheduler or DAG processor parsing a DAG file that uses the provider never loads it. What remains of",
            "the provider's cost is mostly requests, boto3 and botocore (the hook's credentials and SigV4), imported",
            "at module level. `-X importtime` slows every import it measures; the figures are for comparison within",
            "one run, and a run on a busy machine widens the ranges.",
        ]
    )
    write_section("import", body)
    print(body)


if __name__ == "__main__":
    main()
