"""Nobody let in, nothing leaked.

The server's refusals of unsigned requests, wrong keys, tampered bodies, stale dates and other accounts'
paths are tested one by one in ``test_server.py`` (``test_unsigned_request_is_403``,
``test_signature_failures_are_403``, ``test_requests_aws4auth_with_payload_hash_is_accepted_and_a_tampered_body_is_not``,
``test_tampered_body_without_payload_hash_header_is_refused``, ``test_an_account_cannot_touch_another_accounts_tasks``).
Here: replays of a request the hook really signed, secrets searched in everything a run leaves behind,
and the loopback default.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from typing import Any

import boto3
import pytest
import requests
import uvicorn
from airflow.providers.common.compat.sdk import AirflowException
from airflow.sdk import DAG
from loopback import LoopbackServer

from airflow_provider_imagecontains.exceptions import AccessDeniedError, CrowdApiError
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor
from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger
from imagecontains_gateway import __main__ as server_cli
from imagecontains_gateway.app import build_uvicorn_server, is_loopback
from imagecontains_gateway.config import Account, ServerConfig

INPUT = {"image": {"url": "https://img.example.com/secure/1.jpg"}, "target": {"label": "person"}}


class CapturingServer(LoopbackServer):
    """Records the requests the hook signs (method, path, headers, body) and answers a valid task document."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        super().__init__(self._capture)

    def _capture(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((method, path, headers, body))
        name = path.rsplit("/", 1)[1]
        answer = json.dumps({"taskName": name, "input": INPUT, "state": "processing"}).encode()
        return 201 if method == "PUT" else 200, {"Content-Type": "application/json"}, answer


def test_requests_the_hook_signed_cannot_be_replayed_elsewhere_or_late(crowd_server, monkeypatch) -> None:
    server = crowd_server(workforce_size=0, clock_skew_seconds=2)
    capture = CapturingServer()
    connection = server.airflow_connection()
    connection["extra"]["endpoint_url"] = capture.endpoint_url
    monkeypatch.setenv("AIRFLOW_CONN_CAPTURED", json.dumps(connection))
    hook = ImageContainsHook("captured")
    try:
        hook.put_task("image-contains", "replayed", INPUT)
    finally:
        hook.close()
        capture.close()
    ((method, path, headers, body),) = capture.requests
    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}

    def replay(path: str = path, body: bytes = body, method: str = method) -> requests.Response:
        return requests.request(method, server.endpoint_url + path, headers=headers, data=body, timeout=10)

    other = {**INPUT, "target": {"label": "cat"}}
    refusals = {
        "tampered body": replay(body=json.dumps({"input": other}).encode()),
        "other task name": replay(path=path.replace("replayed", "replayed-2")),
        "other method": replay(method="DELETE", body=b""),
        "other account's path": replay(path=path.replace(server.account.account_id, "210987654321")),
    }
    for what, response in refusals.items():
        assert response.status_code == 403, what
        assert response.json()["code"] in ("InvalidSignature", "AccessDenied"), what
    assert replay().status_code == 201  # the genuine request, within the allowed clock skew, works
    time.sleep(3)  # the captured x-amz-date is now older than the server's skew window
    stale = replay()
    assert stale.status_code == 403 and stale.json()["code"] == "RequestExpired"
    assert [t["task_name"] for t in server.tasks()] == ["replayed"]


def test_no_secret_in_logs_errors_reprs_templates_or_xcom(crowd_server, monkeypatch, caplog, capsys) -> None:
    server = crowd_server(error_rate=0.2, test_function_seconds=0.2, seed=2)
    account = server.account
    sts = boto3.client(
        "sts",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=account.access_key_id,
        aws_secret_access_key=account.secret_access_key,
    )
    role_arn = f"arn:aws:iam::{account.account_id}:role/pipeline"
    temporary = sts.assume_role(RoleArn=role_arn, RoleSessionName="test")["Credentials"]
    with_token = server.airflow_connection()
    with_token.update(login=temporary["AccessKeyId"], password=temporary["SecretAccessKey"])
    with_token["extra"] = {**with_token["extra"], "aws_session_token": temporary["SessionToken"], "account_id": None}
    with_role = server.airflow_connection()
    with_role["extra"] = {**with_role["extra"], "role_arn": role_arn}
    wrong_key = {**server.airflow_connection(), "password": "wrong-" + account.secret_access_key}
    for conn_id, connection in (("with_token", with_token), ("with_role", with_role), ("wrong_key", wrong_key)):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))

    outputs: list[str] = []
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    with DAG("security", schedule=None, start_date=datetime(2026, 1, 1)):
        submit = ImageContainsOperator(
            task_id="submit",
            images=["https://img.example.com/{{ params.camera }}/1.jpg", "https://img.example.com/b.jpg"],
            target_label="person",
            function_name="image-contains-test",
            imagecontains_conn_id="with_token",
            params={"camera": "gate"},
        )
    submit.render_template_fields({"params": {"camera": "gate"}})
    handle = submit.execute({})
    names = [task["task_name"] for task in handle["tasks"]]
    watcher = ImageContainsTrigger(
        task_names=names, function_name="image-contains-test", imagecontains_conn_id="with_role", poll_interval=0.1
    )
    event = asyncio.run(_first_event(watcher))
    with DAG("security_sensor", schedule=None, start_date=datetime(2026, 1, 1)):
        sensor = ImageContainsSensor(task_id="wait", submission={**handle, "imagecontains_conn_id": "with_role"})
    records = sensor.execute_complete({}, event)
    errors: list[BaseException] = []
    for conn_id in ("wrong_key", "with_token"):
        hook = ImageContainsHook(conn_id, max_attempts=1)
        try:
            hook.get_task("image-contains-test", "x" if conn_id == "wrong_key" else "missing")
        except CrowdApiError as err:
            errors.append(err)
        outputs.append(repr(hook) + repr(hook.config))
        hook.close()
    with pytest.raises(AirflowException) as failed:
        sensor.execute_complete({}, {"status": "error", "message": errors[0].message})
    errors.append(failed.value)
    assert isinstance(errors[0], AccessDeniedError)

    out, err = capsys.readouterr()
    outputs += [caplog.text, out, err, json.dumps(handle), json.dumps(records), json.dumps(event)]
    outputs += [str(e) + repr(e) for e in errors]
    outputs += [repr(submit), repr(sensor), repr(watcher), json.dumps(watcher.serialize())]
    outputs += [repr(getattr(submit, field)) for field in submit.template_fields]
    text = "\n".join(outputs)
    assert "gate/1.jpg" in text and "functions/image-contains-test" in text  # the captures really hold the run
    role = ImageContainsHook("with_role").credentials.get_frozen_credentials()
    for secret in (
        account.secret_access_key,
        temporary["SecretAccessKey"],
        temporary["SessionToken"],
        role.secret_key,
        role.token,
        "Authorization",
        "Signature=",
        "X-Amz-Security-Token",
    ):
        assert secret not in text, f"{secret[:12]}... leaked"


async def _first_event(watcher: ImageContainsTrigger) -> dict[str, Any]:
    async for event in watcher.run():
        return event.payload
    raise AssertionError("no event")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        *[("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True)],
        *[("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("crowd.example.com", False)],
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_server_defaults_to_loopback_and_says_so(crowd_server, capsys) -> None:
    assert server_cli.parse_args([]).host == "127.0.0.1"
    with pytest.raises(SystemExit):
        server_cli.parse_args(["--help"])
    assert "default: loopback only" in capsys.readouterr().out
    assert crowd_server().endpoint_url.startswith("http://127.0.0.1:")


def test_server_refuses_a_non_loopback_address_with_the_demo_credentials(monkeypatch, tmp_path) -> None:
    def never_bind(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the server tried to start")

    monkeypatch.setattr(uvicorn.Server, "run", never_bind)
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(SystemExit, match="demo credentials") as refused:
            server_cli.main(["--host", host, "--db", str(tmp_path / "crowd.db")])
        assert "demo-secret" not in str(refused.value)
    # With an account of its own the server may be exposed (the operator's choice): it is built, not bound here.
    own = ServerConfig(accounts=(Account("111122223333", "AKIAOWNKEY0000000001", "own-secret"),))
    uvicorn_server, _ = build_uvicorn_server(own, str(tmp_path / "own.db"), host="0.0.0.0")
    assert uvicorn_server.config.host == "0.0.0.0"
