"""A real Airflow deployment runs the mapped DAG: what ``airflow standalone`` starts (scheduler with
the LocalExecutor, dag-processor, triggerer, API server, on SQLite), but started one by one so the
log servers stay off (they would bind every interface) and the API server binds to loopback.
The sensor must defer to the triggerer, which must resume it with the crowd's answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagecontains_gateway.testing import LocalCrowdServer

DAGS_FOLDER = Path(__file__).parent / "dags"
IMAGES = [f"https://img.example.com/deploy/{i:03d}.jpg" for i in range(6)]
TRIGGER_CLASSPATH = "airflow_provider_imagecontains.triggers.imagecontains.ImageContainsTrigger"
DEADLINE_SECONDS = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _query(db: Path, sql: str, *args) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # not created yet, or locked by a writer for a moment
        return []


def _wait_for(check, what: str, deadline: float, deployment_log: Path):
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"Timed out waiting for {what}. Last output:\n{deployment_log.read_text()[-4000:]}")


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop the components this test started (each leads its own process group)."""
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_sensor_defers_to_the_triggerer_and_resumes_with_results(tmp_path) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    home = tmp_path / "airflow-home"
    home.mkdir()
    db = home / "airflow.db"
    results = tmp_path / "results.json"
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    port = _free_port()
    # Test tasks answer only after 30 s, so the sensor certainly waits in the triggerer for a while.
    with LocalCrowdServer(tmp_path / "crowd.db", subprocess=True, test_function_seconds=30) as server:
        env = {
            **os.environ,
            **server.airflow_connection_env(),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "IMAGECONTAINS_TEST_IMAGES": json.dumps(IMAGES),
            "IMAGECONTAINS_TEST_RESULTS": str(results),
            "IMAGECONTAINS_TEST_SENSOR_MODE": "deferrable",
        }
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
        deployment_log = tmp_path / "deployment.log"
        components = [
            ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            ["scheduler", "--skip-serve-logs"],
            ["dag-processor"],
            ["triggerer", "--skip-serve-logs"],
        ]
        with deployment_log.open("w") as log_file:
            processes = [
                subprocess.Popen(
                    [airflow, *args], env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
                )
                for args in components
            ]
        try:
            _wait_for(
                lambda: _query(db, "select 1 from dag where dag_id = 'imagecontains_mapped'"),
                "the dag-processor to parse the DAG",
                deadline,
                deployment_log,
            )
            for command in (["dags", "unpause", "imagecontains_mapped"], ["dags", "trigger", "imagecontains_mapped"]):
                subprocess.run([airflow, *command], env=env, check=True, capture_output=True, timeout=120)

            seen_deferred = _wait_for(
                lambda: _query(
                    db,
                    "select ti.map_index, t.classpath from task_instance ti join trigger t on ti.trigger_id = t.id "
                    "where ti.task_id = 'wait' and ti.state = 'deferred'",
                ),
                "the sensor to defer",
                deadline,
                deployment_log,
            )
            run_state = _wait_for(
                lambda: _query(
                    db,
                    "select state from dag_run where dag_id = 'imagecontains_mapped' "
                    "and state in ('success', 'failed')",
                ),
                "the DAG run to finish",
                deadline,
                deployment_log,
            )
            wait_tis = _query(db, "select state, next_method from task_instance where task_id = 'wait'")
            triggerer_jobs = _query(db, "select count(*) from job where job_type = 'TriggererJob'")
        finally:
            _stop(processes)
        stored = {t["task_name"]: t for t in server.tasks(function_name="image-contains-test")}

    assert {classpath for _, classpath in seen_deferred} == {TRIGGER_CLASSPATH}
    assert triggerer_jobs[0][0] >= 1
    assert run_state == [("success",)], deployment_log.read_text()[-4000:]
    assert wait_tis == [("success", None), ("success", None)]  # two mapped sensors, both resumed
    records = json.loads(results.read_text())
    assert sorted(r["url"] for r in records) == IMAGES and len(stored) == len(IMAGES)
    for record in records:
        assert record["state"] == "completed" == stored[record["task_name"]]["state"]
        assert record["contains_target"] is stored[record["task_name"]]["result"]["containsTarget"]
