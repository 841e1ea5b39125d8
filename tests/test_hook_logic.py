"""ImageContainsHook without the crowd server: connection parsing, retry policy, response checks, and its
behaviour against a scripted HTTP server that answers what the real service might (odd bodies, 403, 409, ...)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from airflow.providers_manager import ProvidersManager
from airflow.sdk import Connection
from loopback import LoopbackServer
from tenacity import RetryCallState, Retrying

from airflow_provider_imagecontains import get_provider_info
from airflow_provider_imagecontains.exceptions import (
    AccessDeniedError,
    BulkTaskError,
    FunctionNotFoundError,
    InvalidTaskError,
    ServiceError,
    TaskInProgressError,
    TaskNameConflictError,
    TaskNotFoundError,
    ThrottledError,
)
from airflow_provider_imagecontains.hooks import imagecontains as hook_module
from airflow_provider_imagecontains.hooks.base_crowd import (
    WaitFullJitterOrRetryAfter,
    parse_retry_after,
    task_document_problem,
)
from airflow_provider_imagecontains.hooks.credentials import DEFAULT_ENDPOINT_URL, CrowdConnectionConfig
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook

ACCOUNT_ID = "123456789012"
SECRET = "scripted-secret-access-key-0123456789"
TOKEN = "scripted-session-token-abcdefghijklmnop"
GOOD_INPUT = {"image": {"url": "https://example.com/cat.jpg"}, "target": {"label": "cat"}}


def task_document(name: str, state: str = "processing", **extra: Any) -> dict[str, Any]:
    return {"taskName": name, "input": GOOD_INPUT, "state": state, "result": None, "problemDetails": None, **extra}


class ScriptedServer(LoopbackServer):
    """A loopback HTTP server answering each request with the next scripted (status, headers, body)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.default: tuple[int, dict[str, str], bytes] = (500, {}, b"no script")
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        super().__init__(self._next_answer)

    def _next_answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append((method, path, headers))
            return self.script.pop(0) if self.script else self.default

    def add(self, status: int, body: Any = b"", headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.script.append((status, headers or {"Content-Type": "application/json"}, raw))


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def hook(scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ImageContainsHook]:
    connection = {
        "conn_type": "imagecontains",
        "login": "AKIASCRIPTED",
        "password": SECRET,
        "extra": {"endpoint_url": scripted.endpoint_url, "account_id": ACCOUNT_ID, "aws_session_token": TOKEN},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SCRIPTED", json.dumps(connection))
    scripted_hook = ImageContainsHook("scripted", max_attempts=3, retry_base_delay=0.001, max_retry_delay=0.01)
    yield scripted_hook
    scripted_hook.close()


# ---- connection ----


def make_connection(**kwargs: Any) -> Connection:
    extra = kwargs.pop("extra", {})
    return Connection(conn_id="c", conn_type="imagecontains", extra=json.dumps(extra), **kwargs)


def test_config_defaults_to_the_production_endpoint_and_boto_default_chain() -> None:
    config = CrowdConnectionConfig.from_connection(make_connection())
    assert config == CrowdConnectionConfig()
    assert config.endpoint_url == DEFAULT_ENDPOINT_URL
    assert config.region_name == "us-east-1"
    assert config.sts_endpoint_url is None
    assert config.access_key_id is None


def test_config_sts_endpoint_is_its_own_never_the_crowd_endpoint() -> None:
    config = CrowdConnectionConfig.from_connection(make_connection(extra={"endpoint_url": "http://127.0.0.1:9/"}))
    assert (config.endpoint_url, config.sts_endpoint_url) == ("http://127.0.0.1:9", None)
    config = CrowdConnectionConfig.from_connection(
        make_connection(
            extra={"endpoint_url": "http://127.0.0.1:9", "service_config": {"sts": {"endpoint_url": "http://sts:8"}}}
        )
    )
    assert config.sts_endpoint_url == "http://sts:8"


def test_config_reads_keys_and_extras_and_hides_secrets_from_repr() -> None:
    connection = make_connection(
        login="AKIAEXAMPLE",
        password=SECRET,
        extra={"region_name": "eu-west-1", "aws_session_token": TOKEN, "role_arn": "arn:aws:iam::1:role/r"},
    )
    config = CrowdConnectionConfig.from_connection(connection)
    assert (config.access_key_id, config.secret_access_key, config.session_token) == ("AKIAEXAMPLE", SECRET, TOKEN)
    assert (config.region_name, config.role_arn) == ("eu-west-1", "arn:aws:iam::1:role/r")
    assert SECRET not in repr(config)
    assert TOKEN not in repr(config)


@pytest.mark.parametrize(
    ("connection", "named"),
    [
        (make_connection(extra={"account_id": "12345"}), "'12345'"),
        (make_connection(extra={"endpoint_url": "crowd.example.com"}), "'crowd.example.com'"),
        (make_connection(login="AKIAONLY"), "secret access key"),
    ],
)
def test_config_rejects_bad_settings_naming_them(connection: Connection, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        CrowdConnectionConfig.from_connection(connection)


def test_provider_registers_the_connection_type_with_valid_ui_fields() -> None:
    (connection_type,) = get_provider_info()["connection-types"]
    assert connection_type["connection-type"] == "imagecontains"
    assert connection_type["hook-class-name"].endswith("ImageContainsHook")
    assert set(connection_type["conn-fields"]) == {
        "region_name",
        "aws_session_token",
        "profile_name",
        "role_arn",
        "endpoint_url",
        "account_id",
    }
    assert connection_type["conn-fields"]["aws_session_token"]["schema"]["format"] == "password"
    manager = ProvidersManager()
    manager._customized_form_fields_schema_validator.validate(
        {
            "hidden_fields": connection_type["ui-field-behaviour"]["hidden-fields"],
            "relabeling": connection_type["ui-field-behaviour"]["relabeling"],
            "placeholders": connection_type["ui-field-behaviour"]["placeholders"],
        }
    )


# ---- retry policy ----


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("soon", None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    in_a_minute = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)
    assert 55 <= (parse_retry_after(in_a_minute) or 0) <= 60
    assert parse_retry_after(format_datetime(datetime(2000, 1, 1, tzinfo=timezone.utc), usegmt=True)) == 0.0


class _Throttled(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__("throttled")
        self.retry_after = retry_after


def _wait_after(attempt: int, error: Exception, wait: WaitFullJitterOrRetryAfter) -> float:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return wait(state)


def test_backoff_is_full_jitter_doubling_and_capped() -> None:
    wait = WaitFullJitterOrRetryAfter(base_delay=1.0, max_delay=5.0)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 5.0)]:
        waits = [_wait_after(attempt, _Throttled(None), wait) for _ in range(200)]
        assert all(0 <= value <= cap for value in waits)
        assert max(waits) > cap * 0.8  # spread over the whole range, not a fixed delay
        assert min(waits) < cap * 0.2


def test_backoff_never_waits_less_than_retry_after_but_stays_capped() -> None:
    wait = WaitFullJitterOrRetryAfter(base_delay=0.01, max_delay=5.0)
    assert all(_wait_after(1, _Throttled(2.0), wait) >= 2.0 for _ in range(50))
    assert _wait_after(1, _Throttled(60.0), wait) == 5.0


# ---- response checks ----


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (task_document("t"), None),
        (task_document("t", "completed", result={"containsTarget": True}), None),
        (task_document("t", "failed", problemDetails={"code": "Expired", "message": "m"}), None),
        ("<html>", "not a JSON object"),
        ({"taskName": "t", "state": "processing"}, "lacks input"),
        (task_document("other"), "about task 'other'"),
        (task_document("t", "done"), "state 'done'"),
        (task_document("t", "completed"), "no result"),
        (task_document("t", "failed"), "no problemDetails"),
    ],
)
def test_task_document_problem(document: Any, problem: str | None) -> None:
    found = task_document_problem(document, "t")
    assert found == problem if problem is None else problem in (found or "")


# ---- against scripted answers ----


def test_hook_repr_shows_no_secret(hook: ImageContainsHook) -> None:
    _ = hook.credentials
    assert SECRET not in repr(hook)
    assert TOKEN not in repr(hook)


def test_bad_input_is_rejected_before_any_request(hook: ImageContainsHook, scripted: ScriptedServer) -> None:
    with pytest.raises(InvalidTaskError, match="'bad name'"):
        hook.put_task("image-contains", "bad name", GOOD_INPUT)
    with pytest.raises(InvalidTaskError, match="ftp://x"):
        hook.put_task("image-contains", "ok", {"image": {"url": "ftp://x"}, "target": {"label": "cat"}})
    with pytest.raises(InvalidTaskError, match=r"'x{65}'"):
        hook.get_task("image-contains", "x" * 65)
    with pytest.raises(InvalidTaskError, match="''"):
        hook.delete_task("", "ok")
    # bulk forms validate everything first: one bad entry means no request at all
    with pytest.raises(InvalidTaskError, match="'no/slash'"):
        hook.put_tasks("image-contains", {"ok": GOOD_INPUT, "no/slash": GOOD_INPUT})
    with pytest.raises(InvalidTaskError, match="'a b'"):
        hook.get_tasks("image-contains", ["fine", "a b"])
    with pytest.raises(InvalidTaskError, match="list of names"):
        hook.get_tasks("image-contains", "fine")
    with pytest.raises(InvalidTaskError, match=r"'odd'.*not JSON"):
        hook.put_tasks("other-function", {"ok": {"x": 1}, "odd": {"x": float("nan")}})
    with pytest.raises(InvalidTaskError, match="'a b'"):
        asyncio.run(anext(hook.aiter_tasks("image-contains", ["fine", "a b"])))
    assert scripted.requests == []


def test_sync_bulk_methods_refuse_to_run_inside_an_event_loop(
    hook: ImageContainsHook, scripted: ScriptedServer
) -> None:
    async def call_sync_bulk_methods() -> None:
        with pytest.raises(RuntimeError, match=r"await hook\.aget_tasks"):
            hook.get_tasks("image-contains", ["t"])
        with pytest.raises(RuntimeError, match=r"await hook\.aput_tasks"):
            hook.put_tasks("image-contains", {"t": GOOD_INPUT})

    asyncio.run(call_sync_bulk_methods())
    assert scripted.requests == []


def read_one(hook: ImageContainsHook, client: str, name: str) -> dict[str, Any]:
    """GET one task through the requests client (single call) or the aiohttp client (async call)."""
    if client == "requests":
        return hook.get_task("image-contains", name)
    return asyncio.run(hook.aget_task("image-contains", name))


@pytest.mark.parametrize("client", ["requests", "aiohttp"])
def test_request_is_signed_for_the_account_url(hook: ImageContainsHook, scripted: ScriptedServer, client: str) -> None:
    scripted.add(200, task_document("t-1"))
    assert read_one(hook, client, "t-1") == task_document("t-1")
    ((method, path, headers),) = scripted.requests
    assert (method, path) == ("GET", f"/{ACCOUNT_ID}/functions/image-contains/tasks/t-1")
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIASCRIPTED/")
    assert "/us-east-1/crowd/aws4_request" in headers["Authorization"]
    assert headers["x-amz-security-token"] == TOKEN


@pytest.mark.parametrize(
    ("method", "status", "body", "error_class", "code"),
    [
        ("PUT", 400, {"code": "InvalidInput", "message": "label too long"}, InvalidTaskError, "InvalidInput"),
        ("PUT", 400, {"code": "TaskAlreadyExists", "message": "x"}, TaskNameConflictError, "TaskAlreadyExists"),
        ("PUT", 400, {"message": "Task exists with a different input"}, TaskNameConflictError, None),
        ("PUT", 409, {}, TaskNameConflictError, None),
        (
            "PUT",
            404,
            {"code": "FunctionNotFound", "message": "no such function"},
            FunctionNotFoundError,
            "FunctionNotFound",
        ),
        (
            "GET",
            404,
            {"code": "TaskNotFound", "message": "Task 't' of function 'f' does not exist."},
            TaskNotFoundError,
            "TaskNotFound",
        ),
        ("GET", 404, b"Not Found", TaskNotFoundError, None),
        (
            "GET",
            403,
            {"__type": "com.amazon#InvalidSignatureException", "Message": "bad sig"},
            AccessDeniedError,
            "InvalidSignatureException",
        ),
        ("GET", 401, b"", AccessDeniedError, None),
        (
            "DELETE",
            409,
            {"code": "TaskInProgress", "message": "still processing"},
            TaskInProgressError,
            "TaskInProgress",
        ),
        (
            "DELETE",
            400,
            {"code": "ValidationException", "message": "Task is processing"},
            TaskInProgressError,
            "ValidationException",
        ),
        ("GET", 418, b"<html>teapot</html>", ServiceError, None),
    ],
)
@pytest.mark.parametrize("client", ["requests", "aiohttp"])
def test_error_answers_map_to_exceptions_that_keep_code_and_message(
    hook: ImageContainsHook,
    scripted: ScriptedServer,
    client: str,
    method: str,
    status: int,
    body: Any,
    error_class: type[Exception],
    code: str | None,
) -> None:
    if client == "aiohttp" and method == "DELETE":
        pytest.skip("deletes are single calls only")

    def bulk_call() -> None:
        try:
            if method == "PUT":
                hook.put_tasks("image-contains", {"t": GOOD_INPUT})
            else:
                hook.get_tasks("image-contains", ["t"])
        except BulkTaskError as bulk:
            raise bulk.errors["t"] from None

    scripted.add(status, body)
    call = {
        ("requests", "PUT"): lambda: hook.put_task("image-contains", "t", GOOD_INPUT),
        ("requests", "GET"): lambda: hook.get_task("image-contains", "t"),
        ("requests", "DELETE"): lambda: hook.delete_task("image-contains", "t"),
        ("aiohttp", "PUT"): bulk_call,
        ("aiohttp", "GET"): bulk_call,
    }[client, method]
    with pytest.raises(error_class) as raised:
        call()
    assert type(raised.value) is error_class
    assert raised.value.status_code == status
    assert raised.value.code == code
    if isinstance(body, dict) and (body.get("message") or body.get("Message")):
        assert (body.get("message") or body.get("Message")) in str(raised.value)
    assert len(scripted.requests) == 1  # client errors are never retried


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Gateway</body></html>", b'{"taskName": "t", "inpu', json.dumps({"taskName": "t"}).encode()],
)
@pytest.mark.parametrize("client", ["requests", "aiohttp"])
def test_success_status_without_a_task_document_is_a_service_error(
    hook: ImageContainsHook, scripted: ScriptedServer, body: bytes, client: str
) -> None:
    scripted.add(200, body)
    with pytest.raises(ServiceError, match="HTTP 200 but"):
        read_one(hook, client, "t")


def test_retries_5xx_and_429_then_succeeds(hook: ImageContainsHook, scripted: ScriptedServer) -> None:
    scripted.add(503, {"code": "ServiceUnavailable"})
    scripted.add(429, {"code": "Throttled"}, {"Retry-After": "0"})
    scripted.add(201, task_document("t"))
    assert hook.put_task("image-contains", "t", GOOD_INPUT)["taskName"] == "t"
    assert [method for method, _, _ in scripted.requests] == ["PUT"] * 3


@pytest.mark.parametrize("client", ["requests", "aiohttp"])
def test_retry_budget_is_bounded(hook: ImageContainsHook, scripted: ScriptedServer, client: str) -> None:
    scripted.default = (429, {"Content-Type": "application/json"}, b'{"code": "Throttled", "message": "slow down"}')
    with pytest.raises(ThrottledError, match="3 attempt") as raised:
        read_one(hook, client, "t")
    assert raised.value.code == "Throttled"
    assert len(scripted.requests) == 3
    scripted.requests.clear()
    scripted.default = (502, {}, b"<html>Bad Gateway</html>")
    with pytest.raises(ServiceError, match="HTTP 502"):
        read_one(hook, client, "t")
    assert len(scripted.requests) == 3


def captured_logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything logged: stdlib records and Airflow's structlog output (printed to the console)."""
    out, err = capsys.readouterr()
    return caplog.text + out + err


@pytest.mark.parametrize("client", ["requests", "aiohttp"])
def test_retry_after_is_honoured(
    hook: ImageContainsHook,
    scripted: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    client: str,
) -> None:
    hook.max_retry_delay = 5.0
    scripted.add(429, {"code": "Throttled"}, {"Retry-After": "0.3", "Content-Type": "application/json"})
    scripted.add(200, task_document("t"))
    with caplog.at_level(logging.INFO):
        read_one(hook, client, "t")
    # A set, by message (which names the attempt): Airflow 3.0 shows each record in caplog and on its console too.
    (retry_line,) = {
        line[line.index("Crowd API call failed") :]
        for line in captured_logs(caplog, capsys).splitlines()
        if "retrying in" in line
    }
    assert float(retry_line.split("retrying in ", 1)[1].split("s.", 1)[0]) >= 0.3


def test_a_bulk_call_logs_one_retry_summary_not_a_line_per_retry(
    hook: ImageContainsHook,
    scripted: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hook.max_concurrency = 1  # one request at a time, so the script is consumed in submission order
    scripted.add(429, {"code": "Throttled"}, {"Retry-After": "0.01", "Content-Type": "application/json"})
    scripted.add(200, task_document("a"))
    scripted.add(503, {"code": "ServiceUnavailable"})
    scripted.add(200, task_document("b"))
    scripted.add(200, task_document("c"))
    with caplog.at_level(logging.INFO):
        assert set(hook.get_tasks("image-contains", ["a", "b", "c"])) == {"a", "b", "c"}
    lines = captured_logs(caplog, capsys).splitlines()
    assert not [line for line in lines if "retrying in" in line]  # each retry is at DEBUG
    (summary,) = [line for line in lines if "retries in all" in line]
    assert "GET of 3 tasks (image-contains): 2 calls were retried, 2 retries in all" in summary
    assert "longest Retry-After honoured: 0.01s" in summary


def test_bulk_failure_keeps_successes_and_errors(hook: ImageContainsHook, scripted: ScriptedServer) -> None:
    hook.max_concurrency = 1  # one request at a time, so the script is consumed in submission order
    scripted.add(200, task_document("a"))
    scripted.add(404, {"code": "TaskNotFound", "message": "gone"})
    scripted.add(200, task_document("c"))
    with pytest.raises(BulkTaskError, match="1 of 3") as raised:
        hook.get_tasks("image-contains", ["a", "b", "c"])
    assert set(raised.value.results) == {"a", "c"}
    assert isinstance(raised.value.errors["b"], TaskNotFoundError)


def test_connection_test_reads_a_missing_task_and_never_creates_one(
    hook: ImageContainsHook, scripted: ScriptedServer
) -> None:
    scripted.add(404, {"code": "TaskNotFound", "message": "no"})
    assert hook.test_connection()[0] is True
    scripted.add(403, {"code": "InvalidClientTokenId", "message": "unknown key"})
    ok, message = hook.test_connection()
    assert ok is False
    assert "InvalidClientTokenId" in message
    assert [method for method, _, _ in scripted.requests] == ["GET", "GET"]


def test_importing_the_hook_leaves_botocores_loggers_alone() -> None:
    assert ImageContainsHook  # imported at the top of this module
    for name in ("botocore.endpoint", "botocore.auth", "botocore.parsers"):
        assert logging.getLogger(name).filters == [], name


def test_connection_test_makes_one_attempt_whatever_the_hooks_budget(
    hook: ImageContainsHook, scripted: ScriptedServer
) -> None:
    scripted.default = (503, {"Content-Type": "application/json"}, b'{"code": "ServiceUnavailable"}')
    ok, message = hook.test_connection()
    assert ok is False and "ServiceError" in message and "ServiceUnavailable" in message
    assert len(scripted.requests) == 1  # the hook itself would try max_attempts=3 times


def test_connection_test_gives_up_within_its_deadline_on_a_silent_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts connections; nothing ever answers
    connection = {
        "conn_type": "imagecontains",
        "login": "AKIASILENT",
        "password": SECRET,
        "extra": {"endpoint_url": f"http://127.0.0.1:{silent.getsockname()[1]}", "account_id": ACCOUNT_ID},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SILENT", json.dumps(connection))
    monkeypatch.setattr(hook_module, "TEST_CONNECTION_TIMEOUT", 1.0)
    outcome: list[tuple[bool, str]] = []
    tester = threading.Thread(target=lambda: outcome.append(ImageContainsHook("silent").test_connection()), daemon=True)
    started = time.monotonic()
    tester.start()
    tester.join(timeout=15)  # the hook's own budget (8 attempts of up to 60 s) would take minutes
    elapsed = time.monotonic() - started
    silent.close()
    assert outcome, "test_connection did not return within 15 s"
    assert outcome[0][0] is False and "No answer within 1 s" in outcome[0][1]
    assert elapsed < 5


@pytest.mark.parametrize("client", ["requests", "aiohttp"])
def test_secrets_never_reach_logs_or_errors(
    hook: ImageContainsHook,
    scripted: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    client: str,
) -> None:
    scripted.add(503, b"")
    scripted.add(200, task_document("t"))
    scripted.add(403, {"code": "SignatureDoesNotMatch", "message": "no"})
    with caplog.at_level(logging.DEBUG):
        read_one(hook, client, "t")
        with pytest.raises(AccessDeniedError) as raised:
            read_one(hook, client, "t")
    authorization = scripted.requests[0][2]["Authorization"]
    signature = authorization.rsplit("Signature=", 1)[1]
    logs = captured_logs(caplog, capsys)
    if client == "requests":
        assert "GET /123456789012/functions/image-contains/tasks/t" in logs  # urllib3's DEBUG lines were captured
    assert "retrying in" in logs  # and the hook's own log
    text = logs + str(raised.value) + repr(raised.value)
    for secret in (SECRET, TOKEN, signature, "Authorization"):
        assert secret not in text


@pytest.mark.parametrize("where", ["connection", "environment"])
def test_proxies_from_the_connection_or_the_environment_carry_both_clients(
    scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    endpoint = "http://crowd.example.invalid"  # reachable only through the proxy (the scripted server)
    extra: dict[str, Any] = {"endpoint_url": endpoint, "account_id": ACCOUNT_ID}
    if where == "connection":
        extra["proxies"] = {"http": scripted.endpoint_url}
    else:
        monkeypatch.setenv("HTTP_PROXY", scripted.endpoint_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
    connection = {"conn_type": "imagecontains", "login": "AKIAPROXY", "password": SECRET, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_PROXIED", json.dumps(connection))
    hook = ImageContainsHook("proxied", max_attempts=1)
    scripted.add(200, task_document("via-proxy"))
    scripted.add(200, task_document("via-proxy"))
    assert hook.get_task("image-contains-test", "via-proxy")["taskName"] == "via-proxy"
    assert asyncio.run(hook.aget_task("image-contains-test", "via-proxy"))["taskName"] == "via-proxy"
    assert [path for _, path, _ in scripted.requests] == [
        f"{endpoint}/{ACCOUNT_ID}/functions/image-contains-test/tasks/via-proxy"
    ] * 2

    if where == "environment":  # trust_env=false: the environment's proxy is not used
        connection["extra"] = {**extra, "trust_env": False}
        monkeypatch.setenv("AIRFLOW_CONN_UNPROXIED", json.dumps(connection))
        with pytest.raises(ServiceError):
            ImageContainsHook("unproxied", max_attempts=1).get_task("image-contains-test", "via-proxy")
        assert len(scripted.requests) == 2


def test_connection_verify_and_proxies_are_checked() -> None:
    config = CrowdConnectionConfig.from_connection(
        make_connection(extra={"verify": "False", "proxies": {"https": "http://user:pw@proxy:3128"}})
    )
    assert config.verify is False and config.proxies == {"https": "http://user:pw@proxy:3128"}
    assert "pw@proxy" not in repr(config)
    assert (
        CrowdConnectionConfig.from_connection(make_connection(extra={"verify": "/etc/ca.pem"})).verify == "/etc/ca.pem"
    )
    with pytest.raises(ValueError, match="Invalid verify"):
        CrowdConnectionConfig.from_connection(make_connection(extra={"verify": 3}))
    with pytest.raises(ValueError, match="Invalid proxies"):
        CrowdConnectionConfig.from_connection(make_connection(extra={"proxies": "http://proxy:3128"}))


@pytest.mark.parametrize(("given", "expected"), [("false", False), (" False ", False), ("true", True), (False, False)])
def test_trust_env_given_as_text_by_a_form_is_read_as_a_boolean(given: Any, expected: bool) -> None:
    assert CrowdConnectionConfig.from_connection(make_connection(extra={"trust_env": given})).trust_env is expected


def test_a_trust_env_that_is_not_a_boolean_is_refused() -> None:
    with pytest.raises(ValueError, match="Invalid trust_env 'no'"):
        CrowdConnectionConfig.from_connection(make_connection(extra={"trust_env": "no"}))


def test_provider_info_lists_only_modules_that_hold_hooks() -> None:
    import importlib
    import inspect

    from airflow.providers.common.compat.sdk import BaseHook

    for entry in get_provider_info()["hooks"]:
        for name in entry["python-modules"]:
            module = importlib.import_module(name)
            hooks = [
                value
                for value in vars(module).values()
                if inspect.isclass(value) and issubclass(value, BaseHook) and value.__module__ == name
            ]
            assert hooks, f"{name} holds no hook"
