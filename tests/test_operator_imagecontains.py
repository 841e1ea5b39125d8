"""ImageContainsOperator against the local crowd server (real signed HTTP over loopback)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
import requests
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowTaskTimeout,
    TaskDeferred,
    conf,
)
from airflow.sdk import DAG

from airflow_provider_imagecontains.exceptions import (
    BulkTaskError,
    EndpointUnreachableError,
    InvalidTaskError,
    ThrottledError,
)
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.operators import imagecontains as operator_module
from airflow_provider_imagecontains.operators._images import plan_image_tasks
from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator, InvalidImagesError

TEST_FN = "image-contains-test"
IMAGES = [f"https://img.example.com/cam/{i:04d}.jpg" for i in range(10)]


def _operator(**kwargs) -> ImageContainsOperator:
    with DAG("ops_dag", schedule=None, start_date=datetime(2026, 1, 1)):
        settings = {"task_id": "submit", "images": IMAGES, "target_label": "person", "function_name": TEST_FN, **kwargs}
        return ImageContainsOperator(**settings)


def _requests(server) -> Counter:
    return server.request_counts()


def _count(server, method: str, status: int | None = None) -> int:
    return sum(n for (m, s), n in _requests(server).items() if m == method and status in (None, s))


def test_submits_one_task_per_image_and_returns_a_compact_handle(crowd_server) -> None:
    server = crowd_server()
    handle = _operator().execute({})

    assert handle["function_name"] == TEST_FN and handle["imagecontains_conn_id"] == "imagecontains_default"
    assert [(t["url"], t["label"]) for t in handle["tasks"]] == [(url, "person") for url in IMAGES]
    stored = {t["task_name"]: t for t in server.tasks(function_name=TEST_FN)}
    assert set(stored) == {t["task_name"] for t in handle["tasks"]}
    for task in handle["tasks"]:
        assert task["task_name"].startswith("ops_dag-")  # the DAG id is the default namespace
        assert stored[task["task_name"]]["input"] == {
            "image": {"url": task["url"]},
            "target": {"label": "person"},
        }


def test_rerun_and_retry_after_a_half_finished_submission_create_no_duplicates(crowd_server) -> None:
    # Dropped connections after the server acted: the hook retries, PUT's idempotency absorbs it.
    server = crowd_server(drop_rate=0.3, seed=3)
    _operator(images=IMAGES[:4]).execute({})  # a run that "crashed" after four images
    _operator().execute({})  # its retry
    _operator().execute({})  # a re-run of the DAG

    assert len(server.tasks(function_name=TEST_FN)) == len(IMAGES)
    assert _count(server, "PUT", 201) <= len(IMAGES)


def _impatient(operator: ImageContainsOperator) -> ImageContainsOperator:
    """Every throttled call outlives the hook's retries at once, as a long burst of 429s would."""
    operator.hook.max_attempts = 1
    return operator


def test_calls_that_outlive_the_hooks_retries_are_submitted_again_in_later_rounds(crowd_server, capsys) -> None:
    server = crowd_server(throttle_rate=0.5, retry_after_seconds=0, seed=4)
    handle = _impatient(_operator(submit_rounds=20, submit_round_delay=0)).execute({})

    stored = {t["task_name"] for t in server.tasks(function_name=TEST_FN)}
    assert stored == {t["task_name"] for t in handle["tasks"]}
    assert _count(server, "PUT", 201) == len(IMAGES)  # each created once: successes are never re-sent
    assert _count(server, "PUT") == len(IMAGES) + _count(server, "PUT", 429)
    assert "crowd task calls failed after retries (first: ThrottledError: " in capsys.readouterr().out


def test_calls_still_throttled_after_the_last_round_fail_the_task_keeping_the_rest(crowd_server) -> None:
    server = crowd_server(throttle_rate=1.0, retry_after_seconds=0)
    with pytest.raises(BulkTaskError) as raised:
        _impatient(_operator(submit_rounds=2, submit_round_delay=0)).execute({})
    assert len(raised.value.errors) == len(IMAGES) and not raised.value.results
    assert all(isinstance(error, ThrottledError) for error in raised.value.errors.values())
    assert _count(server, "PUT", 429) == 2 * len(IMAGES)  # two rounds, then the Airflow task fails


def test_an_error_that_resubmitting_cannot_fix_fails_at_once_naming_the_image(crowd_server) -> None:
    server = crowd_server(throttle_rate=0.5, retry_after_seconds=0, seed=4)
    taken = plan_image_tasks(IMAGES, "person", "ops_dag", TEST_FN)[3]
    patient = ImageContainsHook(max_attempts=30, retry_base_delay=0.001, max_retry_delay=0.01)
    patient.put_task(TEST_FN, taken.task_name, {"image": {"url": IMAGES[0]}, "target": {"label": "other"}})
    puts_before = _count(server, "PUT")

    with pytest.raises(AirflowFailException) as raised:
        _impatient(_operator(submit_rounds=5, submit_round_delay=0)).execute({})

    message = str(raised.value)
    assert message.startswith(f"1 of {len(IMAGES)} crowd task(s) could not be submitted:")
    assert f"{taken.url} (label 'person', task {taken.task_name}): TaskNameConflictError" in message
    assert _count(server, "PUT") - puts_before == len(IMAGES)  # one round: nothing was submitted again


def test_answered_images_are_reused_not_bought_again(crowd_server) -> None:
    server = crowd_server(workforce_size=3, worker_accuracy=1.0)
    first = _operator(function_name="image-contains", wait_for_completion=True, deferrable=False, poll_interval=0.1)
    results = first.execute({})
    answers_before = [t["answers"] for t in server.tasks(function_name="image-contains")]

    again = _operator(function_name="image-contains", wait_for_completion=True, deferrable=False, poll_interval=0.1)
    assert again.execute({}) == results
    assert [t["answers"] for t in server.tasks(function_name="image-contains")] == answers_before
    assert len(server.tasks(function_name="image-contains")) == len(IMAGES)


def test_failed_tasks_are_kept_unless_resubmit_failed(crowd_server) -> None:
    server = crowd_server(workforce_size=0, task_deadline_seconds=0.1)
    images = IMAGES[:3]
    results = _operator(
        images=images,
        function_name="image-contains",
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.1,
        failed_policy="report",
    ).execute({})
    assert {r["state"] for r in results} == {"failed"}
    assert {r["problem"]["code"] for r in results} == {"Expired"}

    _operator(images=images, function_name="image-contains").execute({})
    assert _count(server, "DELETE") == 0
    assert {t["state"] for t in server.tasks(function_name="image-contains")} == {"failed"}

    _operator(images=images, function_name="image-contains", resubmit_failed=True).execute({})
    assert _count(server, "DELETE", 204) == 3
    assert {t["state"] for t in server.tasks(function_name="image-contains")} == {"processing"}


def test_invalid_input_is_refused_before_any_request(crowd_server) -> None:
    server = crowd_server()
    # AirflowFailException: Airflow fails the task for good; a retry would only meet the same input.
    with pytest.raises(AirflowFailException, match=r"2 invalid image\(s\), nothing was submitted") as raised:
        _operator(images=[*IMAGES, "gs://bucket/a.jpg", IMAGES[0]]).execute({})
    assert isinstance(raised.value, InvalidTaskError)
    with pytest.raises(AirflowFailException, match="20 crowd tasks, more than max_tasks=10"):
        _operator(target_label=["person", "car"], max_tasks=10).execute({})
    assert _count(server, "PUT") == 0 and _count(server, "GET") == 0


def test_a_label_list_creates_one_task_per_image_and_label(crowd_server) -> None:
    server = crowd_server()
    handle = _operator(images=IMAGES[:3], target_label=["person", "car"]).execute({})
    assert len(handle["tasks"]) == 6 == len(server.tasks(function_name=TEST_FN))


def test_the_deprecated_label_argument_still_sets_target_label_with_a_warning() -> None:
    from airflow.exceptions import AirflowProviderDeprecationWarning

    with pytest.warns(AirflowProviderDeprecationWarning, match="use target_label"):
        deprecated = ImageContainsOperator(task_id="old", images=IMAGES, label=["person", "car"], namespace="n")
    assert deprecated.target_label == ["person", "car"]
    assert (
        deprecated._plan()
        == _operator(target_label=["person", "car"], namespace="n", function_name="image-contains")._plan()
    )
    with pytest.raises(ValueError, match="target_label only"):
        ImageContainsOperator(task_id="both", images=IMAGES, label="person", target_label="person")


class _MappedInstance:
    """A mapped task instance whose ``xcom_pull`` without ``map_indexes`` sees only its own value, as on some
    Airflow releases, and with them every instance's (the documented behaviour of an explicit list)."""

    def __init__(self, xcom: dict, map_index: int, count_instances: bool = True) -> None:
        self.xcom, self.map_index, self.dag_id, self.run_id = xcom, map_index, "ops_dag", "r1"
        if count_instances:
            self.get_ti_count = lambda **kwargs: 2

    def xcom_push(self, key: str, value) -> None:
        self.xcom[key, self.map_index] = value

    def xcom_pull(self, task_ids: str, key: str, map_indexes=None):
        if map_indexes is None:
            return self.xcom.get((key, self.map_index))
        return [self.xcom.get((key, index)) for index in map_indexes]


def test_max_run_tasks_counts_every_mapped_instance_or_refuses(crowd_server) -> None:
    server = crowd_server()
    xcom: dict[tuple[str, int], object] = {}
    _operator(images=IMAGES[:3], max_run_tasks=4).execute({"ti": _MappedInstance(xcom, 0)})
    with pytest.raises(AirflowFailException, match="plan 6 crowd tasks with this one"):
        _operator(images=IMAGES[3:6], max_run_tasks=4).execute({"ti": _MappedInstance(xcom, 1)})
    with pytest.raises(AirflowFailException, match="cannot be enforced"):
        _operator(images=IMAGES[6:8], max_run_tasks=4).execute({"ti": _MappedInstance({}, 1, count_instances=False)})
    assert len(server.tasks(function_name=TEST_FN)) == 3


def test_dry_run_counts_new_tasks_and_submits_nothing(crowd_server) -> None:
    server = crowd_server()
    _operator(images=IMAGES[:3]).execute({})
    puts = _count(server, "PUT")

    summary = _operator(dry_run=True).execute({})

    assert summary["new_tasks"] == 7 and summary["total_tasks"] == 10
    assert summary["existing_tasks"] == {"processing": 3}
    assert _count(server, "PUT") == puts and len(server.tasks(function_name=TEST_FN)) == 3


def test_wait_for_completion_defers_to_the_trigger_and_returns_records(crowd_server) -> None:
    crowd_server()
    operator = _operator(wait_for_completion=True, deferrable=True, poll_interval=0.05)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    trigger = deferred.value.trigger
    assert deferred.value.method_name == "execute_complete"
    event = asyncio.run(anext(trigger.run())).payload

    records = operator.execute_complete({}, event)

    assert [(r["url"], r["state"]) for r in records] == [(url, "completed") for url in IMAGES]
    assert all(isinstance(r["contains_target"], bool) for r in records)
    hook = ImageContainsHook()
    docs = hook.get_tasks(TEST_FN, [r["task_name"] for r in records])
    assert [docs[r["task_name"]]["result"]["containsTarget"] for r in records] == [
        r["contains_target"] for r in records
    ]


def test_hook_params_and_the_poll_failure_limit_reach_the_deferred_trigger(crowd_server) -> None:
    server = crowd_server(workforce_size=0)  # nobody answers: the tasks stay processing
    operator = _operator(
        images=IMAGES[:2],
        function_name="image-contains",
        wait_for_completion=True,
        deferrable=True,
        hook_params={"max_attempts": 1, "timeout": 5},
        max_consecutive_poll_failures=1,
    )
    assert operator.hook.max_attempts == 1
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    kwargs = deferred.value.trigger.serialize()[1]
    trigger = type(deferred.value.trigger)(**kwargs)  # as the triggerer rebuilds it
    server.stop()

    async def events() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())

    assert event["status"] == "error"
    assert "for 1 poll cycles in a row" in event["message"] and "after 1 attempt(s)" in event["message"]


def test_waiting_without_deferring_gives_the_same_records(crowd_server) -> None:
    crowd_server()
    records = _operator(wait_for_completion=True, deferrable=False, poll_interval=0.05).execute({})
    assert [r["url"] for r in records] == IMAGES and {r["state"] for r in records} == {"completed"}


def test_waits_are_bounded_by_default_like_the_sensors_timeout(crowd_server) -> None:
    crowd_server(workforce_size=0)  # nobody answers: the tasks stay processing
    images = IMAGES[:2]
    with pytest.raises(TaskDeferred) as deferred:
        _operator(images=images, function_name="image-contains", wait_for_completion=True, deferrable=True).execute({})
    assert deferred.value.timeout == timedelta(seconds=conf.getfloat("sensors", "default_timeout"))

    operator = _operator(
        images=images, function_name="image-contains", wait_for_completion=True, deferrable=False, poll_interval=0.2
    )
    assert operator.wait_timeout == conf.getfloat("sensors", "default_timeout")
    operator.wait_timeout = 1
    started = time.monotonic()
    with pytest.raises(AirflowTaskTimeout, match=r"wait_timeout=0:00:01 .*2 processing"):
        operator.execute({})
    assert time.monotonic() - started < 10


def test_s3_images_are_sent_presigned_and_reruns_reuse_their_tasks(
    crowd_server, s3_endpoint, s3_client, monkeypatch
) -> None:
    server = crowd_server()
    aws_extra = {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_TEST",
        json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": aws_extra}),
    )
    s3 = s3_client()
    s3.create_bucket(Bucket="frames")
    s3.put_object(Bucket="frames", Key="cam1/0001.jpg", Body=b"frame-1")
    images = ["s3://frames/cam1/0001.jpg", IMAGES[0]]

    handle = _operator(images=images, aws_conn_id="aws_test").execute({})
    again = _operator(images=images, aws_conn_id="aws_test").execute({})  # new presigned URL, same task

    assert handle == again
    assert "X-Amz-Signature" not in json.dumps(handle)  # XCom keeps the s3:// URI, not the signed URL
    stored = {t["task_name"]: t["input"] for t in server.tasks(function_name=TEST_FN)}
    assert len(stored) == 2
    sent_url = stored[handle["tasks"][0]["task_name"]]["image"]["url"]
    assert sent_url.startswith(s3_endpoint) and "X-Amz-Signature=" in sent_url
    assert requests.get(sent_url, timeout=10).content == b"frame-1"


def _aws_connection(monkeypatch, conn_id: str, s3_endpoint: str, **extra) -> None:
    extra = {"endpoint_url": s3_endpoint, "region_name": "us-east-1", **extra}
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


def test_s3_uris_in_any_case_are_presigned_through_s3hook_and_aws_conn_id_is_templated(
    crowd_server, s3_endpoint, monkeypatch
) -> None:
    server = crowd_server()
    # The Amazon connection's own settings apply, e.g. a per-service endpoint over the general one.
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_S3_ENDPOINT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {
                    "endpoint_url": "http://127.0.0.1:9",
                    "service_config": {"s3": {"endpoint_url": s3_endpoint}},
                },
            }
        ),
    )
    assert "aws_conn_id" in ImageContainsOperator.template_fields
    assert _operator().aws_conn_id == "aws_default"
    handle = _operator(images=["S3://frames/cam1/0001.jpg"], aws_conn_id="aws_s3_endpoint").execute({})
    [stored] = server.tasks(function_name=TEST_FN)
    assert handle["tasks"][0]["url"] == "S3://frames/cam1/0001.jpg"
    sent_url = stored["input"]["image"]["url"]
    assert sent_url.startswith(f"{s3_endpoint}/frames/cam1/0001.jpg?") and "X-Amz-Signature=" in sent_url


def test_presigned_urls_of_an_assumed_role_are_refused_before_any_request_naming_the_ways_out(
    crowd_server, s3_endpoint, monkeypatch
) -> None:
    server = crowd_server()
    _aws_connection(
        monkeypatch,
        "aws_role",
        s3_endpoint,
        role_arn="arn:aws:iam::123456789012:role/frames-reader",
        service_config={"sts": {"endpoint_url": s3_endpoint}},
    )
    images = ["s3://frames/cam1/0001.jpg", IMAGES[0]]
    with pytest.raises(InvalidImagesError) as refused:
        _operator(images=images, aws_conn_id="aws_role").execute({})
    message = str(refused.value)
    assert "session token" in message and "long-lived credentials" in message and "s3_url_template" in message
    assert "X-Amz-Signature" not in message
    assert _count(server, "PUT") == 0 and server.tasks() == []

    cdn = "https://cdn.example.com/{key}"
    handle = _operator(images=images, aws_conn_id="aws_role", s3_url_template=cdn).execute({})
    stored = {t["task_name"]: t["input"]["image"]["url"] for t in server.tasks(function_name=TEST_FN)}
    assert stored[handle["tasks"][0]["task_name"]] == "https://cdn.example.com/cam1/0001.jpg"


def test_unsupported_scheme_and_bad_policy_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="failed_policy"):
        _operator(failed_policy="ignore")
    with pytest.raises(InvalidImagesError, match="only absolute http") as raised:
        _operator(images=["file:///etc/passwd"]).execute({})
    assert isinstance(raised.value, AirflowFailException)


def test_s3_images_without_aws_credentials_fail_naming_presigning_and_aws_conn_id(tmp_path, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(AirflowException, match="Presigning the s3:// images needs AWS credentials") as raised:
        _operator(images=["s3://frames/cam1/0001.jpg"]).execute({})
    assert "aws_conn_id='aws_default'" in str(raised.value) and "NoCredentialsError" in str(raised.value)


def test_an_unreachable_endpoint_fails_in_the_first_round_naming_the_cause_and_endpoint(monkeypatch, caplog) -> None:
    with socket.socket() as sock:  # a port nobody listens on: every connection is refused
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    connection = {"conn_type": "imagecontains", "login": "AKIAX", "password": "secret"}
    connection["extra"] = {"endpoint_url": endpoint, "account_id": "123456789012"}
    monkeypatch.setenv("AIRFLOW_CONN_IMAGECONTAINS_DEFAULT", json.dumps(connection))
    pauses: list[float] = []
    monkeypatch.setattr(operator_module.time, "sleep", pauses.append)
    operator = _impatient(_operator(submit_rounds=3, submit_round_delay=30))

    with pytest.raises(BulkTaskError) as raised:
        operator.execute({})

    message = str(raised.value)
    assert "connection refused" in message and endpoint in message and "ServiceError" not in message.split(":")[0]
    assert all(isinstance(error, EndpointUnreachableError) for error in raised.value.errors.values())
    assert 30 not in pauses  # no second round: not one call got a connection


def test_waiting_with_records_path_returns_a_reference_to_the_stored_records(crowd_server, tmp_path) -> None:
    from types import SimpleNamespace

    from airflow_provider_imagecontains.storage import read_records

    crowd_server()
    context = {
        "ti": SimpleNamespace(dag_id="ops_dag", run_id="r1", task_id="submit", map_index=-1, xcom_push=lambda **_: None)
    }
    operator = _operator(
        wait_for_completion=True, deferrable=False, poll_interval=0.05, records_path=f"file://{tmp_path}"
    )
    reference = operator.execute(context)

    assert reference["records_uri"] == f"file://{tmp_path}/ops_dag/r1/submit.records.jsonl" and reference["count"] == 10
    records = read_records(reference)
    assert [r["url"] for r in records] == IMAGES and {r["state"] for r in records} == {"completed"}


def test_a_deferred_wait_with_records_path_gives_the_trigger_a_reference_not_names(crowd_server, tmp_path) -> None:
    from types import SimpleNamespace

    from airflow_provider_imagecontains.storage import read_records

    crowd_server()
    context = {
        "ti": SimpleNamespace(dag_id="ops_dag", run_id="r2", task_id="submit", map_index=3, xcom_push=lambda **_: None)
    }
    operator = _operator(
        wait_for_completion=True, deferrable=True, poll_interval=0.05, records_path=f"file://{tmp_path}"
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["task_names"] is None and kwargs["tasks_uri"] == f"file://{tmp_path}/ops_dag/r2/submit-3.tasks.jsonl"

    event = asyncio.run(anext(deferred.value.trigger.run())).payload
    records = read_records(operator.execute_complete(context, event))
    assert [r["url"] for r in records] == IMAGES and {r["state"] for r in records} == {"completed"}
