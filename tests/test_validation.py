from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_imagecontains.exceptions import InvalidTaskError
from airflow_provider_imagecontains.validation import (
    IMAGE_CONTAINS,
    validate_image_contains_input,
    validate_task_input,
    validate_task_name,
)

# The table the gateway's tests check the gateway's own rules against (gateway/tests/test_gateway_validation.py).
SHARED = json.loads((Path(__file__).resolve().parent.parent / "contract" / "validation_cases.json").read_text())


def short(value: object) -> str:
    return repr(value)[:40]


def _input(url="https://example.com/a.jpg", label="dog"):
    return {"image": {"url": url}, "target": {"label": label}}


def test_valid_image_contains_input():
    assert validate_image_contains_input(_input()) == _input()


@pytest.mark.parametrize(
    ("task_input", "message"),
    [
        (None, "expected"),
        ({"image": {"url": "https://x.org/a"}}, "missing 'target'"),
        ({**_input(), "extra": 1}, "unknown key"),
        (_input(url="ftp://x.org/a"), "only absolute http"),
        (_input(url="javascript:alert(1)"), "only absolute http"),
        (_input(url="/relative/a.jpg"), "only absolute http"),
        (_input(url="https://x.org/" + "a" * 400), "at most 400"),
        (_input(url="https://x.org/a b.jpg"), "white space"),
        (_input(url="https://x.org/a\x00.jpg"), "control characters"),
        (_input(url="https://x.org/a\x1b[31m.jpg"), "control characters"),
        (_input(url="https://x.org/a\x7f.jpg"), "control characters"),
        (_input(url="https://x.org/a\x9b.jpg"), "control characters"),
        (_input(url="https://user:pass@x.org/a.jpg"), "user name or password"),  # more in the shared table
        (_input(label="\u202enosrep"), "invisible formatting"),  # shown reversed: "person"
        (_input(label="   "), "non-empty"),
        (_input(label=3), "non-empty"),
        ({"image": "https://x.org/a", "target": {"label": "dog"}}, "'image' must be an object"),
    ],
)
def test_invalid_image_contains_inputs(task_input, message):
    with pytest.raises(InvalidTaskError, match=message):
        validate_image_contains_input(task_input)


def test_other_functions_only_need_an_object():
    assert validate_task_input("sentiment-analysis", {"text": "hi"}) == {"text": "hi"}
    with pytest.raises(InvalidTaskError):
        validate_task_input("sentiment-analysis", ["not", "an", "object"])


@pytest.mark.parametrize("name", SHARED["task_names"]["valid"], ids=short)
def test_the_shared_valid_task_names_pass(name):
    assert validate_task_name(name) == name


@pytest.mark.parametrize("name", SHARED["task_names"]["invalid"], ids=short)
def test_the_shared_invalid_task_names_are_refused(name):
    with pytest.raises(InvalidTaskError, match="Invalid task name"):
        validate_task_name(name)


@pytest.mark.parametrize("task_input", SHARED["image_contains_inputs"]["valid"], ids=short)
def test_the_shared_valid_inputs_pass(task_input):
    assert validate_task_input(IMAGE_CONTAINS, task_input) == task_input


@pytest.mark.parametrize("task_input", SHARED["image_contains_inputs"]["invalid"], ids=short)
def test_the_shared_invalid_inputs_are_refused(task_input):
    with pytest.raises(InvalidTaskError, match="Invalid "):
        validate_task_input(IMAGE_CONTAINS, task_input)
