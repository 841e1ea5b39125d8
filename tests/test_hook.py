"""ImageContainsHook against the local crowd server over loopback: real SigV4, real STS, injected faults."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_imagecontains.exceptions import (
    AccessDeniedError,
    BulkTaskError,
    EndpointUnreachableError,
    FunctionNotFoundError,
    ServiceError,
    TaskInProgressError,
    TaskNameConflictError,
    TaskNotFoundError,
    ThrottledError,
)
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from imagecontains_gateway.testing import LocalCrowdServer

FAST_RETRIES = {"max_attempts": 8, "retry_base_delay": 0.001, "max_retry_delay": 0.02}


def image_input(index: int, label: str = "cat") -> dict[str, Any]:
    return {"image": {"url": f"https://images.example.com/{index}.jpg"}, "target": {"label": label}}


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., LocalCrowdServer]]:
    servers: list[LocalCrowdServer] = []

    def start(**config: Any) -> LocalCrowdServer:
        server = LocalCrowdServer(tmp_path / f"crowd-{len(servers)}.db", seed=7, **config)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ImageContainsHook]]:
    """A hook on a connection to ``server``, the connection's fields changed by ``connection_changes``."""
    hooks: list[ImageContainsHook] = []

    def make(server: LocalCrowdServer, connection_changes: dict[str, Any] | None = None, **hook_kwargs: Any):
        connection = server.airflow_connection()
        for key, value in (connection_changes or {}).items():
            if key == "extra":
                connection["extra"] = {k: v for k, v in {**connection["extra"], **value}.items() if v is not None}
            else:
                connection[key] = value
        conn_id = f"crowd_{len(hooks)}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        hook = ImageContainsHook(conn_id, **{**FAST_RETRIES, **hook_kwargs})
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.close()


def test_task_life_cycle(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(workforce_size=0)
    hook = make_hook(server)
    created = hook.put_task("image-contains-test", "life-1", image_input(1))
    assert (created["taskName"], created["state"], created["input"]) == ("life-1", "processing", image_input(1))
    assert hook.put_task("image-contains-test", "life-1", image_input(1)) == created  # idempotent: 200, same task
    assert hook.get_task("image-contains-test", "life-1")["state"] == "processing"
    completed = hook.get_task("image-contains-test", "life-1")
    assert completed["state"] == "completed"
    assert isinstance(completed["result"]["containsTarget"], bool)
    hook.delete_task("image-contains-test", "life-1")
    with pytest.raises(TaskNotFoundError, match="'life-1'"):
        hook.get_task("image-contains-test", "life-1")
    with pytest.raises(TaskNotFoundError):
        hook.delete_task("image-contains-test", "life-1")
    counts = server.request_counts()
    assert (counts[("PUT", 201)], counts[("PUT", 200)], counts[("DELETE", 204)]) == (1, 1, 1)


def test_service_refusals_map_to_exceptions(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(workforce_size=0)
    hook = make_hook(server)
    hook.put_task("image-contains", "busy", image_input(1))
    with pytest.raises(TaskNameConflictError, match="another task name") as conflict:
        hook.put_task("image-contains", "busy", image_input(2))
    assert conflict.value.code == "TaskAlreadyExists"
    with pytest.raises(TaskInProgressError, match="still processing") as in_progress:
        hook.delete_task("image-contains", "busy")
    assert (in_progress.value.status_code, in_progress.value.code) == (409, "TaskInProgress")
    with pytest.raises(FunctionNotFoundError) as unknown:
        hook.get_task("sentiment-analysis", "busy")
    assert unknown.value.code == "FunctionNotFound"
    assert [task["task_name"] for task in server.tasks()] == ["busy"]


def test_sts_calls_go_to_the_sts_endpoint_never_to_the_crowd_endpoint(
    start_server: Callable[..., LocalCrowdServer],
    make_hook: Callable[..., ImageContainsHook],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crowd, sts = start_server(workforce_size=0), start_server(workforce_size=0)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.endpoint_url)  # boto3's own STS setting
    hook = make_hook(crowd, {"extra": {"account_id": None, "service_config": None}})
    hook.put_task("image-contains-test", "sts-1", image_input(1))
    assert hook.account_id == crowd.account.account_id
    assert crowd.request_counts()[("POST", 200)] == 0  # no GetCallerIdentity sent to the crowd host
    assert sts.request_counts()[("POST", 200)] == 1
    assert [task["task_name"] for task in crowd.tasks()] == ["sts-1"]


def test_account_id_is_learned_once_through_sts(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server()
    hook = make_hook(server, {"extra": {"account_id": None}})
    hook.put_tasks("image-contains-test", {f"t-{i}": image_input(i) for i in range(5)})
    hook.put_task("image-contains-test", "t-5", image_input(5))
    assert hook.account_id == server.account.account_id
    assert server.request_counts()[("POST", 200)] == 1  # one GetCallerIdentity for all six calls
    assert {task["account"] for task in server.tasks()} == {server.account.account_id}


def test_wrong_secret_is_access_denied_and_connection_test_says_so(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server()
    good, bad = make_hook(server), make_hook(server, {"password": "not-the-secret-at-all"})
    with pytest.raises(AccessDeniedError, match="check the access key"):
        bad.get_task("image-contains-test", "x")
    ok, message = bad.test_connection()
    assert ok is False
    assert "AccessDeniedError" in message
    assert "not-the-secret-at-all" not in message
    assert good.test_connection() == (
        True,
        f"Connection works: {server.endpoint_url} accepted the credentials of account {server.account.account_id}.",
    )
    assert server.tasks() == []  # the connection test never creates a task


def test_bulk_calls_survive_throttling_errors_and_dropped_connections(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(throttle_rate=0.15, error_rate=0.15, drop_rate=0.15, workforce_size=0)
    hook = make_hook(server, max_attempts=12, max_concurrency=8)
    inputs = {f"bulk-{i}": image_input(i) for i in range(200)}
    created = hook.put_tasks("image-contains", inputs)
    assert {name: task["input"] for name, task in created.items()} == inputs
    stored = server.tasks("image-contains")
    assert sorted(task["task_name"] for task in stored) == sorted(inputs)  # each task exactly once
    read = hook.get_tasks("image-contains", list(inputs))
    assert {name: task["state"] for name, task in read.items()} == dict.fromkeys(inputs, "processing")
    counts = server.request_counts()
    assert counts[("PUT", 429)] and counts[("PUT", 500)] + counts[("PUT", 503)]  # faults really happened
    assert counts[("PUT", 200)]  # a retried PUT whose first answer was dropped: "same input again"
    assert sum(n for (method, _), n in counts.items() if method == "PUT") <= len(inputs) * hook.max_attempts


def test_retry_budget_is_bounded_and_throttling_reported(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(throttle_rate=1.0)
    hook = make_hook(server, max_attempts=4)
    with pytest.raises(ThrottledError, match="lower max_concurrency") as raised:
        hook.get_task("image-contains-test", "never")
    assert raised.value.status_code == 429
    assert server.request_counts()[("GET", 429)] == 4


def test_bulk_read_keeps_successes_when_some_tasks_are_missing(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server()
    hook = make_hook(server)
    hook.put_tasks("image-contains-test", {"here-1": image_input(1), "here-2": image_input(2)})
    with pytest.raises(BulkTaskError) as raised:
        hook.get_tasks("image-contains-test", ["here-1", "gone", "here-2", "here-1"])
    assert set(raised.value.results) == {"here-1", "here-2"}
    assert list(raised.value.errors) == ["gone"]
    assert isinstance(raised.value.errors["gone"], TaskNotFoundError)


def test_async_reads_do_not_block_the_event_loop(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(latency_ms=150)
    hook = make_hook(server, {"extra": {"account_id": None}})
    names = [f"async-{i}" for i in range(20)]
    make_hook(server).put_tasks("image-contains-test", {name: image_input(i) for i, name in enumerate(names)})
    loop_thread = threading.get_ident()
    order: list[str] = []

    async def tick() -> None:
        await asyncio.sleep(0.01)
        order.append("loop ran")

    async def read() -> dict[str, Any]:
        ticker = asyncio.create_task(tick())
        tasks = await hook.aget_tasks("image-contains-test", names)
        order.append("read done")
        await ticker
        return tasks

    tasks = asyncio.run(read())
    assert order == ["loop ran", "read done"]  # the loop kept running while the reads waited
    assert sorted(tasks) == sorted(names)
    assert threading.get_ident() == loop_thread
    single = asyncio.run(hook.aget_task("image-contains-test", names[0]))
    assert single["taskName"] == names[0]
    with pytest.raises(TaskNotFoundError):
        asyncio.run(hook.aget_task("image-contains-test", "missing"))


def test_streamed_reads_arrive_as_they_finish_and_closing_early_sends_no_more(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(latency_ms=50)
    hook = make_hook(server, max_concurrency=4)
    names = [f"stream-{i}" for i in range(40)]
    hook.put_tasks("image-contains-test", {name: image_input(i) for i, name in enumerate(names)})

    async def read_all() -> dict[str, Any]:
        return {name: outcome async for name, outcome in hook.aiter_tasks("image-contains-test", [*names, "missing"])}

    reads = asyncio.run(read_all())
    assert {name: doc["taskName"] for name, doc in reads.items() if name != "missing"} == {n: n for n in names}
    assert isinstance(reads["missing"], TaskNotFoundError)  # one read's error is its outcome, not the end

    gets_at_close = 0

    async def read_five() -> list[str]:
        nonlocal gets_at_close
        taken = []
        async with aclosing(hook.aiter_tasks("image-contains-test", names)) as stream:
            async for name, _doc in stream:
                taken.append(name)
                if len(taken) == 5:
                    break
        gets_at_close = server.request_counts()[("GET", 200)]
        await asyncio.sleep(0.3)  # long enough for any request still running to reach the server
        return taken

    gets_before = server.request_counts()[("GET", 200)]
    assert len(asyncio.run(read_five())) == 5
    # Reads that finished before the consumer took them are answered already at close; after it, only the
    # at most 4 requests in flight reach the server, and no new one is sent: most of the 40 never are.
    assert server.request_counts()[("GET", 200)] - gets_at_close <= 4
    assert 5 <= server.request_counts()[("GET", 200)] - gets_before <= 5 + 2 * 4


def test_a_shared_limit_bounds_the_requests_of_several_calls_together(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(latency_ms=100)
    hook = make_hook(server, max_concurrency=6)
    names = [f"shared-{i}" for i in range(12)]
    hook.put_tasks("image-contains-test", {name: image_input(i) for i, name in enumerate(names)})

    async def read_in_two_calls(shared_limit: asyncio.Semaphore | None) -> float:
        async def read(part: list[str]) -> int:
            return len(
                [read async for read in hook.aiter_tasks("image-contains-test", part, shared_limit=shared_limit)]
            )

        started = time.monotonic()
        assert await asyncio.gather(read(names[:6]), read(names[6:])) == [6, 6]
        return time.monotonic() - started

    # 12 reads of at least 100 ms each, at most 3 at a time: at least 4 rounds.
    shared = asyncio.run(read_in_two_calls(asyncio.Semaphore(3)))
    assert shared >= 0.4
    assert asyncio.run(read_in_two_calls(None)) < shared  # each call alone: 6 at a time, one round


def test_callers_waiting_for_a_shared_limit_keep_one_waiting_task_each(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    """Hundreds of triggers waiting for the triggerer's read limit must not each keep max_concurrency waiting
    workers: starting thousands of them at every cycle stalled the event loop."""
    server = start_server(latency_ms=50, workforce_size=0)
    hook = make_hook(server, max_concurrency=8)
    names = [f"waiting-{i}" for i in range(40)]
    hook.put_tasks("image-contains-test", {name: image_input(i) for i, name in enumerate(names)})

    async def ten_callers_sharing_two_places() -> int:
        shared_limit = asyncio.Semaphore(2)
        most_tasks = 0

        async def read(part: list[str]) -> int:
            nonlocal most_tasks
            count = 0
            async for _read in hook.aiter_tasks("image-contains-test", part, shared_limit=shared_limit):
                count += 1
                most_tasks = max(most_tasks, len(asyncio.all_tasks()))
            return count

        assert await asyncio.gather(*(read(names[i : i + 4]) for i in range(0, 40, 4))) == [4] * 10
        assert shared_limit._value == 2  # every place given back
        return most_tasks

    # 10 callers + 10 waiting starters + 2 workers (+ the main task); one worker per place and caller
    # would be 10 x 4 waiting workers.
    assert asyncio.run(ten_callers_sharing_two_places()) <= 10 + 10 + 2 + 1


def test_bulk_reads_leave_no_reference_cycles_behind_per_task(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    """Garbage in reference cycles is only freed by the garbage collector, and in a triggerer its full
    collections stall the event loop; reading a task must leave none (a new retry object per call left 18)."""
    server = start_server(subprocess=True)  # the in-process server's own garbage would count too
    hook = make_hook(server)
    names = [f"gc-{i}" for i in range(400)]
    hook.put_tasks("image-contains-test", {name: image_input(i) for i, name in enumerate(names)})

    def cyclic_garbage_of_reading(count: int) -> int:
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            asyncio.run(hook.aget_tasks("image-contains-test", names[:count]))
            gc.collect()
            return len(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()

    cyclic_garbage_of_reading(100)  # warm up: imports and caches
    per_task = (cyclic_garbage_of_reading(400) - cyclic_garbage_of_reading(100)) / 300
    assert per_task < 0.5


def test_async_puts_create_each_task_once_and_keep_failures(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(throttle_rate=0.15, error_rate=0.15, drop_rate=0.15, workforce_size=0)
    hook = make_hook(server, max_attempts=12, max_concurrency=4)
    inputs = {f"aput-{i}": image_input(i) for i in range(40)}
    created = asyncio.run(hook.aput_tasks("image-contains", inputs))
    assert {name: task["input"] for name, task in created.items()} == inputs
    assert sorted(task["task_name"] for task in server.tasks("image-contains")) == sorted(inputs)
    again = {**inputs, "aput-0": image_input(0, label="dog")}  # same name, different input
    with pytest.raises(BulkTaskError, match="1 of 40") as raised:
        asyncio.run(hook.aput_tasks("image-contains", again))
    assert isinstance(raised.value.errors["aput-0"], TaskNameConflictError)
    assert raised.value.results == {name: created[name] for name in inputs if name != "aput-0"}


def test_quoted_function_names_are_signed_alike_on_both_paths(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server()
    hook = make_hook(server)
    odd_name = "sentiment analysis+\u00fc"  # quoted in the URL: a path mismatch would be a 403
    with pytest.raises(FunctionNotFoundError):
        hook.get_task(odd_name, "t")
    with pytest.raises(BulkTaskError) as raised:
        hook.get_tasks(odd_name, ["t", "u"])
    assert {type(error) for error in raised.value.errors.values()} == {FunctionNotFoundError}


def test_assumed_role_credentials_are_refreshed(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(session_duration_seconds=2)
    role_arn = f"arn:aws:iam::{server.account.account_id}:role/crowd-caller"
    hook = make_hook(server, {"extra": {"role_arn": role_arn}})
    hook.put_task("image-contains-test", "role-1", image_input(1))
    first_key = hook.credentials.get_frozen_credentials().access_key
    assert first_key.startswith("ASIA")
    time.sleep(2.5)  # outlive the first role session
    assert asyncio.run(hook.aget_tasks("image-contains-test", ["role-1"]))["role-1"]["taskName"] == "role-1"
    second_key = hook.credentials.get_frozen_credentials().access_key
    assert second_key != first_key
    time.sleep(2.5)
    assert hook.get_task("image-contains-test", "role-1")["taskName"] == "role-1"
    assert hook.credentials.get_frozen_credentials().access_key not in (first_key, second_key)
    assert server.request_counts()[("POST", 200)] >= 3  # AssumeRole again, from both paths


def test_no_secret_in_debug_logs_even_with_sts(
    start_server: Callable[..., LocalCrowdServer],
    make_hook: Callable[..., ImageContainsHook],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = start_server(error_rate=0.3)
    role_arn = f"arn:aws:iam::{server.account.account_id}:role/crowd-caller"
    hook = make_hook(server, {"extra": {"role_arn": role_arn, "account_id": None}})
    with caplog.at_level(logging.DEBUG):
        hook.put_tasks("image-contains-test", {f"s-{i}": image_input(i) for i in range(10)})
        hook.get_tasks("image-contains-test", [f"s-{i}" for i in range(10)])
    role = hook.credentials.get_frozen_credentials()
    out, err = capsys.readouterr()
    logs = caplog.text + out + err
    assert "sts.AssumeRole" in logs  # DEBUG records were really captured ...
    # ... and botocore's loggers carry no filter of ours once the STS calls are over.
    assert [logging.getLogger(name).filters for name in ("botocore.endpoint", "botocore.auth")] == [[], []]
    assert "retries in all" in logs  # ... and so were the bulk calls' retry summaries
    for secret in (server.account.secret_access_key, role.secret_key, role.token, "Authorization", "Signature="):
        assert secret not in logs
    assert role.secret_key not in repr(hook)


def test_tls_verify_setting_is_honoured_by_both_clients(
    start_server: Callable[..., LocalCrowdServer], make_hook: Callable[..., ImageContainsHook]
) -> None:
    server = start_server(tls=True, workforce_size=0)
    assert server.endpoint_url.startswith("https://")
    trusted = make_hook(server)  # verify = the server's self-signed certificate
    trusted.put_task("image-contains-test", "tls-1", image_input(1))
    assert asyncio.run(trusted.aget_tasks("image-contains-test", ["tls-1"]))["tls-1"]["taskName"] == "tls-1"
    unchecked = make_hook(server, {"extra": {"verify": False}})
    assert unchecked.get_task("image-contains-test", "tls-1")["taskName"] == "tls-1"
    assert asyncio.run(unchecked.aget_task("image-contains-test", "tls-1"))["taskName"] == "tls-1"
    default_bundle = make_hook(server, {"extra": {"verify": None}}, max_attempts=1)  # certifi: no such CA
    with pytest.raises(ServiceError, match="SSLError"):
        default_bundle.get_task("image-contains-test", "tls-1")
    with pytest.raises(ServiceError, match="Certificate"):
        asyncio.run(default_bundle.aget_task("image-contains-test", "tls-1"))


def test_async_calls_build_the_tls_context_off_the_loop_once_and_reuse_connections_across_calls(
    start_server: Callable[..., LocalCrowdServer],
    make_hook: Callable[..., ImageContainsHook],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_imagecontains.hooks import base_crowd

    server = start_server(tls=True, workforce_size=0)
    names = [f"reuse-{i}" for i in range(8)]
    make_hook(server).put_tasks("image-contains-test", {name: image_input(i) for i, name in enumerate(names)})
    built_on_loop: list[bool] = []
    handshakes: list[int] = []
    create_default_context = ssl.create_default_context

    def recording_create_default_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        try:
            asyncio.get_running_loop()
            built_on_loop.append(True)
        except RuntimeError:
            built_on_loop.append(False)
        context = create_default_context(*args, **kwargs)
        wrap_bio = context.wrap_bio

        def counting_wrap_bio(*bio_args: Any, **bio_kwargs: Any) -> ssl.SSLObject:
            handshakes.append(1)  # asyncio wraps one BIO per TLS connection
            return wrap_bio(*bio_args, **bio_kwargs)

        context.wrap_bio = counting_wrap_bio  # type: ignore[method-assign]
        return context

    monkeypatch.setattr(ssl, "create_default_context", recording_create_default_context)
    base_crowd.ssl_context_for.cache_clear()
    first, second = make_hook(server, max_concurrency=2), make_hook(server, max_concurrency=2)

    async def three_rounds_each() -> None:
        async with first.reusing_connections(), second.reusing_connections():
            for _ in range(3):
                assert len(await first.aget_tasks("image-contains-test", names)) == len(names)
                assert len(await second.aget_tasks("image-contains-test", names)) == len(names)
            [shared] = base_crowd._loop_sessions[asyncio.get_running_loop()].values()
            assert shared.users == 2
        assert base_crowd._loop_sessions[asyncio.get_running_loop()] == {}  # closed when the last hook left
        assert shared.session.closed

    asyncio.run(three_rounds_each())
    assert built_on_loop == [False]  # one TLS context for the process, built in a thread
    assert 1 <= len(handshakes) <= 2  # 48 reads over at most max_concurrency connections, kept across calls
    base_crowd.ssl_context_for.cache_clear()


def test_a_refused_connection_is_named_with_the_endpoint_sync_and_async(monkeypatch) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    connection = {"conn_type": "imagecontains", "login": "AKIAX", "password": "secret"}
    connection["extra"] = {"endpoint_url": endpoint, "account_id": "123456789012"}
    monkeypatch.setenv("AIRFLOW_CONN_IMAGECONTAINS_DEFAULT", json.dumps(connection))
    hook = ImageContainsHook(max_attempts=2, retry_base_delay=0.001, max_retry_delay=0.01)

    with pytest.raises(EndpointUnreachableError, match=f"connection refused by {endpoint}"):
        hook.get_task("image-contains-test", "t1")
    with pytest.raises(EndpointUnreachableError, match=f"connection refused by {endpoint}"):
        asyncio.run(hook.aget_task("image-contains-test", "t1"))
