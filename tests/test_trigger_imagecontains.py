"""ImageContainsTrigger against the local crowd server over loopback (real signed HTTP)."""

from __future__ import annotations

import asyncio
import importlib
import re
import threading
import time
from functools import partial

import pytest

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.triggers import imagecontains as trigger_module
from airflow_provider_imagecontains.triggers._tracking import TaskTracker, build_records
from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger
from imagecontains_gateway.testing import LocalCrowdServer

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
    trigger = _trigger(["a", "b"], max_consecutive_poll_failures=7, hook_params={"max_concurrency": 3, "timeout": 5})
    classpath, kwargs = trigger.serialize()
    module_name, class_name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["task_names"] == ["a", "b"] and kwargs["max_consecutive_poll_failures"] == 7
    assert all(v is None or isinstance(v, (str, int, float, list, dict)) for v in kwargs.values())
    hook = rebuilt.hook()  # the hook the deferred half polls with has the settings of the half that deferred
    assert (hook.max_concurrency, hook.timeout, hook.max_attempts) == (3, 5, ImageContainsHook().max_attempts)


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


def test_triggers_on_one_event_loop_share_one_limit_of_reads_in_flight(crowd_server, monkeypatch) -> None:
    crowd_server(latency_ms=100)
    names = _submit(crowd_server.current, TEST_FN, 12)
    monkeypatch.setattr(trigger_module, "ImageContainsHook", partial(ImageContainsHook, max_concurrency=2))

    async def three_triggers() -> list[list[dict]]:
        return await asyncio.gather(*(_events(_trigger(names[i : i + 4])) for i in range(0, 12, 4)))

    started = time.monotonic()
    events = asyncio.run(three_triggers())
    elapsed = time.monotonic() - started

    assert all(event["status"] == "success" for (event,) in events)
    # Each task is read twice (processing, then its answer): 24 reads of at least 100 ms, 2 at a time across
    # all three triggers, take at least 1.2 s; with 2 per trigger they would take about a third of that.
    assert elapsed >= 1.2


def test_an_unusable_connection_ends_in_an_error_event(crowd_server, monkeypatch) -> None:
    crowd_server()
    names = _submit(crowd_server.current, TEST_FN, 2)
    event = asyncio.run(_events(_trigger(names, function_name="no-such-function")))[0]
    assert event["status"] == "error" and "FunctionNotFoundError" in event["message"]


@pytest.fixture
def short_hook_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trigger's hook gives up after two attempts a fraction of a second apart (instead of about 16 s),
    so an outage longer than its retry budget fits in a fast test."""
    short = partial(ImageContainsHook, max_attempts=2, retry_base_delay=0.05, max_retry_delay=0.1)
    monkeypatch.setattr(trigger_module, "ImageContainsHook", short)


def _gets_at_least(server: LocalCrowdServer, count: int) -> None:
    for _ in range(600):
        if server.running and _gets(server) >= count:
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"fewer than {count} GETs reached the server")


def test_an_outage_longer_than_the_hooks_retries_does_not_end_the_wait(
    tmp_path, monkeypatch, capsys, short_hook_retries
) -> None:
    server = LocalCrowdServer(tmp_path / "crowd.db", subprocess=True, test_function_seconds=1.0)
    server.start()
    try:
        for name, value in server.airflow_connection_env().items():
            monkeypatch.setenv(name, value)
        names = _submit(server, TEST_FN, 12)
        events: list[dict] = []
        watcher = _trigger(names, max_consecutive_poll_failures=1000)
        waiting = threading.Thread(target=lambda: events.extend(asyncio.run(_events(watcher))))
        waiting.start()
        _gets_at_least(server, len(names))  # the first cycle read every task: all still processing
        server.kill()
        threading.Event().wait(2.0)  # many cycles, each outliving the hook's retries
        server.start()
        waiting.join(timeout=60)
        stored = {task["task_name"]: task for task in server.tasks(TEST_FN)}
    finally:
        server.kill()

    (event,) = events
    assert event["status"] == "success"
    assert event["outcomes"] == "".join("Y" if stored[n]["result"]["containsTarget"] else "N" for n in names)
    warnings = re.findall(
        r"A crowd task read failed after retries \((\w+): [^\n]*\) after (\d+) answers this cycle; "
        r"the 12 unfinished tasks are read again in \d+s \((\d+) of at most 1000 cycles",
        capsys.readouterr().out,
    )
    # Several cycles in a row got no answer at all, and the wait went on.
    assert max(int(failed_cycles) for _, _, failed_cycles in warnings) >= 2
    # The server is down: connections are refused (or dropped by the stopping server), each named as such.
    assert {kind for kind, _, _ in warnings} <= {"EndpointUnreachableError", "ServiceError"}


def test_a_lasting_outage_ends_the_wait_after_the_documented_number_of_cycles(
    crowd_server, capsys, short_hook_retries
) -> None:
    server = crowd_server()
    names = _submit(server, TEST_FN, 3)
    server.stop()

    (event,) = asyncio.run(_events(_trigger(names, max_consecutive_poll_failures=3)))

    assert event["status"] == "error"
    assert "for 3 poll cycles in a row" in event["message"] and "EndpointUnreachableError" in event["message"]
    assert "connection refused by http://127.0.0.1:" in event["message"]
    assert "retrying this Airflow task resumes the wait" in event["message"]
    output = capsys.readouterr().out
    warned = re.findall(
        r"failed after retries \(EndpointUnreachableError: [^\n]*connection refused by http://127\.0\.0\.1:\d+ "
        r"[^\n]*\) after 0 answers this cycle.*\((\d) of at most 3",
        output,
    )
    assert warned == ["1", "2"]  # cycles 1 and 2 warn, cycle 3 ends the wait


def test_a_partly_throttled_poll_keeps_the_answers_that_arrived(crowd_server) -> None:
    server = crowd_server(throttle_rate=0.5, retry_after_seconds=0, seed=2)
    patient = ImageContainsHook(max_attempts=30, retry_base_delay=0.001, max_retry_delay=0.01)
    inputs = {
        f"p-{i}": {"image": {"url": f"https://img.example.com/p/{i}.jpg"}, "target": {"label": "x"}} for i in range(20)
    }
    patient.put_tasks(TEST_FN, inputs)
    impatient = ImageContainsHook(max_attempts=1)  # every throttled read outlives its retries
    trigger = _trigger(list(inputs))

    async_tracker, mixed_cycles = TaskTracker(inputs), 0
    for _ in range(60):
        before = set(async_tracker.unfinished)
        cycle = asyncio.run(trigger._poll(impatient, async_tracker))
        assert before - set(async_tracker.unfinished) == set(async_tracker.outcomes) & before
        if cycle.error is not None:
            assert cycle.error.status_code == 429
            mixed_cycles += bool(cycle.finished)  # the answers read before the throttled one are kept
        if async_tracker.done:
            break
    assert async_tracker.done and mixed_cycles >= 1

    sync_tracker, mixed_polls = TaskTracker(inputs), 0
    for _ in range(60):
        found = sync_tracker.poll(partial(impatient.get_tasks, TEST_FN), sync_tracker.unfinished)
        assert set(found.transient_errors) <= set(sync_tracker.unfinished)  # a throttled task is simply read again
        mixed_polls += bool(found.finished and found.transient_errors)
        if sync_tracker.done:
            break
    assert sync_tracker.done and mixed_polls >= 1
    assert server.request_counts()[("GET", 429)] > 0


def test_the_first_wait_is_poll_interval_then_it_doubles_while_nothing_finishes(crowd_server, monkeypatch) -> None:
    server = crowd_server(workforce_size=0)
    names = _submit(server, "image-contains", 2)  # nobody answers: every cycle is empty
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def record_wait(seconds: float) -> None:
        if seconds < 1:  # the client library's own short pauses
            return await real_sleep(seconds)
        waits.append(seconds)
        if len(waits) == 6:
            raise asyncio.CancelledError

    monkeypatch.setattr(trigger_module.asyncio, "sleep", record_wait)
    trigger = _trigger(names, "image-contains", poll_interval=60, max_poll_interval=600)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_events(trigger))

    # Each wait counts from the start of its poll, so it is a little shorter than the interval.
    assert [round(wait / 10) * 10 for wait in waits] == [60, 120, 240, 480, 600, 600]
