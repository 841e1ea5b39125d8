"""Faults, restarts and load: nothing lost, nothing paid twice, every result right.

Driven through the local server's fault options, real SIGKILLs of the server, of an operator process and of
a trigger process, and a scripted loopback server that answers nonsense. Each scenario records its figures
(requests retried, tasks created vs images, results lost, duplicates); with ``RELIABILITY_FIGURES=path``
set they are written to that JSON file, which ``bench/bench_reliability.py`` turns into docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException
from airflow.sdk import DAG
from loopback import LoopbackServer

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor
from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger
from imagecontains_gateway.testing import LocalCrowdServer

TEST_FN = "image-contains-test"
PROD_FN = "image-contains"
FIGURES: dict[str, dict[str, Any]] = {}

# A triggerer or worker process of its own: runs one ImageContainsTrigger (printing its event and the
# loop's longest stall and the process's memory) or one ImageContainsOperator submission.
RUNNER = """
import asyncio, json, resource, sys, time

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20

mode, arguments = sys.argv[1], json.loads(open(sys.argv[2]).read())
if mode == "operator":
    from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
    ImageContainsOperator(task_id="submit", **arguments).execute({})
else:
    from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger

    async def main():
        stall = 0.0
        async def ticker():
            nonlocal stall
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                stall = max(stall, time.monotonic() - before - 0.01)
        tick = asyncio.create_task(ticker())
        async for event in ImageContainsTrigger(**arguments).run():
            tick.cancel()
            return event.payload, stall

    # Baseline after the libraries a triggerer has loaded anyway (Airflow's connection machinery,
    # boto3, aiohttp): what is measured is the memory the watch itself adds.
    from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
    ImageContainsHook(imagecontains_conn_id=arguments["imagecontains_conn_id"]).get_conn()
    import aiohttp  # noqa: F401
    rss_before = rss_mb()
    payload, stall = asyncio.run(main())
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would include pytest's own memory.
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"event": payload, "max_stall_s": stall, "rss_before_mb": rss_before, "peak_rss_mb": peak}))
"""


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    target = os.environ.get("RELIABILITY_FIGURES")
    if target and FIGURES:
        existing = json.loads(Path(target).read_text()) if Path(target).exists() else {}
        Path(target).write_text(json.dumps({**existing, **FIGURES}, indent=2, sort_keys=True))


@pytest.fixture
def process_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Factory: a local crowd server in a child process (so it can be SIGKILLed and keeps its CPU work off
    this interpreter), set as the ``imagecontains_default`` connection."""
    servers: list[LocalCrowdServer] = []

    def start(**config: Any) -> LocalCrowdServer:
        server = LocalCrowdServer(tmp_path / f"crowd-{len(servers)}.db", subprocess=True, **config)
        server.start()
        servers.append(server)
        for name, value in server.airflow_connection_env().items():
            monkeypatch.setenv(name, value)
        return server

    yield start
    for server in servers:
        server.kill()


def image_urls(count: int, prefix: str = "cam") -> list[str]:
    return [f"https://img.example.com/{prefix}/{i:05d}.jpg" for i in range(count)]


def operator(images: list[str], function_name: str = PROD_FN, **kwargs: Any) -> ImageContainsOperator:
    with DAG("reliability", schedule=None, start_date=datetime(2026, 1, 1)):
        return ImageContainsOperator(
            task_id="submit", images=images, target_label="person", function_name=function_name, **kwargs
        )


def trigger(task_names: list[str], function_name: str = TEST_FN, **kwargs: Any) -> ImageContainsTrigger:
    settings = {"poll_interval": 0.1, "max_poll_interval": 0.5, **kwargs}
    return ImageContainsTrigger(
        task_names=task_names, function_name=function_name, imagecontains_conn_id="imagecontains_default", **settings
    )


async def first_event(watcher: ImageContainsTrigger) -> dict[str, Any]:
    async for event in watcher.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def run_process(mode: str, arguments: dict[str, Any], tmp_path: Path) -> subprocess.Popen[str]:
    runner, arguments_file = tmp_path / "runner.py", tmp_path / f"{mode}-arguments.json"
    runner.write_text(RUNNER)
    arguments_file.write_text(json.dumps(arguments))  # 10,000 task names are too long for a command line
    return subprocess.Popen(
        [sys.executable, str(runner), mode, str(arguments_file)], stdout=subprocess.PIPE, text=True, env=os.environ
    )


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def requests_by(server: LocalCrowdServer, method: str) -> Counter[int]:
    return Counter({status: n for (m, status), n in server.request_counts().items() if m == method})


def check_one_task_per_image(server: LocalCrowdServer, handle_tasks: list[dict[str, str]], function: str) -> int:
    """Assert every image has exactly one stored task with its own input; return the duplicates (0)."""
    stored = server.tasks(function)
    names = Counter(t["task_name"] for t in stored)
    duplicates = sum(n - 1 for n in names.values())
    assert duplicates == 0
    by_name = {t["task_name"]: t for t in stored}
    assert set(by_name) == {t["task_name"] for t in handle_tasks}  # none lost, none extra
    for task in handle_tasks:
        assert by_name[task["task_name"]]["input"] == {"image": {"url": task["url"]}, "target": {"label": "person"}}
    return duplicates


def stored_outcomes(server: LocalCrowdServer, names: list[str], function: str) -> str:
    """The results the server holds, in the trigger event's one-letter form."""
    by_name = {t["task_name"]: t for t in server.tasks(function)}
    letters = []
    for name in names:
        task = by_name[name]
        letters.append("F" if task["state"] == "failed" else "Y" if task["result"]["containsTarget"] else "N")
    return "".join(letters)


# ---- submission under faults ----


@pytest.mark.slow
def test_2000_images_under_throttling_server_errors_and_dropped_connections(process_server, capsys) -> None:
    server = process_server(workforce_size=0, throttle_rate=0.3, error_rate=0.1, drop_rate=0.05, seed=11)
    images = image_urls(2000)
    # The DAG's `retries` is 0: the few calls that outlive the hook's retry budget (2000 x 0.41^8, about 1.3
    # per try) are submitted again in the operator's next round, so ONE try succeeds.
    submit = operator(images, retries=0, submit_round_delay=2)
    handle = submit.execute({})

    duplicates = check_one_task_per_image(server, handle["tasks"], PROD_FN)
    puts = requests_by(server, "PUT")
    assert puts[201] == len(images)  # each task created (paid for) once; a PUT after a lost answer gets 200
    assert puts[429] and puts[500] + puts[503] and puts[200]  # the faults really happened
    hook = ImageContainsHook()
    assert sum(puts.values()) <= submit.submit_rounds * len(images) * hook.max_attempts  # within the budget
    output = capsys.readouterr().out
    resubmissions = re.findall(r"(\d+) of \d+ crowd task calls failed after retries", output)
    # Thousands of retries, yet one INFO summary per bulk PUT; only a round of a single call logs its retries.
    assert re.search(r"Crowd API PUT of 2000 tasks \(image-contains\): \d+ calls were retried", output)
    assert output.count("retrying in") <= len(resubmissions) * hook.max_attempts
    FIGURES["faulty_submission"] = {
        "scenario": "2,000 images; 30% 429 (Retry-After 1 s), 10% 500/503, 5% connections dropped after effect",
        "images": len(images),
        "tasks_created": puts[201],
        "requests": sum(puts.values()),
        "requests_retried": sum(puts.values()) - len(images),
        "operator_tries": 1,
        "calls_resubmitted": sum(int(count) for count in resubmissions),
        "submit_rounds_used": 1 + len(resubmissions),
        "results_lost": 0,
        "duplicates": duplicates,
    }


@pytest.mark.slow
def test_operator_killed_mid_submission_then_retried_creates_no_duplicates(process_server, tmp_path) -> None:
    server = process_server(workforce_size=0, latency_ms=40)
    images = image_urls(1500, "killed")
    arguments = {"images": images, "label": "person", "function_name": PROD_FN, "namespace": "killed-run"}
    worker = run_process("operator", arguments, tmp_path)
    wait_for(lambda: len(server.tasks(PROD_FN)) >= 300, 120, "the first 300 tasks")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    created_before_kill = len(server.tasks(PROD_FN))
    assert 300 <= created_before_kill < len(images)  # killed half way

    handle = ImageContainsOperator(task_id="submit", **arguments).execute({})  # Airflow's retry of the task

    duplicates = check_one_task_per_image(server, handle["tasks"], PROD_FN)
    puts = requests_by(server, "PUT")
    assert puts[201] == len(images)
    # The retry re-PUT every image: the ones the killed try had created answer 200 (same input), unpaid.
    assert puts[200] >= created_before_kill
    FIGURES["operator_killed"] = {
        "scenario": "operator process SIGKILLed mid-submission of 1,500 images, then retried",
        "images": len(images),
        "tasks_before_kill": created_before_kill,
        "tasks_created": puts[201],
        "requests": sum(puts.values()),
        "requests_retried": puts[200],
        "results_lost": 0,
        "duplicates": duplicates,
    }


# ---- waiting through restarts, expiry and failures ----


def test_server_sigkill_and_restart_while_the_trigger_waits(process_server) -> None:
    server = process_server(workforce_size=5, worker_accuracy=1.0, answer_delay_seconds=0.1, seed=5)
    handle = operator(image_urls(40, "outage")).execute({})
    names = [t["task_name"] for t in handle["tasks"]]
    outcome: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: outcome.update(asyncio.run(first_event(trigger(names, PROD_FN)))))
    waiter.start()
    time.sleep(1.0)
    server.kill()  # SIGKILL mid-wait: polls now fail to connect and are retried
    assert any(t["state"] == "processing" for t in server.tasks(PROD_FN))
    time.sleep(1.0)
    server.start()
    waiter.join(timeout=120)

    assert outcome["status"] == "success"
    assert outcome["outcomes"] == stored_outcomes(server, names, PROD_FN)  # every result, each one right
    assert "F" not in outcome["outcomes"] and len(server.tasks(PROD_FN)) == len(names)
    FIGURES["server_killed"] = {
        "scenario": "server SIGKILLed and restarted 1 s later while one trigger waits for 40 tasks",
        "images": len(names),
        "tasks_created": len(server.tasks(PROD_FN)),
        "results_lost": 0,
        "duplicates": 0,
    }


def test_trigger_process_killed_then_recreated_from_its_serialized_form(process_server, tmp_path) -> None:
    server = process_server(workforce_size=3, worker_accuracy=1.0, answer_delay_seconds=0.05, seed=9)
    handle = operator(image_urls(60, "triggerer")).execute({})
    names = [t["task_name"] for t in handle["tasks"]]
    classpath, kwargs = trigger(names, PROD_FN).serialize()
    triggerer = run_process("trigger", kwargs, tmp_path)
    wait_for(lambda: sum(requests_by(server, "GET").values()) >= len(names), 60, "the first poll")
    os.kill(triggerer.pid, signal.SIGKILL)
    triggerer.wait(timeout=30)
    puts_before = sum(requests_by(server, "PUT").values())

    module_name, class_name = classpath.rsplit(".", 1)
    recreated = getattr(__import__(module_name, fromlist=[class_name]), class_name)(**kwargs)
    event = asyncio.run(first_event(recreated))

    assert event["status"] == "success"
    assert event["outcomes"] == stored_outcomes(server, names, PROD_FN)
    assert sum(requests_by(server, "PUT").values()) == puts_before  # nothing resubmitted
    FIGURES["trigger_killed"] = {
        "scenario": "trigger process SIGKILLed after its first poll of 60 tasks, re-created from serialize()",
        "images": len(names),
        "tasks_created": len(server.tasks(PROD_FN)),
        "puts_after_restart": 0,
        "results_lost": 0,
        "duplicates": 0,
    }


def test_assumed_role_credentials_expiring_during_a_wait_are_refreshed(process_server, monkeypatch) -> None:
    server = process_server(session_duration_seconds=2, test_function_seconds=5.0)
    connection = server.airflow_connection()
    connection["extra"]["role_arn"] = f"arn:aws:iam::{server.account.account_id}:role/pipeline"
    monkeypatch.setenv("AIRFLOW_CONN_IMAGECONTAINS_DEFAULT", json.dumps(connection))
    handle = operator(image_urls(10, "role"), TEST_FN).execute({})
    names = [t["task_name"] for t in handle["tasks"]]

    event = asyncio.run(first_event(trigger(names)))  # waits about 5 s: three role sessions

    assert event["status"] == "success" and "." not in event["outcomes"]
    sts_calls = requests_by(server, "POST")[200]
    assert sts_calls >= 3  # AssumeRole for the operator, then at least twice more for the trigger
    assert requests_by(server, "GET")[403] == 0  # no request went out with expired credentials
    FIGURES["credentials_expire"] = {
        "scenario": "AssumeRole sessions of 2 s during a 5 s wait for 10 tasks",
        "images": len(names),
        "assume_role_calls": sts_calls,
        "refused_requests": 0,
        "results_lost": 0,
        "duplicates": 0,
    }


def test_insufficient_funds_and_expired_tasks_are_reported_by_name_per_policy(process_server) -> None:
    cases = {
        # One answer costs more than the account holds: every production task fails InsufficientFunds.
        "InsufficientFunds": {"starting_balance": 0.001, "workforce_size": 3},
        "Expired": {"workforce_size": 0, "task_deadline_seconds": 0.2},
    }
    for code, server_config in cases.items():
        process_server(**server_config)
        handle = operator(image_urls(3, code)).execute({})
        names = [t["task_name"] for t in handle["tasks"]]
        event = asyncio.run(first_event(trigger(names, PROD_FN)))
        with DAG("reliability_sensor", schedule=None, start_date=datetime(2026, 1, 1)):
            sensors = {
                policy: ImageContainsSensor(task_id=f"wait_{policy}", submission=handle, failed_policy=policy)
                for policy in ("fail", "skip", "report")
            }
        with pytest.raises(AirflowException) as failed:
            sensors["fail"].execute_complete({}, event)
        for task in handle["tasks"]:  # each failed task by URL and name, with the service's code and message
            assert task["url"] in str(failed.value) and task["task_name"] in str(failed.value)
        assert f"{code}: " in str(failed.value)
        with pytest.raises(AirflowSkipException, match=code):
            sensors["skip"].execute_complete({}, event)
        records = sensors["report"].execute_complete({}, event)
        assert [(r["state"], r["contains_target"], r["problem"]["code"]) for r in records] == [
            ("failed", None, code)
        ] * len(names)
        assert all(r["problem"]["message"] for r in records)


# ---- nonsense answers ----


def _document(name: str, **fields: Any) -> bytes:
    document = {"taskName": name, "input": {"image": {"url": "https://x.example/1.jpg"}, "target": {"label": "cat"}}}
    return json.dumps({**document, **fields}).encode()


NAME = "nonsense-task"
NONSENSE = {
    "html error page": (200, "text/html", b"<html><body><h1>Service Unavailable</h1></body></html>"),
    "html 400 page": (400, "text/html", b"<html><body>Bad Request</body></html>"),
    "truncated json": (200, "application/json", _document(NAME, state="completed")[:40]),
    "another task's document": (200, "application/json", _document("other", state="completed", result={})),
    "unknown state": (200, "application/json", _document(NAME, state="done", result={"containsTarget": True})),
    "completed without result": (200, "application/json", _document(NAME, state="completed", result=None)),
    "result without containsTarget": (200, "application/json", _document(NAME, state="completed", result={})),
    "containsTarget as text": (
        200,
        "application/json",
        _document(NAME, state="completed", result={"containsTarget": "false"}),
    ),
    "huge body": (200, "text/html", b"<html>" + b"x" * (32 * 2**20) + b"</html>"),
}


@pytest.mark.parametrize("answer", list(NONSENSE))
def test_nonsense_answers_end_in_a_clear_error_never_a_result(answer, monkeypatch) -> None:
    status, content_type, body = NONSENSE[answer]
    nonsense = LoopbackServer(lambda *request: (status, {"Content-Type": content_type}, body))
    connection = {
        "conn_type": "imagecontains",
        "login": "AKIANONSENSE",
        "password": "nonsense-secret",
        "extra": {"endpoint_url": nonsense.endpoint_url, "account_id": "123456789012"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_IMAGECONTAINS_DEFAULT", json.dumps(connection))
    try:
        event = asyncio.run(first_event(trigger([NAME], PROD_FN)))
    finally:
        nonsense.close()
    assert event["status"] == "error", f"{answer} was taken as a result: {event}"
    assert len(event["message"]) < 1000  # quotes an excerpt, never the whole body
    handle = {
        "function_name": PROD_FN,
        "imagecontains_conn_id": "imagecontains_default",
        "tasks": [{"task_name": NAME, "url": "https://x.example/1.jpg", "label": "cat"}],
    }
    with DAG("reliability_nonsense", schedule=None, start_date=datetime(2026, 1, 1)):
        sensor = ImageContainsSensor(task_id="wait", submission=handle)
    with pytest.raises(AirflowException, match="Waiting for the crowd tasks failed"):
        sensor.execute_complete({}, event)


# ---- load ----


@pytest.mark.slow
def test_one_trigger_watches_10000_tasks_while_the_server_throttles(process_server, tmp_path) -> None:
    server = process_server(test_function_seconds=1.0, throttle_rate=0.2, retry_after_seconds=0, seed=3)
    inputs = {
        f"load-{i:05d}": {"image": {"url": f"https://img.example.com/load/{i}.jpg"}, "target": {"label": "person"}}
        for i in range(10_000)
    }
    hook = ImageContainsHook(max_concurrency=64)
    hook.put_tasks(TEST_FN, inputs)
    names = list(inputs)
    _, kwargs = trigger(names, poll_interval=0.5, max_poll_interval=2.0).serialize()
    triggerer = run_process("trigger", kwargs, tmp_path)
    output, _ = triggerer.communicate(timeout=600)
    report = json.loads(output.strip().splitlines()[-1])

    assert report["event"]["status"] == "success"
    assert report["event"]["outcomes"] == stored_outcomes(server, names, TEST_FN)
    gets = requests_by(server, "GET")
    assert gets[429] > 0 and len(server.tasks(TEST_FN)) == len(names)
    memory_growth = report["peak_rss_mb"] - report["rss_before_mb"]
    assert memory_growth < 60  # issue 4's bound: batches of 1,000 GETs, one character of state per task
    assert report["max_stall_s"] < 2.0  # the event loop kept running through every poll cycle
    FIGURES["load_one_trigger"] = {
        "scenario": "one trigger (own process) watching 10,000 tasks; 20% of requests 429",
        "images": len(names),
        "tasks_created": len(server.tasks(TEST_FN)),
        "gets": sum(gets.values()),
        "requests_retried": gets[429],
        "peak_rss_growth_mb": round(memory_growth, 1),
        "max_event_loop_stall_s": round(report["max_stall_s"], 3),
        "results_lost": 0,
        "duplicates": 0,
    }


@pytest.mark.slow
def test_50_triggers_of_200_tasks_in_one_event_loop(process_server) -> None:
    server = process_server(test_function_seconds=1.0, throttle_rate=0.05, retry_after_seconds=0, seed=4)
    hook = ImageContainsHook(max_concurrency=64)
    batches = []
    for batch in range(50):
        inputs = {
            f"mapped-{batch:02d}-{i:03d}": {
                "image": {"url": f"https://img.example.com/mapped/{batch}/{i}.jpg"},
                "target": {"label": "person"},
            }
            for i in range(200)
        }
        hook.put_tasks(TEST_FN, inputs)
        batches.append(list(inputs))

    async def run_all() -> tuple[list[dict[str, Any]], float]:
        stall = 0.0

        async def ticker() -> None:
            nonlocal stall
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                stall = max(stall, time.monotonic() - before - 0.01)

        tick = asyncio.create_task(ticker())
        events = await asyncio.gather(*(first_event(trigger(names, poll_interval=0.5)) for names in batches))
        tick.cancel()
        return list(events), stall

    events, stall = asyncio.run(run_all())

    for names, event in zip(batches, events, strict=True):
        assert event["status"] == "success"
        assert event["outcomes"] == stored_outcomes(server, names, TEST_FN)
    FIGURES["load_50_triggers"] = {
        "scenario": "50 triggers of 200 tasks each, run concurrently in one event loop; 5% of requests 429",
        "images": 50 * 200,
        "tasks_created": len(server.tasks(TEST_FN)),
        "requests_retried": requests_by(server, "GET")[429],
        "max_event_loop_stall_s": round(stall, 3),
        "results_lost": 0,
        "duplicates": 0,
    }
