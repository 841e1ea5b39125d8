"""Result records in object storage instead of XCom: written as JSON Lines through Airflow's
``ObjectStoragePath`` (any scheme Airflow supports: ``file://``, ``s3://``, ``gs://``, ...), with a
small reference in XCom that the next task turns back into records with :func:`read_records`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

# The key that marks an XCom value as a reference to stored records.
RECORDS_URI = "records_uri"


def records_file_name(context: Mapping[str, Any]) -> str:
    """``<dag_id>/<run_id>/<task_id>[-<map_index>].jsonl``: one file per task instance, so retries overwrite
    their own file and mapped instances never share one."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    suffix = f"-{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}{suffix}.jsonl"


def write_records(
    records: list[dict[str, Any]], folder: str, conn_id: str | None, context: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``records`` under ``folder`` and return the reference to push to XCom instead.

    :param folder: a folder URI, e.g. ``s3://bucket/imagecontains`` or ``file:///data/imagecontains``.
    :param conn_id: the Airflow connection of that storage (``None``: the scheme's default).
    """
    path = ObjectStoragePath(folder.rstrip("/") + "/" + records_file_name(context), conn_id=conn_id)
    if path.protocol in ("file", "local"):
        path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
    failed = sum(record["state"] == "failed" for record in records)
    return {
        RECORDS_URI: str(path),
        "records_conn_id": conn_id,
        "count": len(records),
        "completed": len(records) - failed,
        "failed": failed,
    }


def read_records(value: Any) -> list[dict[str, Any]]:
    """The result records of an operator or sensor: read from storage when ``value`` is a reference
    (``records_path`` was set), else ``value`` itself; a list of either (mapped tasks) is joined."""
    if isinstance(value, Mapping):
        if RECORDS_URI not in value:
            raise ValueError(f"Invalid records {str(value)[:80]!r}: expected records or a reference to stored ones.")
        path = ObjectStoragePath(value[RECORDS_URI], conn_id=value.get("records_conn_id"))
        with path.open("r") as file:
            return [json.loads(line) for line in file if line.strip()]
    items = list(value)
    if items and all(isinstance(item, list) or (isinstance(item, Mapping) and RECORDS_URI in item) for item in items):
        return [record for item in items for record in read_records(item)]
    return items
