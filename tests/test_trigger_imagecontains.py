"""ImageContainsTrigger against the local crowd server over loopback (real signed HTTP)."""

from __future__ import annotations

import asyncio
import importlib
import re

import pytest

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.triggers._tracking import build_records
from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger

TEST_FN = "image-contains-test"


def _submit(server, function_name: str, count: int, prefix: str = "t") -> list[str]:
    inputs = {
        f"{prefix}-{i}": {"image": {"url": f"https://img.example.com/{prefix}/{i}.jpg"}, "target": {"label": "person"}}
        for i in range(count)
    }
    ImageContainsHook().put_tasks(function_name, inputs)
    return list(inputs)


def _trigger(names: list[str], function_name: str = TEST_FN, **kwargs) -> ImageContainsTrigger:
    settings = {"poll_interval": 0.05, "max_poll_interval": 0.2, **kwargs}
    return ImageContainsTrigger(
        task_names=names, function_name=function_name, imagecontains_conn_id="imagecontains_default", **settings
    )


async def _events(trigger: ImageContainsTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def _gets(server) -> int:
    return sum(n for (method, _status), n in server.request_counts().items() if method == "GET")


def test_serializes_to_classpath_and_plain_kwargs() -> None:
    trigger = _trigger(["a", "b"], batch_size=7)
    classpath, kwargs = trigger.serialize()
    module_name, class_name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["task_names"] == ["a", "b"] and kwargs["batch_size"] == 7
    assert all(isinstance(v, (str, int, float, list)) for v in kwargs.values())


def test_one_event_with_every_result_and_only_unfinished_tasks_polled(crowd_server) -> None:
    server = crowd_server()
    names = _submit(server, TEST_FN, 20)
    hook = ImageContainsHook()
    hook.get_tasks(TEST_FN, names[:1])
    hook.get_tasks(TEST_FN, names[:1])  # the mock answers on the second GET: names[0] is finished
    before = _gets(server)

    events = asyncio.run(_events(_trigger(names)))

    assert len(events) == 1 and events[0]["status"] == "success"
    # Cycle 1 reads all 20 (19 answer "processing"), cycle 2 reads only the 19 unfinished.
    assert _gets(server) - before == 20 + 19
    records = build_records([{"task_name": n, "url": f"u{n}", "label": "person"} for n in names], events[0])
    stored = {doc["taskName"]: doc for doc in hook.get_tasks(TEST_FN, names).values()}
    for record in records:
        assert record["state"] == "completed" and record["problem"] is None
        assert record["contains_target"] is stored[record["task_name"]]["result"]["containsTarget"]


def test_failed_tasks_and_vanished_tasks_are_reported_with_their_problem(crowd_server) -> None:
    server = crowd_server(workforce_size=0, task_deadline_seconds=0.1)
    names = _submit(server, "image-contains", 3)

    events = asyncio.run(_events(_trigger([*names, "never-created"], function_name="image-contains")))

    event = events[0]
    assert event["outcomes"] == "FFFF"
    assert {event["problems"][n]["code"] for n in names} == {"Expired"}
    assert event["problems"]["never-created"]["code"] == "TaskNotFound"


def test_simulated_workforce_answers_reach_the_event(crowd_server) -> None:
    crowd_server(workforce_size=3, worker_accuracy=1.0)
    names = _submit(crowd_server.current, "image-contains", 6)
    event = asyncio.run(_events(_trigger(names, function_name="image-contains")))[0]
    assert set(event["outcomes"]) <= {"Y", "N"} and len(event["outcomes"]) == 6


def test_restarted_trigger_resumes_from_its_kwargs_without_resubmitting(crowd_server) -> None:
    server = crowd_server(test_function_seconds=0.5)
    names = _submit(server, TEST_FN, 10)
    classpath, kwargs = _trigger(names).serialize()

    async def run_briefly() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_events(_trigger(names)), timeout=0.2)

    asyncio.run(run_briefly())  # the triggerer stops mid-wait
    module_name, class_name = classpath.rsplit(".", 1)
    resumed = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    event = asyncio.run(_events(resumed))[0]

    assert event["status"] == "success" and len(event["outcomes"]) == 10
    assert len(server.tasks(function_name=TEST_FN)) == 10
    assert sum(n for (method, _status), n in server.request_counts().items() if method == "PUT") == 10


def test_throttling_slows_polling_but_results_still_arrive(crowd_server) -> None:
    crowd_server(throttle_rate=0.5, seed=7)
    names = _submit(crowd_server.current, TEST_FN, 10)
    event = asyncio.run(_events(_trigger(names)))[0]
    assert event["status"] == "success" and "." not in event["outcomes"]


def test_progress_is_logged_as_counts_not_per_image(crowd_server, capsys) -> None:
    server = crowd_server(test_function_seconds=0.3)
    names = _submit(server, TEST_FN, 50)
    capsys.readouterr()
    asyncio.run(_events(_trigger(names, log_interval=3600)))
    output = capsys.readouterr().out  # Airflow's structured logging writes to stdout
    progress = re.findall(r"Crowd tasks: [^\[]*finished\)", output)
    # The first cycle and the final one; the hour-long log interval suppresses the cycles between.
    assert progress == [
        "Crowd tasks: 0 completed, 0 failed, 50 processing of 50 tasks (0.0% finished)",
        "Crowd tasks: 50 completed, 0 failed, 0 processing of 50 tasks (100.0% finished)",
    ]
    assert not any(name in output for name in names)


def test_an_unusable_connection_ends_in_an_error_event(crowd_server, monkeypatch) -> None:
    crowd_server()
    names = _submit(crowd_server.current, TEST_FN, 2)
    event = asyncio.run(_events(_trigger(names, function_name="no-such-function")))[0]
    assert event["status"] == "error" and "FunctionNotFoundError" in event["message"]
