"""ImageContainsSensor: deferring to one trigger, poking, failed-task policies, payload size."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferred,
)
from airflow.sdk import DAG

from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor, parse_submission
from airflow_provider_imagecontains.triggers._tracking import TaskTracker, build_records
from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger

TEST_FN = "image-contains-test"
IMAGES = [f"https://img.example.com/cam/{i:04d}.jpg" for i in range(8)]


def _dag() -> DAG:
    return DAG("sensor_dag", schedule=None, start_date=datetime(2026, 1, 1))


def _submit(images=IMAGES, function_name=TEST_FN) -> dict:
    with _dag():
        return ImageContainsOperator(
            task_id="submit", images=images, target_label="person", function_name=function_name
        ).execute({})


def _sensor(submission, **kwargs) -> ImageContainsSensor:
    with _dag():
        return ImageContainsSensor(task_id="wait", submission=submission, poke_interval=0.05, **kwargs)


def _deferred_result(sensor: ImageContainsSensor):
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    event = asyncio.run(anext(deferred.value.trigger.run())).payload
    return deferred.value, event


def test_defers_to_one_trigger_for_all_tasks_and_returns_records(crowd_server) -> None:
    crowd_server()
    handle = _submit()
    deferred, event = _deferred_result(_sensor(handle, deferrable=True, timeout=90))

    assert isinstance(deferred.trigger, ImageContainsTrigger)
    assert deferred.trigger.task_names == [t["task_name"] for t in handle["tasks"]]
    assert deferred.timeout == timedelta(seconds=90)
    records = _sensor(handle).execute_complete({}, event)
    assert [(r["url"], r["label"], r["task_name"]) for r in records] == [
        (t["url"], t["label"], t["task_name"]) for t in handle["tasks"]
    ]
    assert all(r["state"] == "completed" and isinstance(r["contains_target"], bool) for r in records)


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_non_deferrable_modes_give_the_same_results(crowd_server, mode) -> None:
    crowd_server()
    handle = _submit()
    _, event = _deferred_result(_sensor(handle, deferrable=True))
    deferred_records = _sensor(handle).execute_complete({}, event)

    sensor = _sensor(handle, deferrable=False, mode=mode)
    result = sensor.poke({})
    while not result.is_done:  # Airflow re-pokes (or reschedules a fresh sensor) until done
        sensor = sensor if mode == "poke" else _sensor(handle, deferrable=False, mode=mode)
        result = sensor.poke({})
    assert result.xcom_value == deferred_records


def test_poke_mode_execute_returns_the_records(crowd_server) -> None:
    crowd_server()
    handle = _submit()
    records = _sensor(handle, deferrable=False).execute({})
    assert [r["url"] for r in records] == IMAGES


def test_submission_may_be_a_rendered_string_or_a_list_of_mapped_handles(crowd_server) -> None:
    crowd_server()
    first, second = _submit(IMAGES[:3]), _submit(IMAGES[3:])
    assert parse_submission(str(first)) == first
    merged = parse_submission([first, second])
    assert [t["url"] for t in merged["tasks"]] == IMAGES
    with pytest.raises(ValueError, match="expected the ImageContainsOperator's return value"):
        parse_submission("not a handle")
    with pytest.raises(ValueError, match="mix functions"):
        parse_submission([first, {**second, "function_name": "image-contains"}])


@pytest.fixture
def failed_handle(crowd_server):
    crowd_server(workforce_size=0, task_deadline_seconds=0.1)
    return _submit(IMAGES[:3], function_name="image-contains")


def test_failed_policy_fail_lists_the_failed_tasks(failed_handle) -> None:
    _, event = _deferred_result(_sensor(failed_handle, deferrable=True))
    with pytest.raises(AirflowFailException, match="3 of 3 crowd task") as caught:  # final: no Airflow retry
        _sensor(failed_handle).execute_complete({}, event)
    assert IMAGES[0] in str(caught.value) and "Expired" in str(caught.value)
    assert "resubmit_failed=True" in str(caught.value)


def test_failed_policy_skip_and_report(failed_handle) -> None:
    _, event = _deferred_result(_sensor(failed_handle, deferrable=True))
    with pytest.raises(AirflowSkipException, match="3 of 3 crowd task"):
        _sensor(failed_handle, failed_policy="skip").execute_complete({}, event)
    records = _sensor(failed_handle, failed_policy="report").execute_complete({}, event)
    assert [(r["state"], r["contains_target"], r["problem"]["code"]) for r in records] == [
        ("failed", None, "Expired")
    ] * 3


def test_trigger_error_events_fail_the_task_and_bad_policies_are_refused() -> None:
    handle = {"function_name": TEST_FN, "imagecontains_conn_id": "c", "tasks": []}
    with pytest.raises(AirflowException, match="FunctionNotFoundError: nope"):
        _sensor(handle).execute_complete({}, {"status": "error", "message": "FunctionNotFoundError: nope"})
    with pytest.raises(ValueError, match="failed_policy"):
        _sensor(handle, failed_policy="ignore")


def test_payloads_for_10000_images_stay_compact() -> None:
    tasks = [
        {"task_name": f"surveillance_triage-{i:032x}", "url": f"s3://frames/cam1/{i:06d}.jpg", "label": "person"}
        for i in range(10_000)
    ]
    tracker = TaskTracker(t["task_name"] for t in tasks)
    tracker.record({t["task_name"]: {"state": "completed", "result": {"containsTarget": True}} for t in tasks})
    event_bytes = len(json.dumps(tracker.to_event()))
    handle_bytes = len(json.dumps({"function_name": TEST_FN, "imagecontains_conn_id": "c", "tasks": tasks}))
    results_bytes = len(json.dumps(build_records(tasks, tracker.to_event())))
    # The trigger event is one character per task; handle and results cost about one short line per image.
    assert event_bytes < 11_000
    # Records carry source, model_score and model_contains_target (pre-screen) even without a model, and
    # confidence and answers even when the results gave none.
    assert handle_bytes < 130 * 10_000 and results_bytes < 310 * 10_000
    # Results with confidence and answers (the local server's) add about a dozen characters per task.
    result = {"containsTarget": True, "confidence": 0.9846, "answers": 3}
    tracker.record({t["task_name"]: {"state": "completed", "result": result} for t in tasks})
    assert len(json.dumps(tracker.to_event())) < 11_000 + 13 * 10_000


def test_an_empty_submission_finishes_at_once_with_no_records(crowd_server) -> None:
    crowd_server()
    handle = _submit(images=[])
    assert handle["tasks"] == []
    assert _sensor(handle).execute({}) == []


def test_a_dry_run_result_skips_the_sensor_saying_so(crowd_server) -> None:
    server = crowd_server()
    with _dag():
        summary = ImageContainsOperator(
            task_id="submit", images=IMAGES, target_label="person", function_name=TEST_FN, dry_run=True
        ).execute({})

    for submission, counts in ((summary, "8 of 8"), (str(summary), "8 of 8"), ([summary, summary], "16 of 16")):
        with pytest.raises(
            AirflowSkipException, match=rf"dry run \(dry_run=True\).* {counts} crowd tasks would be new"
        ):
            _sensor(submission).execute({})
    with pytest.raises(AirflowSkipException, match="dry run"):
        _sensor(summary, deferrable=False).execute({})
    assert not server.tasks(function_name=TEST_FN)


def test_one_hook_for_all_pokes_on_the_sensors_own_connection_with_its_hook_params(crowd_server, monkeypatch) -> None:
    server = crowd_server(workforce_size=0)  # nobody answers: the tasks stay processing
    handle = _submit(images=IMAGES[:2], function_name="image-contains")
    with_role = server.airflow_connection()
    with_role["extra"] = {**with_role["extra"], "role_arn": f"arn:aws:iam::{server.account.account_id}:role/wait"}
    monkeypatch.setenv("AIRFLOW_CONN_WITH_ROLE", json.dumps(with_role))
    sensor = _sensor(handle, imagecontains_conn_id="with_role", hook_params={"max_attempts": 2}, deferrable=False)

    for _ in range(3):
        assert sensor.poke({}).is_done is False
    sensor.deferrable = True
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})

    assert sensor.hook.imagecontains_conn_id == "with_role" and sensor.hook.max_attempts == 2
    sts_calls = sum(n for (method, _status), n in server.request_counts().items() if method == "POST")
    assert sts_calls == 1  # one AssumeRole for all pokes, not one per poke
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["imagecontains_conn_id"] == "with_role" and kwargs["hook_params"] == {"max_attempts": 2}


def test_records_go_to_object_storage_with_a_small_reference_in_xcom(crowd_server, tmp_path) -> None:
    from types import SimpleNamespace

    from airflow_provider_imagecontains.storage import read_records

    crowd_server()
    handle = _submit()
    _, event = _deferred_result(_sensor(handle, deferrable=True))
    in_xcom = _sensor(handle).execute_complete({}, event)
    folder = f"file://{tmp_path}/results"
    contexts = [{"ti": SimpleNamespace(dag_id="d", run_id="r1", task_id="wait", map_index=i)} for i in (0, 1)]

    references = [_sensor(handle, records_path=folder).execute_complete(context, event) for context in contexts]

    assert references[0] == {
        "records_uri": f"{folder}/d/r1/wait-0.records.jsonl",
        "records_conn_id": None,
        "count": len(IMAGES),
        "completed": len(IMAGES),
        "failed": 0,
    }
    assert len(json.dumps(references[0])) < 200  # whatever the number of images
    assert read_records(references[0]) == in_xcom  # one call gives back the records
    assert read_records(references) == in_xcom + in_xcom  # mapped instances: one list
    assert read_records(in_xcom) == in_xcom  # records kept in XCom read the same way


def test_a_stored_handle_keeps_xcom_and_the_trigger_kwargs_small(crowd_server, tmp_path) -> None:
    from types import SimpleNamespace

    crowd_server()
    folder = f"file://{tmp_path}/handles"
    context = {
        "ti": SimpleNamespace(
            dag_id="sensor_dag", run_id="r1", task_id="submit", map_index=-1, xcom_push=lambda **_: None
        )
    }
    with _dag():
        submit = ImageContainsOperator(
            task_id="submit", images=IMAGES, target_label="person", function_name=TEST_FN, records_path=folder
        )
    stored = submit.execute(context)
    in_xcom = _submit()

    assert stored["tasks_uri"] == f"{folder}/sensor_dag/r1/submit.tasks.jsonl" and stored["task_count"] == 8
    assert "tasks" not in stored and len(json.dumps(stored)) < 300
    deferred, event = _deferred_result(_sensor(stored, deferrable=True))
    kwargs = deferred.trigger.serialize()[1]
    assert kwargs["task_names"] is None and kwargs["tasks_uri"] == stored["tasks_uri"]
    assert len(json.dumps(kwargs)) < 400  # whatever the number of images
    assert _sensor(stored).execute_complete({}, event) == _sensor(in_xcom).execute_complete({}, event)
