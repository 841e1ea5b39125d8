"""Hostile input, property-based: the operator refuses bad input before any request (naming it), and the
server answers fuzzed paths, names, bodies and headers without a 500 and without storing a malformed task."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import signed

from airflow_provider_imagecontains.exceptions import InvalidTaskError
from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.validation import validate_image_contains_input, validate_task_name
from imagecontains_gateway.testing import LocalCrowdServer

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCrowdServer]:
    with LocalCrowdServer(tmp_path_factory.mktemp("fuzz") / "crowd.db", workforce_size=0) as crowd:
        previous = {name: os.environ.get(name) for name in crowd.airflow_connection_env()}
        os.environ.update(crowd.airflow_connection_env())
        yield crowd
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def total_requests(server: LocalCrowdServer) -> int:
    return sum(server.request_counts().values())


def operator(images: Any, label: Any = "person", **kwargs: Any) -> ImageContainsOperator:
    with DAG("fuzz", schedule=None, start_date=datetime(2026, 1, 1)):
        return ImageContainsOperator(
            task_id="submit", images=images, target_label=label, function_name="image-contains-test", **kwargs
        )


# ---- operator inputs ----

GOOD_URLS = st.integers(0, 50).map(lambda n: f"https://img.example.com/fuzz/{n}.jpg")
BAD_URLS = st.one_of(
    st.none(),
    st.integers(),
    st.binary(max_size=20),
    st.sampled_from(
        [
            "",
            "   ",
            "img/relative.jpg",
            "/absolute/path.jpg",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "ftp://example.com/a.jpg",
            "https://",
            "https://img.example.com/" + "x" * 400,
            " https://img.example.com/padded.jpg",
            "https://img.example.com/a b.jpg",
            "https://user:secret@img.example.com/a.jpg",  # credentials every worker's browser would get
            "https://img.example.com/\u202egpj.a",
        ]
    ),
)
# Characters no label may hold: control, format (bidi overrides, zero-width), separators, private-use, unassigned.
HIDDEN = ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp")
BAD_LABELS = st.one_of(
    st.none(),
    st.integers(),
    st.just(""),
    st.text(" \t\n\u3000\u00a0", min_size=1, max_size=5),
    st.just("x" * 300),
    st.tuples(st.sampled_from(["person", "car"]), st.characters(categories=HIDDEN)).map("".join),
)


@FUZZ
@given(good=st.lists(GOOD_URLS, max_size=5), bad=st.lists(BAD_URLS, min_size=1, max_size=3), data=st.data())
def test_any_bad_image_is_refused_by_name_before_any_request(server, good, bad, data) -> None:
    images = list(good)
    for item in bad:
        images.insert(data.draw(st.integers(0, len(images))), item)
    before = total_requests(server)
    with pytest.raises(InvalidTaskError) as refused:
        operator(images).execute({})
    assert total_requests(server) == before
    assert "nothing was submitted" in str(refused.value)
    first_bad = next(item for item in images if item in bad)
    assert repr(first_bad)[:40] in str(refused.value)


@FUZZ
@given(label=BAD_LABELS)
def test_a_bad_label_is_refused_by_name_before_any_request(server, label) -> None:
    before = total_requests(server)
    with pytest.raises(InvalidTaskError) as refused:
        operator(["https://img.example.com/a.jpg"], label=label).execute({})
    assert total_requests(server) == before
    assert repr(label)[:20] in str(refused.value) or "no label" in str(refused.value)


@FUZZ
@given(
    urls=st.lists(GOOD_URLS, min_size=1, max_size=8, unique=True),
    label=st.text(st.characters(exclude_categories=HIDDEN), min_size=1, max_size=40).filter(lambda text: text.strip()),
)
def test_valid_images_and_any_unicode_label_create_exactly_one_task_each(server, urls, label) -> None:
    handle = operator(urls, label=label).execute({})
    assert [task["url"] for task in handle["tasks"]] == urls
    names = [task["task_name"] for task in handle["tasks"]]
    assert len(set(names)) == len(urls)
    stored = {task["task_name"]: task for task in server.tasks("image-contains-test")}
    for task in handle["tasks"]:
        assert stored[task["task_name"]]["input"] == {"image": {"url": task["url"]}, "target": {"label": label}}


def test_duplicates_non_lists_and_too_many_images_are_refused_before_any_request(server) -> None:
    before = total_requests(server)
    url = "https://img.example.com/dup.jpg"
    with pytest.raises(InvalidTaskError, match="duplicate"):
        operator([url, url]).execute({})
    for not_a_list in (None, url, {"url": url}, 42):
        with pytest.raises(InvalidTaskError, match="give a list"):
            operator(not_a_list).execute({})
    many = [f"https://img.example.com/many/{i}.jpg" for i in range(30_000)]
    with pytest.raises(AirflowFailException, match="30000 crowd tasks, more than max_tasks=10000"):
        operator(many, max_tasks=10_000).execute({})
    assert total_requests(server) == before


def test_an_empty_list_is_an_empty_submission(server) -> None:
    """Documented normalization: no images (e.g. no new frames this interval) submit nothing and succeed."""
    before = total_requests(server)
    assert operator([]).execute({})["tasks"] == []
    assert total_requests(server) == before


# ---- server inputs ----

SEGMENTS = st.one_of(
    st.text(min_size=1, max_size=80),
    st.sampled_from(["image-contains", "image-contains-test", "a" * 64, "a" * 65, ".", "..", "%00", "ok-name"]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
NEAR_VALID_INPUTS = st.fixed_dictionaries(
    {
        "image": st.fixed_dictionaries({"url": st.one_of(st.text(max_size=50), GOOD_URLS, BAD_URLS)}),
        "target": st.fixed_dictionaries({"label": st.one_of(st.text(max_size=30), BAD_LABELS)}),
    }
).map(lambda task_input: {"input": task_input})
BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    JSON_VALUES.map(lambda value: json.dumps({"input": value}).encode()),
    NEAR_VALID_INPUTS.map(lambda body: json.dumps(body, default=repr).encode()),
)
HEADERS = st.dictionaries(
    st.sampled_from(["Content-Type", "X-Forwarded-For", "X-Amz-Target", "Accept", "X-Custom", "Transfer-Encoding"]),
    # Printable values as they arrive on the wire: HTTP drops whitespace around a field value (and requests
    # refuses to send a value that starts with it).
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip),
    max_size=3,
)


@FUZZ
@given(
    method=st.sampled_from(["PUT", "GET", "DELETE", "POST", "PATCH"]),
    function=SEGMENTS,
    task=SEGMENTS,
    body=BODIES,
    headers=HEADERS,
)
def test_fuzzed_signed_requests_never_500_and_never_store_a_malformed_task(
    server, method, function, task, body, headers
) -> None:
    path = f"/{server.account.account_id}/functions/{quote(function, safe='')}/tasks/{quote(task, safe='')}"
    response = _signed_with_headers(server, method, path, body, headers)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert {"code", "message"} <= response.json().keys()
        assert "Traceback" not in response.text
    for stored in server.tasks():
        validate_task_name(stored["task_name"])
        validate_image_contains_input(stored["input"])


def _signed_with_headers(server: LocalCrowdServer, method: str, path: str, body: bytes, headers: dict[str, str]):
    """A correctly signed request (so it reaches the handlers) with extra unsigned headers."""
    request = AWSRequest(method=method, url=server.endpoint_url + path, data=body)
    account = server.account
    SigV4Auth(Credentials(account.access_key_id, account.secret_access_key), "crowd", "us-east-1").add_auth(request)
    prepared = request.prepare()
    extra = {k: v for k, v in headers.items() if k != "Transfer-Encoding"}
    return requests.request(method, prepared.url, headers={**extra, **prepared.headers}, data=body, timeout=10)


def test_signed_helper_is_the_servers_own_signing(server) -> None:
    """The fuzz requests reach the handlers: the same signing creates a real task."""
    name = "fuzz-signing-check"
    body = {"input": {"image": {"url": "https://img.example.com/check.jpg"}, "target": {"label": "cat"}}}
    path = f"/{server.account.account_id}/functions/image-contains-test/tasks/{name}"
    assert _signed_with_headers(server, "PUT", path, json.dumps(body).encode(), {}).status_code in (200, 201)
    assert signed(server, "GET", path).json()["taskName"] == name
