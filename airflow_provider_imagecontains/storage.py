"""Result records and submission handles in object storage instead of XCom: written as JSON Lines through
Airflow's ``ObjectStoragePath`` (any scheme Airflow supports: ``file://``, ``s3://``, ``gs://``, ...), with a
small reference in XCom; the next task turns records back with :func:`read_records`, the sensor and the
trigger read a stored handle's tasks themselves."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

# The keys that mark an XCom value as a reference to stored records, and a handle whose tasks are stored.
RECORDS_URI = "records_uri"
TASKS_URI = "tasks_uri"


def task_file_name(context: Mapping[str, Any], kind: str) -> str:
    """``<dag_id>/<run_id>/<task_id>[-<map_index>].<kind>.jsonl``: one file per task instance and kind, so
    retries overwrite their own file and mapped instances never share one."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    suffix = f"-{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}{suffix}.{kind}.jsonl"


def write_lines(rows: Iterable[Mapping[str, Any]], uri: str, conn_id: str | None) -> None:
    """Write ``rows`` as JSON Lines to ``uri`` (local parent folders are created)."""
    path = ObjectStoragePath(uri, conn_id=conn_id)
    if path.protocol in ("file", "local"):
        path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as file:
        for row in rows:
            file.write(json.dumps(row) + "\n")


def read_lines(uri: str, conn_id: str | None) -> list[dict[str, Any]]:
    """The rows :func:`write_lines` wrote to ``uri``."""
    with ObjectStoragePath(uri, conn_id=conn_id).open("r") as file:
        return [json.loads(line) for line in file if line.strip()]


def write_records(
    records: list[dict[str, Any]], folder: str, conn_id: str | None, context: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``records`` under ``folder`` and return the reference to push to XCom instead.

    :param folder: a folder URI, e.g. ``s3://bucket/imagecontains`` or ``file:///data/imagecontains``.
    :param conn_id: the Airflow connection of that storage (``None``: the scheme's default).
    """
    uri = f"{folder.rstrip('/')}/{task_file_name(context, 'records')}"
    write_lines(records, uri, conn_id)
    failed = sum(record["state"] == "failed" for record in records)
    return {
        RECORDS_URI: uri,
        "records_conn_id": conn_id,
        "count": len(records),
        "completed": len(records) - failed,
        "failed": failed,
    }


def store_handle(
    handle: dict[str, Any], folder: str, conn_id: str | None, context: Mapping[str, Any]
) -> dict[str, Any]:
    """The submission handle with its ``tasks`` written under ``folder``: ``tasks_uri``, ``tasks_conn_id`` and
    ``task_count`` take their place, so XCom and the trigger's kwargs stay small for any number of images."""
    uri = f"{folder.rstrip('/')}/{task_file_name(context, 'tasks')}"
    write_lines(handle["tasks"], uri, conn_id)
    small = {key: value for key, value in handle.items() if key != "tasks"}
    return {**small, TASKS_URI: uri, "tasks_conn_id": conn_id, "task_count": len(handle["tasks"])}


def read_records(value: Any) -> list[dict[str, Any]]:
    """The result records of an operator or sensor: read from storage when ``value`` is a reference
    (``records_path`` was set), else ``value`` itself; a list of either (mapped tasks) is joined."""
    if isinstance(value, Mapping):
        if RECORDS_URI not in value:
            raise ValueError(f"Invalid records {str(value)[:80]!r}: expected records or a reference to stored ones.")
        return read_lines(value[RECORDS_URI], value.get("records_conn_id"))
    items = list(value)
    if items and all(isinstance(item, list) or (isinstance(item, Mapping) and RECORDS_URI in item) for item in items):
        return [record for item in items for record in read_records(item)]
    return items
