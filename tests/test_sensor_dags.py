"""Whole DAG runs through ``airflow dags test``: mapped operator and sensor, templated handle, poke mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_imagecontains.server.testing import LocalCrowdServer

DAGS_FOLDER = Path(__file__).parent / "dags"
IMAGES = [f"https://img.example.com/dag/{i:03d}.jpg" for i in range(6)]


@pytest.fixture
def dag_server(tmp_path):
    with LocalCrowdServer(tmp_path / "crowd.db", subprocess=True) as server:
        yield server


def _dags_test(server, tmp_path, dag_id: str, sensor_mode: str = "deferrable") -> list[dict]:
    results = tmp_path / "results.json"
    env = {
        **os.environ,
        **server.airflow_connection_env(),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "IMAGECONTAINS_TEST_IMAGES": json.dumps(IMAGES),
        "IMAGECONTAINS_TEST_RESULTS": str(results),
        "IMAGECONTAINS_TEST_SENSOR_MODE": sensor_mode,
    }
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    run = subprocess.run([airflow, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(results.read_text())


def _assert_match_server(records: list[dict], server) -> None:
    stored = {t["task_name"]: t for t in server.tasks(function_name="image-contains-test")}
    assert sorted(r["url"] for r in records) == IMAGES
    assert len(stored) == len(IMAGES)  # one task per image, nothing submitted twice
    for record in records:
        task = stored[record["task_name"]]
        assert task["input"]["image"]["url"] == record["url"] and record["label"] == "person"
        assert record["state"] == "completed" == task["state"]
        assert record["contains_target"] is task["result"]["containsTarget"]


def test_mapped_submit_and_deferred_sensor_in_a_dag_run(airflow_db, dag_server, tmp_path) -> None:
    records = _dags_test(dag_server, tmp_path, "imagecontains_mapped")
    _assert_match_server(records, dag_server)
    # A second run of the DAG reuses every task and answer.
    assert _dags_test(dag_server, tmp_path, "imagecontains_mapped") == records
    assert len(dag_server.tasks(function_name="image-contains-test")) == len(IMAGES)


def test_templated_handle_from_xcom_pull(airflow_db, dag_server, tmp_path) -> None:
    _assert_match_server(_dags_test(dag_server, tmp_path, "imagecontains_templated"), dag_server)


@pytest.mark.slow
def test_poke_mode_sensor_gives_the_same_results(airflow_db, dag_server, tmp_path) -> None:
    _assert_match_server(_dags_test(dag_server, tmp_path, "imagecontains_mapped", sensor_mode="poke"), dag_server)
