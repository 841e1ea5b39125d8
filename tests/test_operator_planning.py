"""Task naming, input validation and S3 presigning of the operator (no crowd server needed)."""

from __future__ import annotations

import pytest
import requests

from airflow_provider_imagecontains.exceptions import InvalidTaskError
from airflow_provider_imagecontains.operators._images import plan_image_tasks, presign_s3_urls, task_name
from airflow_provider_imagecontains.validation import TASK_NAME_PATTERN

URL = "https://images.example.com/frames/0001.jpg"


def test_task_names_are_deterministic_valid_and_distinct() -> None:
    name = task_name("surveillance_triage", "image-contains", URL, "person")
    assert name == task_name("surveillance_triage", "image-contains", URL, "person")
    assert TASK_NAME_PATTERN.fullmatch(name)
    assert name.startswith("surveillance_triage-")
    others = {
        task_name("other_dag", "image-contains", URL, "person"),
        task_name("surveillance_triage", "image-contains-test", URL, "person"),
        task_name("surveillance_triage", "image-contains", URL + "?v=2", "person"),
        task_name("surveillance_triage", "image-contains", URL, "car"),
    }
    assert name not in others and len(others) == 4


def test_task_name_of_a_long_or_odd_namespace_stays_within_64_characters() -> None:
    name = task_name("ns with spaces/and:colons " * 10, "image-contains", URL, "person")
    assert len(name) <= 64 and TASK_NAME_PATTERN.fullmatch(name)
    assert TASK_NAME_PATTERN.fullmatch(task_name("///", "image-contains", URL, "person"))


def test_plan_covers_plain_urls_per_image_labels_and_label_lists() -> None:
    tasks = plan_image_tasks(
        [URL, {"url": "https://images.example.com/b.jpg", "label": "dog"}, {"url": "s3://bucket/c.jpg"}],
        ["person", "car"],
        "ns",
        "image-contains",
    )
    assert [(t.url, t.label) for t in tasks] == [
        (URL, "person"),
        (URL, "car"),
        ("https://images.example.com/b.jpg", "dog"),
        ("s3://bucket/c.jpg", "person"),
        ("s3://bucket/c.jpg", "car"),
    ]
    assert len({t.task_name for t in tasks}) == 5


def test_validation_lists_every_bad_item_in_one_message() -> None:
    images = [
        URL,
        "ftp://images.example.com/a.jpg",
        "https://images.example.com/" + "x" * 400,
        {"url": URL, "label": "   "},
        URL,
        "s3://bucket-only",
        {"url": URL, "colour": "red"},
    ]
    with pytest.raises(InvalidTaskError) as caught:
        plan_image_tasks(images, "person", "ns", "image-contains")
    message = str(caught.value)
    assert message.startswith("6 invalid image(s), nothing was submitted")
    for fragment in (
        "images[1] 'ftp://images.example.com/a.jpg'",
        "images[2]",
        "at most 400",
        "images[3]",
        "Invalid label '   '",
        "images[4]",
        "duplicate",
        "images[5] 's3://bucket-only'",
        "images[6]",
        "'colour'",
    ):
        assert fragment in message


def test_urls_and_s3_uris_with_control_characters_are_refused() -> None:
    images = [URL, "https://images.example.com/a\x00.jpg", "s3://bucket/frames/\x1b[2J.jpg", "s3://bucket/a\x7f"]
    with pytest.raises(InvalidTaskError) as caught:
        plan_image_tasks(images, "person", "ns", "image-contains")
    message = str(caught.value)
    assert message.startswith("3 invalid image(s)")
    assert all(f"images[{i}]" in message for i in (1, 2, 3)) and "control characters" in message


def test_validation_needs_a_label_and_a_list() -> None:
    with pytest.raises(InvalidTaskError, match="no label"):
        plan_image_tasks([URL], None, "ns", "image-contains")
    with pytest.raises(InvalidTaskError, match="give a list"):
        plan_image_tasks(URL, "person", "ns", "image-contains")


def test_long_error_lists_are_summarised() -> None:
    with pytest.raises(InvalidTaskError, match=r"\.\.\. and 30 more"):
        plan_image_tasks([f"ftp://h/{i}.jpg" for i in range(50)], "person", "ns", "image-contains")


def test_s3_uris_become_presigned_urls_that_fetch_the_object(s3_client) -> None:
    client = s3_client()
    client.create_bucket(Bucket="frames")
    client.put_object(Bucket="frames", Key="cam1/0001.jpg", Body=b"jpeg-bytes")
    tasks = plan_image_tasks(["s3://frames/cam1/0001.jpg", URL], "person", "ns", "image-contains")

    presigned = presign_s3_urls(tasks, client, expires_in=3600)

    assert list(presigned) == ["s3://frames/cam1/0001.jpg"]
    url = presigned["s3://frames/cam1/0001.jpg"]
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
    assert requests.get(url, timeout=10).content == b"jpeg-bytes"


def test_presigned_urls_over_400_characters_are_refused_without_leaking_them(s3_client) -> None:
    client = s3_client(aws_session_token="token-" + "t" * 300)
    tasks = plan_image_tasks(["s3://frames/cam1/0001.jpg"], "person", "ns", "image-contains")
    with pytest.raises(InvalidTaskError) as caught:
        presign_s3_urls(tasks, client, expires_in=3600)
    message = str(caught.value)
    assert "s3://frames/cam1/0001.jpg: its presigned URL has" in message
    assert "Signature" not in message and "token-" not in message


@pytest.mark.parametrize("operator_class", ["ImageContainsOperator", "ImageContainsSensor"])
def test_templated_fields_keep_their_constructor_argument_names(operator_class: str) -> None:
    import inspect

    from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
    from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor

    cls = {"ImageContainsOperator": ImageContainsOperator, "ImageContainsSensor": ImageContainsSensor}[operator_class]
    parameters = inspect.signature(cls.__init__).parameters
    from airflow_provider_imagecontains.prescreen import PreScreen

    # The pre-screen's templated settings live on its PreScreen object (issue 22), which must be one.
    values = {
        field: PreScreen(scorer="prescreen_scorers.ShirtScorer") if field == "prescreen" else f"value-of-{field}"
        for field in cls.template_fields
    }
    required = {"images": ["https://x.org/a.jpg"]} if cls is ImageContainsOperator else {}
    operator = cls(task_id="t", **{**required, **values})
    for field, value in values.items():
        assert field in parameters, field
        assert getattr(operator, field) == value, field
