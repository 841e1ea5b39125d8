from __future__ import annotations

import pytest

from airflow_provider_imagecontains.exceptions import InvalidTaskError
from airflow_provider_imagecontains.validation import (
    validate_image_contains_input,
    validate_task_input,
    validate_task_name,
)


def _input(url="https://example.com/a.jpg", label="dog"):
    return {"image": {"url": url}, "target": {"label": label}}


@pytest.mark.parametrize("name", ["a", "A.b_c-9", "x" * 64])
def test_valid_task_names(name):
    assert validate_task_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "a/b", "é", None, 12, "a\n", ".", ".."])
def test_invalid_task_names_are_named_in_the_error(name):
    with pytest.raises(InvalidTaskError, match="Invalid task name"):
        validate_task_name(name)


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
        (_input(url="https://user:pass@x.org/a.jpg"), "user name or password"),
        (_input(url="https://token@x.org/a.jpg"), "user name or password"),
        (_input(url="https://x.org/\u202egpj.exe"), "invisible formatting"),
        (_input(label="\u202enosrep"), "invisible formatting"),  # shown reversed: "person"
        (_input(label="per\u200bson"), "invisible formatting"),  # zero-width space
        (_input(label="person\u2066"), "invisible formatting"),  # bidi isolate
        (_input(label="line\u2028break"), "invisible formatting"),
        (_input(label="tab\tlabel"), "control"),
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
