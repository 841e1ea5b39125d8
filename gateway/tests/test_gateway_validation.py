"""The gateway's input rules against the shared cases (contract/validation_cases.json), the table the provider's
tests check the provider's own rules against: the two sides cannot drift apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_server import signed, task_path

from imagecontains_gateway.validation import IMAGE_CONTAINS, InvalidTaskError, validate_task_input, validate_task_name

CASES = json.loads((Path(__file__).resolve().parents[2] / "contract" / "validation_cases.json").read_text())
NAMES, INPUTS = CASES["task_names"], CASES["image_contains_inputs"]


def short(value: object) -> str:
    return repr(value)[:40]


@pytest.mark.parametrize("name", NAMES["valid"], ids=short)
def test_valid_task_names_pass(name) -> None:
    assert validate_task_name(name) == name


@pytest.mark.parametrize("name", NAMES["invalid"], ids=short)
def test_invalid_task_names_are_refused(name) -> None:
    with pytest.raises(InvalidTaskError, match="Invalid task name"):
        validate_task_name(name)


@pytest.mark.parametrize("task_input", INPUTS["valid"], ids=short)
def test_valid_inputs_pass(task_input) -> None:
    assert validate_task_input(IMAGE_CONTAINS, task_input) == task_input


@pytest.mark.parametrize("task_input", INPUTS["invalid"], ids=short)
def test_invalid_inputs_are_refused(task_input) -> None:
    with pytest.raises(InvalidTaskError, match="Invalid "):
        validate_task_input(IMAGE_CONTAINS, task_input)


def test_the_api_answers_each_case_as_the_rules_say(crowd_server) -> None:
    server = crowd_server()
    for number, task_input in enumerate(INPUTS["invalid"]):
        response = signed(
            server, "PUT", task_path(server, f"bad-{number}", "image-contains-test"), {"input": task_input}
        )
        assert (response.status_code, response.json()["code"]) == (400, "InvalidInput"), task_input
    for number, task_input in enumerate(INPUTS["valid"]):
        response = signed(
            server, "PUT", task_path(server, f"good-{number}", "image-contains-test"), {"input": task_input}
        )
        assert response.status_code == 201, (task_input, response.text)
