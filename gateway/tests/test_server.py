"""The local Crowd API server, driven over loopback with real SigV4-signed requests."""

from __future__ import annotations

import datetime
import json
import logging
import time

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from requests_aws4auth import AWS4Auth

from imagecontains_gateway.adjudication import ClassPrior, CrowdPrior, adjudicate
from imagecontains_gateway.config import Account

OTHER = Account("210987654321", "AKIAOTHERACCOUNT0001", "other-secret")
INPUT = {"image": {"url": "https://images.example.com/street/cam1.jpg"}, "target": {"label": "person"}}


def signed(server, method, path, body=None, *, account=None, secret=None, token=None, when=None, raw_body=None):
    """Send a request signed with botocore's SigV4 (as boto3 would), returning the response."""
    account = account or server.account
    data = raw_body if raw_body is not None else (b"" if body is None else json.dumps(body).encode())
    request = AWSRequest(method=method, url=server.endpoint_url + path, data=data)
    credentials = Credentials(account.access_key_id, secret or account.secret_access_key, token)
    signer = SigV4Auth(credentials, "crowd", "us-east-1")
    if when is None:
        signer.add_auth(request)
    else:  # sign as if at another time
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        request.headers["X-Amz-Date"] = request.context["timestamp"]
        if token:
            request.headers["X-Amz-Security-Token"] = token
        canonical = signer.canonical_request(request)
        signature = signer.signature(signer.string_to_sign(request, canonical), request)
        request.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
            f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))}, Signature={signature}"
        )
    prepared = request.prepare()
    return requests.request(method, prepared.url, headers=dict(prepared.headers), data=prepared.body, timeout=10)


def task_path(server, name, function="image-contains", account=None):
    return f"/{(account or server.account).account_id}/functions/{function}/tasks/{name}"


def wait_until_finished(server, name, function="image-contains", timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = signed(server, "GET", task_path(server, name, function)).json()
        if document["state"] != "processing":
            return document
        time.sleep(0.02)
    raise AssertionError(f"task {name} still processing after {timeout}s")


# The contract table: PUT


def test_put_creates_then_repeats_idempotently(crowd_server):
    server = crowd_server(workforce_size=0)
    created = signed(server, "PUT", task_path(server, "t1"), {"input": INPUT})
    assert created.status_code == 201
    assert created.json() == {
        "taskName": "t1",
        "input": INPUT,
        "state": "processing",
        "result": None,
        "problemDetails": None,
    }
    again = signed(server, "PUT", task_path(server, "t1"), {"input": INPUT})
    assert again.status_code == 200
    assert again.json() == created.json()
    assert len(server.tasks()) == 1


def test_put_same_name_with_other_input_is_refused(crowd_server):
    server = crowd_server(workforce_size=0)
    signed(server, "PUT", task_path(server, "t1"), {"input": INPUT})
    other = {"image": {"url": "https://images.example.com/other.jpg"}, "target": {"label": "person"}}
    response = signed(server, "PUT", task_path(server, "t1"), {"input": other})
    assert response.status_code == 400
    assert response.json()["code"] == "TaskAlreadyExists"
    assert server.tasks()[0]["input"] == INPUT


@pytest.mark.parametrize(
    ("raw_body", "name", "named_in_message"),
    [
        (b'{"input": {', "t1", "not valid JSON"),
        (b"[1, 2]", "t1", "list"),
        (json.dumps({"inputs": INPUT}).encode(), "t1", "inputs"),
        (json.dumps({"input": {"image": {"url": "https://a.example/x.jpg"}}}).encode(), "t1", "'target'"),
        (json.dumps({"input": {"image": "https://a.example/x.jpg", "target": {"label": "x"}}}).encode(), "t1", "image"),
        (json.dumps({"input": {**INPUT, "image": {"url": "ftp://a.example/x.jpg"}}}).encode(), "t1", "ftp://"),
        (json.dumps({"input": {**INPUT, "image": {"url": "https://a.example/" + "x" * 400}}}).encode(), "t1", "400"),
        (json.dumps({"input": {**INPUT, "target": {"label": 7}}}).encode(), "t1", "7"),
        (json.dumps({"input": INPUT}).encode(), "x" * 65, "x" * 65),
        (json.dumps({"input": INPUT}).encode(), "bad%20name", "bad name"),
    ],
)
def test_put_bad_input_is_400_naming_the_problem_and_stores_nothing(crowd_server, raw_body, name, named_in_message):
    server = crowd_server(workforce_size=0)
    response = signed(server, "PUT", task_path(server, name), raw_body=raw_body)
    assert response.status_code == 400
    assert response.json()["code"] == "InvalidInput"
    assert named_in_message in response.json()["message"]
    assert server.tasks() == []


def test_put_unknown_function_is_404(crowd_server):
    server = crowd_server()
    response = signed(server, "PUT", task_path(server, "t1", function="image-sorting"), {"input": INPUT})
    assert response.status_code == 404
    assert response.json()["code"] == "FunctionNotFound"
    assert "image-sorting" in response.json()["message"]


def test_oversized_body_is_413(crowd_server):
    server = crowd_server(max_body_bytes=1000)
    body = {"input": {**INPUT, "target": {"label": "x" * 2000}}}
    response = signed(server, "PUT", task_path(server, "t1"), body)
    assert response.status_code == 413
    assert response.json()["code"] == "PayloadTooLarge"
    assert server.tasks() == []


def test_tasks_in_progress_are_capped_per_account(crowd_server):
    server = crowd_server(workforce_size=0, max_tasks_in_progress=1, retry_after_seconds=7)
    assert signed(server, "PUT", task_path(server, "t1"), {"input": INPUT}).status_code == 201
    response = signed(server, "PUT", task_path(server, "t2"), {"input": INPUT})
    assert response.status_code == 429
    assert response.json()["code"] == "LimitExceeded"
    assert response.headers["Retry-After"] == "7"


# GET and DELETE


def test_get_unknown_task_is_404(crowd_server):
    server = crowd_server()
    response = signed(server, "GET", task_path(server, "nope"))
    assert response.status_code == 404
    assert response.json()["code"] == "TaskNotFound"


def test_delete_rules(crowd_server):
    server = crowd_server(workforce_size=0, task_deadline_seconds=0.3)
    signed(server, "PUT", task_path(server, "t1"), {"input": INPUT})
    refused = signed(server, "DELETE", task_path(server, "t1"))
    assert refused.status_code == 409
    assert refused.json()["code"] == "TaskInProgress"
    assert wait_until_finished(server, "t1")["problemDetails"]["code"] == "Expired"
    deleted = signed(server, "DELETE", task_path(server, "t1"))
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert signed(server, "DELETE", task_path(server, "t1")).status_code == 404
    assert signed(server, "GET", task_path(server, "t1")).status_code == 404
    # The name is free again, even for another input.
    other = {"image": {"url": "https://images.example.com/other.jpg"}, "target": {"label": "car"}}
    assert signed(server, "PUT", task_path(server, "t1"), {"input": other}).status_code == 201


def test_test_function_shows_processing_first_then_a_mock_result(crowd_server):
    server = crowd_server(workforce_size=0)
    path = task_path(server, "t1", function="image-contains-test")
    assert signed(server, "PUT", path, {"input": INPUT}).status_code == 201
    first = signed(server, "GET", path).json()
    assert first["state"] == "processing"
    second = signed(server, "GET", path).json()
    assert second["state"] == "completed"
    assert isinstance(second["result"]["containsTarget"], bool)
    assert server.tasks()[0]["answers"] == []


# Workforce and adjudication


def test_production_task_completes_with_the_answer_key_truth(crowd_server, tmp_path):
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"images": {"cam1.jpg": ["Person", "car"], "https://x.example/empty.jpg": []}}))
    server = crowd_server(answer_key_path=str(key), worker_accuracy=1.0)
    signed(server, "PUT", task_path(server, "yes"), {"input": INPUT})
    no_input = {"image": {"url": "https://x.example/empty.jpg"}, "target": {"label": "person"}}
    signed(server, "PUT", task_path(server, "no"), {"input": no_input})
    results = {name: wait_until_finished(server, name)["result"] for name in ("yes", "no")}
    assert (results["yes"]["containsTarget"], results["no"]["containsTarget"]) == (True, False)
    answers = {t["task_name"]: t["answers"] for t in server.tasks()}
    for name, result in results.items():  # the votes used, and the posterior of the answer
        assert result["answers"] == len(answers[name]) and server.config.confidence <= result["confidence"] < 1
    assert all(answer for _, answer in answers["yes"])
    # Answers come from distinct workers, one at a time, and stop as soon as the adjudicator is confident.
    assert len({worker for worker, _ in answers["yes"]}) == len(answers["yes"]) >= 2
    config = server.config
    more = adjudicate(
        answers["yes"][:-1],
        {},
        confidence=config.confidence,
        max_answers=99,
        prior=CrowdPrior(config.prior_worker_accuracy, config.prior_worker_accuracy),
        class_prior=ClassPrior(),
    )
    assert more.needs_more_answers


def test_unconfident_task_fails_inconclusive_at_the_answer_cap(crowd_server, tmp_path):
    # Perfectly split workers can never reach 0.95: the cap ends the task.
    server = crowd_server(workforce_size=4, max_answers_per_task=4, confidence=0.99, worker_accuracy=0.5, seed=3)
    signed(server, "PUT", task_path(server, "t1"), {"input": INPUT})
    document = wait_until_finished(server, "t1")
    if document["state"] == "failed":
        assert document["problemDetails"]["code"] == "Inconclusive"
        assert len(server.tasks()[0]["answers"]) == 4


def test_task_without_answers_before_its_deadline_expires(crowd_server):
    server = crowd_server(workforce_size=0, task_deadline_seconds=0.2)
    signed(server, "PUT", task_path(server, "t1"), {"input": INPUT})
    document = wait_until_finished(server, "t1")
    assert document["state"] == "failed"
    assert document["problemDetails"] == {
        "code": "Expired",
        "message": "Not enough Workers provided answers for your task within the allotted time.",
    }
    assert document["result"] is None


def test_account_without_funds_gets_insufficient_funds_failures(crowd_server):
    server = crowd_server(starting_balance=0.02, reward_per_answer=0.01)
    signed(server, "PUT", task_path(server, "t1"), {"input": INPUT})
    document = wait_until_finished(server, "t1")
    assert document["state"] == "failed"
    assert document["problemDetails"]["code"] == "InsufficientFunds"
    # Two answers were paid for, the third could not be.
    assert len(server.tasks()[0]["answers"]) == 2


# Signatures and isolation


def test_requests_aws4auth_with_payload_hash_is_accepted_and_a_tampered_body_is_not(crowd_server):
    server = crowd_server(workforce_size=0)
    account = server.account
    auth = AWS4Auth(account.access_key_id, account.secret_access_key, "us-east-1", "crowd")
    url = server.endpoint_url + task_path(server, "t1")
    assert requests.put(url, json={"input": INPUT}, auth=auth, timeout=10).status_code == 201
    prepared = requests.Request("PUT", url.replace("t1", "t2"), json={"input": INPUT}, auth=auth).prepare()
    prepared.body = json.dumps({"input": {**INPUT, "target": {"label": "cat"}}}).encode()
    prepared.headers["Content-Length"] = str(len(prepared.body))
    response = requests.Session().send(prepared, timeout=10)
    assert response.status_code == 403
    assert response.json()["code"] == "InvalidSignature"
    assert [t["task_name"] for t in server.tasks()] == ["t1"]


def test_tampered_body_without_payload_hash_header_is_refused(crowd_server):
    server = crowd_server(workforce_size=0)
    request = AWSRequest(
        method="PUT", url=server.endpoint_url + task_path(server, "t1"), data=json.dumps({"input": INPUT})
    )
    account = server.account
    SigV4Auth(Credentials(account.access_key_id, account.secret_access_key), "crowd", "us-east-1").add_auth(request)
    headers = dict(request.prepare().headers)
    tampered = json.dumps({"input": {**INPUT, "target": {"label": "cat"}}})
    response = requests.put(server.endpoint_url + task_path(server, "t1"), data=tampered, headers=headers, timeout=10)
    assert response.status_code == 403
    assert server.tasks() == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"secret": "not-the-secret"}, "InvalidSignature"),
        ({"account": Account("123456789012", "AKIAUNKNOWN000000000", "x")}, "UnrecognizedClient"),
        # Clock offsets, not times: a time fixed at collection drifts while the rest of the suite runs.
        ({"skew": datetime.timedelta(minutes=-16)}, "RequestExpired"),
        ({"skew": datetime.timedelta(minutes=16)}, "RequestExpired"),
    ],
)
def test_signature_failures_are_403(crowd_server, change, code, caplog):
    server = crowd_server(workforce_size=0)
    caplog.set_level(logging.DEBUG)
    if "skew" in change:
        change = {"when": datetime.datetime.now(datetime.timezone.utc) + change["skew"]}
    response = signed(server, "PUT", task_path(server, "t1"), {"input": INPUT}, **change)
    assert response.status_code == 403
    assert response.json()["code"] == code
    assert server.tasks() == []
    assert server.account.secret_access_key not in caplog.text + response.text


def test_time_within_fifteen_minutes_is_accepted(crowd_server):
    server = crowd_server(workforce_size=0)
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=14)
    assert signed(server, "PUT", task_path(server, "t1"), {"input": INPUT}, when=when).status_code == 201


def test_unsigned_request_is_403(crowd_server):
    server = crowd_server()
    response = requests.get(server.endpoint_url + task_path(server, "t1"), timeout=10)
    assert response.status_code == 403
    assert response.json()["code"] == "MissingAuthenticationToken"


def test_an_account_cannot_touch_another_accounts_tasks(crowd_server):
    owner = Account("123456789012", "AKIAOWNER00000000001", "owner-secret")
    server = crowd_server(accounts=[owner, OTHER], workforce_size=0, task_deadline_seconds=0.3)
    assert signed(server, "PUT", task_path(server, "t1"), {"input": INPUT}).status_code == 201
    for method in ("GET", "PUT", "DELETE"):
        response = signed(server, method, task_path(server, "t1", account=owner), {"input": INPUT}, account=OTHER)
        assert response.status_code == 403
        assert response.json()["code"] == "AccessDenied"
    # Under its own account id the other account sees nothing, and its own task of that name is separate.
    assert signed(server, "GET", task_path(server, "t1", account=OTHER), account=OTHER).status_code == 404
    wait_until_finished(server, "t1")
    assert signed(server, "DELETE", task_path(server, "t1"), account=OTHER).status_code == 403
    assert [(t["account"], t["task_name"]) for t in server.tasks()] == [("123456789012", "t1")]


# STS


def _sts(server, **credentials):
    account = server.account
    return boto3.client(
        "sts",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=credentials.get("key", account.access_key_id),
        aws_secret_access_key=credentials.get("secret", account.secret_access_key),
        aws_session_token=credentials.get("token"),
    )


def test_boto3_get_caller_identity_learns_the_account(crowd_server):
    server = crowd_server()
    assert _sts(server).get_caller_identity()["Account"] == server.account.account_id
    with pytest.raises(Exception, match="InvalidSignature"):
        _sts(server, secret="wrong").get_caller_identity()


def test_assume_role_credentials_work_until_they_expire(crowd_server):
    server = crowd_server(workforce_size=0, session_duration_seconds=1)
    role_arn = f"arn:aws:iam::{server.account.account_id}:role/crowd-caller"
    issued = _sts(server).assume_role(RoleArn=role_arn, RoleSessionName="test")["Credentials"]
    temporary = Account(server.account.account_id, issued["AccessKeyId"], issued["SecretAccessKey"])
    token = issued["SessionToken"]
    assert (
        _sts(
            server, key=temporary.access_key_id, secret=temporary.secret_access_key, token=token
        ).get_caller_identity()["Account"]
        == server.account.account_id
    )
    assert (
        signed(server, "PUT", task_path(server, "t1"), {"input": INPUT}, account=temporary, token=token).status_code
        == 201
    )
    wrong_token = signed(server, "GET", task_path(server, "t1"), account=temporary, token=token[:-2] + "xx")
    assert wrong_token.json()["code"] == "InvalidToken"
    time.sleep(1.1)
    expired = signed(server, "GET", task_path(server, "t1"), account=temporary, token=token)
    assert expired.status_code == 403
    assert expired.json()["code"] == "ExpiredToken"


def test_assume_role_of_another_account_is_denied(crowd_server):
    server = crowd_server()
    with pytest.raises(Exception, match="AccessDenied"):
        _sts(server).assume_role(RoleArn="arn:aws:iam::999999999999:role/x", RoleSessionName="session")


# Faults


def test_throttle_fault_is_429_with_retry_after_and_no_effect(crowd_server):
    server = crowd_server(throttle_rate=1.0, retry_after_seconds=3)
    response = signed(server, "PUT", task_path(server, "t1"), {"input": INPUT})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["code"] == "Throttled"
    assert server.tasks() == []
    assert server.request_counts()[("PUT", 429)] == 1
    # STS is never throttled.
    assert _sts(server).get_caller_identity()["Account"] == server.account.account_id


def test_error_fault_is_500_or_503_with_no_effect(crowd_server):
    server = crowd_server(error_rate=1.0, seed=1)
    statuses = {signed(server, "PUT", task_path(server, f"t{n}"), {"input": INPUT}).status_code for n in range(12)}
    assert statuses == {500, 503}
    assert server.tasks() == []
    counts = server.request_counts()
    assert counts[("PUT", 500)] + counts[("PUT", 503)] == 12


def test_drop_fault_hangs_up_after_the_request_took_effect(crowd_server):
    server = crowd_server(drop_rate=1.0, workforce_size=0)
    with pytest.raises(requests.ConnectionError):
        signed(server, "PUT", task_path(server, "t1"), {"input": INPUT})
    assert [t["task_name"] for t in server.tasks()] == ["t1"]
    assert server.request_counts()[("PUT", 201)] == 1


def test_latency_fault_delays_every_request(crowd_server):
    server = crowd_server(latency_ms=300)
    started = time.monotonic()
    signed(server, "GET", task_path(server, "t1"))
    # A lower bound only: the request cannot be answered before the injected latency.
    assert time.monotonic() - started >= 0.3


# Robustness


def test_unknown_routes_and_methods_answer_json_errors(crowd_server):
    server = crowd_server()
    response = requests.get(server.endpoint_url + "/nothing/here", timeout=10)
    assert response.status_code == 404
    assert set(response.json()) == {"code", "message"}
    response = requests.post(server.endpoint_url + task_path(server, "t1"), timeout=10)
    assert response.status_code == 405
    assert "Traceback" not in response.text


@pytest.mark.slow
def test_sigkill_loses_no_task_or_answer_and_processing_continues(tmp_path):
    from imagecontains_gateway.testing import LocalCrowdServer

    # Perfectly accurate workers always agree, so every task must end completed, never Inconclusive.
    with LocalCrowdServer(
        tmp_path / "crowd.db", subprocess=True, workforce_size=5, worker_accuracy=1.0, answer_delay_seconds=0.2
    ) as server:
        for n in range(20):
            assert signed(server, "PUT", task_path(server, f"t{n}"), {"input": INPUT}).status_code == 201
        # About 80 answers at 5 workers x 0.2 s each take ~3 s: the kill comes mid-processing.
        time.sleep(0.6)
        before = {t["task_name"]: t for t in server.tasks()}
        server.kill()
        after_kill = {t["task_name"]: t for t in server.tasks()}
        # Everything acknowledged (and every answer stored) before the kill is still there.
        assert after_kill.keys() == before.keys()
        for name, task in before.items():
            assert after_kill[name]["answers"][: len(task["answers"])] == task["answers"]
        assert any(t["state"] == "processing" for t in after_kill.values())
        server.start()
        for n in range(20):
            assert wait_until_finished(server, f"t{n}", timeout=30)["state"] == "completed"
