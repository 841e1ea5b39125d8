"""What the operator and sensor share once the crowd has answered: the failed-task policies, the result
records of a trigger's event, and the one way an error message lists many problems."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, AirflowSkipException

from airflow_provider_imagecontains.prescreen.screening import summary_message
from airflow_provider_imagecontains.storage import write_records
from airflow_provider_imagecontains.triggers._tracking import build_records

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

FAILED_POLICIES = ("fail", "skip", "report")
# How many problems an error message lists before summarising the rest.
MAX_LISTED = 20


def listing(headline: str, items: list[str]) -> str:
    """``headline:`` and the first :data:`MAX_LISTED` items, one per line, then how many more there are."""
    lines = [f"{headline}:", *(f"  - {item}" for item in items[:MAX_LISTED])]
    if len(items) > MAX_LISTED:
        lines.append(f"  ... and {len(items) - MAX_LISTED} more")
    return "\n".join(lines)


def check_failed_policy(failed_policy: str) -> None:
    if failed_policy not in FAILED_POLICIES:
        raise ValueError(f"Invalid failed_policy {failed_policy!r}: use one of {', '.join(FAILED_POLICIES)}.")


def records_from_event(handle: dict[str, Any], event: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Turn the trigger's event into result records, raising if the trigger reported an error."""
    if not event or event.get("status") != "success":
        message = (event or {}).get("message", "the trigger sent no event")
        raise AirflowException(f"Waiting for the crowd tasks failed: {message}")
    return build_records(handle["tasks"], event)


def finish_records(task: Any, records: list[dict[str, Any]], context: Context) -> Any:
    """What the sensor (or a waiting operator) ``task`` returns: it logs the summary, applies its
    ``failed_policy``, and returns the records, or, with ``records_path`` set, writes them there and returns
    the small reference."""
    if (message := summary_message(records)) is not None:
        task.log.info("%s", message)
    records = apply_failed_policy(records, task.failed_policy)
    if task.records_path is None:
        return records
    return write_records(records, task.records_path, task.records_conn_id, context)


def apply_failed_policy(records: list[dict[str, Any]], failed_policy: str) -> list[dict[str, Any]]:
    """Return ``records``, or fail / skip the Airflow task when some crowd tasks failed."""
    failed = [record for record in records if record["state"] == "failed"]
    if not failed or failed_policy == "report":
        return records
    problems = [
        f"{r['url']} (label {r['label']!r}, task {r['task_name']}): "
        f"{(r['problem'] or {}).get('code')}: {(r['problem'] or {}).get('message')}"
        for r in failed
    ]
    message = listing(f"{len(failed)} of {len(records)} crowd task(s) failed", problems)
    if failed_policy == "skip":
        raise AirflowSkipException(message)
    # A failed crowd task is final: an Airflow retry would read the same outcome, so fail without retrying.
    raise AirflowFailException(
        f"{message}\nA failed crowd task stays failed; to pay for another attempt, run the submitting "
        "ImageContainsOperator again with resubmit_failed=True."
    )
