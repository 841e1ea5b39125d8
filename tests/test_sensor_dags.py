"""Whole DAG runs through ``airflow dags test``: mapped operator and sensor, templated handle, poke mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.links.imagecontains import dashboard_url
from imagecontains_gateway.testing import LocalCrowdServer

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
    # The link comes from the connection alone (this server, with only simulated workers, has no such page).
    link = f"{dag_server.endpoint_url}/dashboard?prefix=tests-mapped-"
    assert set(_extra_links("imagecontains_mapped", "_link_CrowdDashboardLink").values()) == {link}
    # A second run of the DAG reuses every task and answer.
    assert _dags_test(dag_server, tmp_path, "imagecontains_mapped") == records
    assert len(dag_server.tasks(function_name="image-contains-test")) == len(IMAGES)


def test_templated_handle_from_xcom_pull(airflow_db, tmp_path, monkeypatch) -> None:
    # A server with the dashboard (a human or mixed workforce): the tasks get their extra link.
    with LocalCrowdServer(tmp_path / "crowd.db", subprocess=True, workforce="mixed") as dag_server:
        for name, value in dag_server.airflow_connection_env().items():
            monkeypatch.setenv(name, value)
        other = {"image": {"url": "https://img.example.com/other.jpg"}, "target": {"label": "person"}}
        ImageContainsHook().put_task("image-contains", "another-dag-0123", other)
        records = _dags_test(dag_server, tmp_path, "imagecontains_templated")
        _check_dashboard_links(dag_server, records)
    _assert_match_server(records, dag_server)


def _check_dashboard_links(dag_server, records: list[dict]) -> None:
    # Both tasks' "Crowd dashboard" extra link, as Airflow stored it for the UI when they finished.
    links = _extra_links("imagecontains_templated", "_link_CrowdDashboardLink")
    assert links == {"submit": f"{dag_server.endpoint_url}/dashboard?prefix=tests-templated-"} | {
        "wait": f"{dag_server.endpoint_url}/dashboard?prefix=tests-templated-"
    }
    # The page behind it shows exactly this run's tasks.
    with httpx.Client(base_url=dag_server.endpoint_url) as browser:
        browser.post("/signin", data={"token": dag_server.issue_token("dashboard", dag_server.account.account_id)})
        page = browser.get(links["wait"].removeprefix(dag_server.endpoint_url))
        assert "Tasks whose names start with <strong>tests-templated-</strong>" in page.text
        figures = browser.get("/dashboard/data", params={"prefix": "tests-templated-"}).json()
        everything = browser.get("/dashboard/data").json()
    assert sorted(task["task_name"] for task in figures["tasks"]) == sorted(r["task_name"] for r in records)
    assert everything["total"] == figures["total"] + 1 == len(IMAGES) + 1  # another DAG's task is left out


def _extra_links(dag_id: str, key: str) -> dict[str, str]:
    """The extra-link URLs of the DAG's latest run, by task id, from Airflow's database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        latest = session.scalar(select(func.max(XComModel.run_id)).where(XComModel.dag_id == dag_id))
        rows = session.execute(
            select(XComModel.task_id, XComModel.value).where(
                XComModel.dag_id == dag_id, XComModel.run_id == latest, XComModel.key == key
            )
        ).all()
    return dict(rows)


def test_the_dashboard_link_is_registered_and_empty_for_the_hosted_service(airflow_db) -> None:
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    run = subprocess.run([airflow, "providers", "links", "--output", "json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "airflow_provider_imagecontains.links.imagecontains.CrowdDashboardLink" in run.stdout
    assert dashboard_url("https://crowd.us-east-1.amazonaws.com", ["dag-0123"]) is None
    assert (
        dashboard_url("http://127.0.0.1:8787/", ["a-b-01", "a-b-02"]) == "http://127.0.0.1:8787/dashboard?prefix=a-b-"
    )
    assert dashboard_url("http://127.0.0.1:8787", ["a-01", "b-02"]) == "http://127.0.0.1:8787/dashboard"


@pytest.mark.slow
def test_poke_mode_sensor_gives_the_same_results(airflow_db, dag_server, tmp_path) -> None:
    _assert_match_server(_dags_test(dag_server, tmp_path, "imagecontains_mapped", sensor_mode="poke"), dag_server)


def test_max_run_tasks_caps_the_whole_mapped_run(airflow_db, dag_server, tmp_path) -> None:
    env = {
        **os.environ,
        **dag_server.airflow_connection_env(),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "IMAGECONTAINS_TEST_IMAGES": json.dumps(IMAGES),
        "IMAGECONTAINS_TEST_MAX_RUN_TASKS": "4",  # two mapped instances of 3 images: only one fits
    }
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    run = subprocess.run(
        [airflow, "dags", "test", "imagecontains_run_cap"], env=env, capture_output=True, text=True, timeout=240
    )
    output = run.stdout + run.stderr
    assert "more than max_run_tasks=4; nothing was submitted by this instance" in output, output[-3000:]
    stored = dag_server.tasks(function_name="image-contains-test")
    assert len(stored) == 3  # one instance's batch; the other was refused before any request
    assert {t["input"]["image"]["url"] for t in stored} in ({*IMAGES[:3]}, {*IMAGES[3:]})
