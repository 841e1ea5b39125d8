"""The pre-screen's audited pairs that surveillance_triage keeps between runs: each run adds the (model score,
crowd answer) pairs of its frames to one JSON file (the DAG's Asset), and the next run calibrates the thresholds
from them. Helpers of the example DAG (kept out of parsing by ``.airflowignore``); nothing here is the provider's."""

from __future__ import annotations

import json
from typing import Any

from example_io import read_output, write_output

from airflow_provider_imagecontains.prescreen import calibration_pairs


def load_audit_pairs(location: str, conn_id: str | None = None) -> list[dict[str, Any]]:
    """The pairs kept at ``location`` (none before the first run)."""
    data = read_output(location, conn_id)
    return json.loads(data) if data else []


def merge_audit_pairs(
    stored: list[dict[str, Any]], answers: list[dict[str, Any]], audit_rate: float, window: int
) -> list[dict[str, Any]]:
    """``stored`` pairs plus this run's, one per (url, label) (a re-run replaces its own), the newest ``window``."""
    new = [
        {"url": answer["url"], "label": answer["label"], **pair}
        for answer in answers
        for pair in calibration_pairs([answer], audit_rate)
    ]
    fresh = {(pair["url"], pair["label"]) for pair in new}
    kept = [pair for pair in stored if (pair["url"], pair["label"]) not in fresh]
    return (kept + new)[-window:]


def store_audit_pairs(
    location: str, answers: list[dict[str, Any]], audit_rate: float, window: int, conn_id: str | None = None
) -> int:
    """Add this run's pairs to those kept at ``location``; return how many are kept now."""
    pairs = merge_audit_pairs(load_audit_pairs(location, conn_id), answers, audit_rate, window)
    write_output(location, json.dumps(pairs).encode(), "application/json", conn_id)
    return len(pairs)
