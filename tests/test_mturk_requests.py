"""The MTurk workforce's requests, checked against botocore's own MTurk service model (Stubber validates every
parameter), and the pieces they are made of: the HIT page, answers, fees and image URLs."""

from __future__ import annotations

import asyncio
import datetime
import html
import json
import time
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from airflow_provider_imagecontains.server.config import ServerConfig
from airflow_provider_imagecontains.server.mturk import (
    MTurkRequester,
    MTurkWorkforce,
    assignment_cost,
    fee_per_assignment,
    html_question,
    parse_answer,
    unreachable_image_reason,
)
from airflow_provider_imagecontains.server.service import Assignment, CrowdError, CrowdService
from airflow_provider_imagecontains.server.store import TaskStore
from tests.fake_mturk import HitPage

ANSWERS_XMLNS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"
ACCOUNT = "123456789012"
IMAGE = "https://images.example.com/frames/cam1-0001.jpg"


def answer_xml(value: str) -> str:
    return (
        f'<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="{ANSWERS_XMLNS}"><Answer>'
        f"<QuestionIdentifier>containsTarget</QuestionIdentifier><FreeText>{value}</FreeText></Answer>"
        "</QuestionFormAnswers>"
    )


def assignment(number: int, worker: str, value: str, status: str = "Submitted") -> dict[str, Any]:
    return {
        "AssignmentId": f"ASSIGNMENT{number:020d}",
        "WorkerId": worker,
        "HITId": "HIT1",
        "AssignmentStatus": status,
        "Answer": answer_xml(value),
    }


# The pieces


def test_html_question_escapes_image_and_label_and_posts_to_mturk() -> None:
    url = 'https://img.example.com/a.jpg?x="><script>alert(1)</script>&y=]]>'
    label = '<b>cat</b> & "dog" ]]>'
    question = html_question(url, label, "https://workersandbox.mturk.com/mturk/externalSubmit")
    assert question.count("]]>") == 1  # only the end of the CDATA section
    assert "<script>alert" not in question and "<b>cat" not in question
    parts = HitPage(question)
    assert parts.images == [url]
    assert parts.label == label
    assert parts.buttons == [("containsTarget", "yes"), ("containsTarget", "no"), ("containsTarget", "cant-tell")]
    assert parts.form_action == "https://workersandbox.mturk.com/mturk/externalSubmit"
    assert parts.hidden == {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE"}
    assert f'Does this image contain a <span class="label">{html.escape(label)}</span>?' in question
    assert 'Does this image contain an <span class="label">apple</span>?' in html_question(url, "apple", "")
    assert 'Does this image contain <span class="label">people</span>?' in html_question(url, "people", "")
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in question


@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("no", False), ("cant-tell", None), ("maybe", None)])
def test_parse_answer(value: str, expected: bool | None) -> None:
    assert parse_answer(answer_xml(value)) is expected


def test_fees_follow_mturk_pricing() -> None:
    assert fee_per_assignment(0.05, 9) == pytest.approx(0.01)  # the $0.01 minimum
    assert fee_per_assignment(0.50, 9) == pytest.approx(0.10)  # 20%
    assert fee_per_assignment(0.50, 10) == pytest.approx(0.20)  # 40% from 10 assignments on
    assert assignment_cost(0.50, 5) == pytest.approx(0.60)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8787/images/cam1/0001.jpg",
        "http://localhost/frame.png",
        "http://[::1]/frame.png",
        "http://10.1.2.3/frame.png",
        "http://192.168.0.10/frame.png",
        "http://169.254.169.254/latest/meta-data",
        "http://nas/frames/1.jpg",
        "http://camera.local/1.jpg",
        "http://0.0.0.0/1.jpg",
    ],
)
def test_local_image_urls_are_unreachable(url: str) -> None:
    reason = unreachable_image_reason(url)
    assert reason is not None and url in reason and "MTurk workers cannot reach" in reason


@pytest.mark.parametrize(
    "url", ["https://images.example.com/a.jpg", "https://bucket.s3.amazonaws.com/k.png", "http://8.8.8.8/a.jpg"]
)
def test_public_image_urls_are_reachable(url: str) -> None:
    assert unreachable_image_reason(url) is None


# Request shapes, one task's whole life through the workforce


@pytest.fixture
def mturk() -> Any:
    client = boto3.client(
        "mturk",
        region_name="us-east-1",
        endpoint_url="https://mturk-requester-sandbox.us-east-1.amazonaws.com",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",  # never sent: the Stubber answers
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def make_workforce(tmp_path: Any, client: Any, **overrides: Any) -> tuple[MTurkWorkforce, CrowdService]:
    config = ServerConfig(
        workforce="mturk", reward_per_answer=0.05, task_deadline_seconds=3600, confidence=0.95, **overrides
    )
    store = TaskStore(str(tmp_path / "crowd.db"))
    store.open_accounts([ACCOUNT], 10_000_000)
    service = CrowdService(store, config)
    return MTurkWorkforce(service, MTurkRequester(client, config)), service


def put(service: CrowdService, name: str, url: str = IMAGE, label: str = "person") -> int:
    body = json.dumps({"input": {"image": {"url": url}, "target": {"label": label}}}).encode()
    return service.put_task(ACCOUNT, "image-contains", name, body)[1].id


LIST = {"AssignmentStatuses": ["Submitted", "Approved"], "MaxResults": 100}
CREATE_HIT = {
    "MaxAssignments": 1,
    "AutoApprovalDelayInSeconds": 3600,
    "LifetimeInSeconds": ANY,
    "AssignmentDurationInSeconds": 600,
    "Reward": "0.05",
    "Title": "Does this image contain the object?",
    "Keywords": ANY,
    "Description": ANY,
    "Question": ANY,
    "RequesterAnnotation": ANY,
    "QualificationRequirements": [],
    "UniqueRequestToken": ANY,
}


def expect_assignments(stubber: Stubber, answers: list[tuple[str, str]], approved: int = 0) -> None:
    """ListAssignmentsForHIT answering ``answers`` [(worker, value)], the first ``approved`` of them approved."""
    found = [
        assignment(n, worker, value, "Approved" if n <= approved else "Submitted")
        for n, (worker, value) in enumerate(answers, 1)
    ]
    stubber.add_response(
        "list_assignments_for_hit", {"Assignments": found, "NumResults": len(found)}, {"HITId": "HIT1", **LIST}
    )


def test_a_task_from_hit_to_result_to_deleted_hit(tmp_path: Any, mturk: Any) -> None:
    client, stubber = mturk
    workforce, service = make_workforce(tmp_path, client)
    task_id = put(service, "frame-1")

    async def run() -> None:
        # The balance covers reward + fee: CreateHIT with one assignment, its question naming image and label.
        stubber.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
        stubber.add_response("create_hit", {"HIT": {"HITId": "HIT1"}}, CREATE_HIT)
        assert not await workforce.cycle()
        hit = workforce.hits.hit(task_id)
        assert hit is not None and (hit.hit_id, hit.assignments) == ("HIT1", 1)
        # One "yes", read over two pages and approved; one new worker is not enough: one more assignment.
        stubber.add_response(
            "list_assignments_for_hit",
            {"Assignments": [], "NextToken": "p2", "NumResults": 0},
            {"HITId": "HIT1", **LIST},
        )
        stubber.add_response(
            "list_assignments_for_hit",
            {"Assignments": [assignment(1, "WORKERA", "yes")], "NumResults": 1},
            {"HITId": "HIT1", "NextToken": "p2", **LIST},
        )
        stubber.add_response("get_account_balance", {"AvailableBalance": "9999.94"}, {})
        add = {"HITId": "HIT1", "NumberOfAdditionalAssignments": 1}
        stubber.add_response(
            "create_additional_assignments_for_hit", {}, {**add, "UniqueRequestToken": hit.token + "-2"}
        )
        stubber.add_response("approve_assignment", {}, {"AssignmentId": assignment(1, "", "")["AssignmentId"]})
        assert not await workforce.cycle()
        # "cant-tell" is no vote; then two more agreeing answers make three: confident at 0.95.
        answers = [("WORKERA", "yes"), ("WORKERB", "cant-tell"), ("WORKERC", "yes"), ("WORKERD", "yes")]
        for count in (2, 3, 4):
            expect_assignments(stubber, answers[:count], approved=count - 1)
            if count < 4:
                stubber.add_response("get_account_balance", {"AvailableBalance": "9999.00"}, {})
                stubber.add_response(
                    "create_additional_assignments_for_hit",
                    {},
                    {**add, "UniqueRequestToken": f"{hit.token}-{count + 1}"},
                )
            stubber.add_response("approve_assignment", {}, {"AssignmentId": assignment(count, "", "")["AssignmentId"]})
            assert not await workforce.cycle()
        task = service.store.get_by_id(task_id)
        assert (
            task is not None and task.state == "completed" and json.loads(task.result or "")["containsTarget"] is True
        )
        assert [worker for worker, _ in service.store.answers(task_id)] == [
            "mturk:WORKERA",
            "mturk:WORKERC",
            "mturk:WORKERD",
        ]
        # Four assignments of $0.05 + $0.01 fee each were charged to the account.
        assert service.store.balance(ACCOUNT) == 10_000_000 - 4 * 60_000
        # Deleting the finished task disposes of its HIT (nothing left to expire or approve).
        service.delete_task(ACCOUNT, "image-contains", "frame-1")
        expect_assignments(stubber, answers, approved=4)
        stubber.add_response("delete_hit", {}, {"HITId": "HIT1"})
        assert not await workforce.cycle()
        assert workforce.hits.hits() == []
        # Quality control may block a worker.
        stubber.add_response("create_worker_block", {}, {"WorkerId": "WORKERB", "Reason": "Wrong on gold questions."})
        await workforce.block_worker("mturk:WORKERB", "Wrong on gold questions.")
        await workforce.stop()

    asyncio.run(run())


def test_no_hit_when_the_balance_cannot_cover_reward_and_fee(tmp_path: Any, mturk: Any) -> None:
    client, stubber = mturk
    workforce, service = make_workforce(tmp_path, client, mturk_initial_assignments=3)
    first, second = put(service, "frame-1"), put(service, "frame-2")

    async def run() -> None:
        # 3 x ($0.05 + $0.01) = $0.18 per task: $0.30 covers one task, not two.
        stubber.add_response("get_account_balance", {"AvailableBalance": "0.30"}, {})
        stubber.add_response("create_hit", {"HIT": {"HITId": "HIT1"}}, {**CREATE_HIT, "MaxAssignments": 3})
        assert not await workforce.cycle()
        await workforce.stop()

    asyncio.run(run())
    assert service.store.get_by_id(first).state == "processing"  # type: ignore[union-attr]
    failed = service.store.get_by_id(second)
    assert (
        failed is not None
        and failed.state == "failed"
        and json.loads(failed.problem or "")["code"] == "InsufficientFunds"
    )
    assert workforce.hits.hit(second) is None


def test_expired_task_expires_its_hit(tmp_path: Any, mturk: Any) -> None:
    client, stubber = mturk
    workforce, service = make_workforce(tmp_path, client)
    task_id = put(service, "frame-1")

    async def run() -> None:
        stubber.add_response("get_account_balance", {"AvailableBalance": "10.00"}, {})
        stubber.add_response("create_hit", {"HIT": {"HITId": "HIT1"}}, CREATE_HIT)
        assert not await workforce.cycle()
        service.store.expire_due(time.time() + 7200, {"code": "Expired", "message": "late"})
        stubber.add_response(
            "update_expiration_for_hit",
            {},
            {"HITId": "HIT1", "ExpireAt": datetime.datetime.fromtimestamp(0, datetime.timezone.utc)},
        )
        assert not await workforce.cycle()
        assert not await workforce.cycle()  # closed once: no second UpdateExpirationForHIT
        await workforce.stop()

    asyncio.run(run())
    assert workforce.hits.hit(task_id).closed  # type: ignore[union-attr]


def test_hit_size_cap_ends_inconclusive(tmp_path: Any, mturk: Any) -> None:
    client, stubber = mturk
    workforce, service = make_workforce(tmp_path, client, max_answers_per_task=2, mturk_initial_assignments=2)
    task_id = put(service, "frame-1")

    async def run() -> None:
        stubber.add_response("get_account_balance", {"AvailableBalance": "10.00"}, {})
        stubber.add_response("create_hit", {"HIT": {"HITId": "HIT1"}}, {**CREATE_HIT, "MaxAssignments": 2})
        assert not await workforce.cycle()
        expect_assignments(stubber, [("WORKERA", "yes"), ("WORKERB", "no")])
        for number in (1, 2):
            stubber.add_response("approve_assignment", {}, {"AssignmentId": assignment(number, "", "")["AssignmentId"]})
        assert not await workforce.cycle()
        await workforce.stop()

    asyncio.run(run())
    task = service.store.get_by_id(task_id)
    assert task is not None and json.loads(task.problem or "")["code"] == "Inconclusive"


def test_resent_writes_find_what_the_first_attempt_did(tmp_path: Any, mturk: Any) -> None:
    """After a crash, CreateHIT and CreateAdditionalAssignmentsForHIT go out again with the same token: MTurk
    refuses them, and the workforce adopts the HIT / the assignments the first attempt made."""
    client, stubber = mturk
    workforce, service = make_workforce(tmp_path, client)
    task_id = put(service, "frame-1")
    requester = workforce.requester
    task = service.store.get_by_id(task_id)
    assert task is not None
    refused = {
        "service_error_code": "RequestError",
        "service_message": "There is already a HIT which exists with the same Unique Request Token (HITId: HIT1).",
    }
    stubber.add_client_error("create_hit", **refused, expected_params={**CREATE_HIT, "UniqueRequestToken": "tok"})
    stubber.add_response(
        "list_hits",
        {"HITs": [{"HITId": "HIT0", "RequesterAnnotation": "other"}], "NextToken": "p2"},
        {"MaxResults": 100},
    )
    stubber.add_response(
        "list_hits", {"HITs": [{"HITId": "HIT1", "RequesterAnnotation": "tok"}]}, {"MaxResults": 100, "NextToken": "p2"}
    )
    assert requester.create_hit("tok", IMAGE, "person", 1, 3600) == "HIT1"
    stubber.add_client_error("create_additional_assignments_for_hit", "RequestError", "Duplicate request token.")
    stubber.add_response("get_hit", {"HIT": {"HITId": "HIT1", "MaxAssignments": 2}}, {"HITId": "HIT1"})
    requester.add_assignments("HIT1", 1, 2, "tok-2")
    stubber.add_client_error(
        "approve_assignment", "RequestError", "This operation can be called with a status of: Submitted"
    )
    stubber.add_response(
        "get_assignment", {"Assignment": {"AssignmentId": "A1", "AssignmentStatus": "Approved"}}, {"AssignmentId": "A1"}
    )
    requester.approve("A1")
    # A refusal that is not a resend is still an error.
    stubber.add_client_error(
        "create_additional_assignments_for_hit", "RequestError", "Invalid maximum assignments increase."
    )
    stubber.add_response("get_hit", {"HIT": {"HITId": "HIT1", "MaxAssignments": 9}}, {"HITId": "HIT1"})
    with pytest.raises(Exception, match="RequestError"):
        requester.add_assignments("HIT1", 9, 10, "tok-10")


def test_put_refuses_images_mturk_workers_cannot_load(tmp_path: Any) -> None:
    store = TaskStore(str(tmp_path / "crowd.db"))
    service = CrowdService(store, ServerConfig(workforce="mturk"), unreachable_image_reason)
    with pytest.raises(CrowdError) as refused:
        put(service, "frame-1", url="http://127.0.0.1:8787/images/cam1/0001.jpg")
    assert refused.value.status == 400 and refused.value.code == "InvalidInput"
    assert "127.0.0.1" in refused.value.message and store.tasks() == []


def test_a_worker_blocked_by_quality_control_is_blocked_on_mturk_too(tmp_path: Any, mturk: Any) -> None:
    client, stubber = mturk
    workforce, service = make_workforce(tmp_path, client, block_below_accuracy=0.7)
    service.block_listeners.append(workforce.block_soon)  # as the server wires it
    service.store.add_gold([(f"https://gold.example/{n}.jpg", "person", n % 2 == 0) for n in range(3)])

    async def run() -> None:
        stubber.add_response("create_worker_block", {}, {"WorkerId": "WORKERB", "Reason": ANY})
        for n in range(3):  # wrong on every gold question
            gold = Assignment(n + 1, f"https://gold.example/{n}.jpg", "person", gold=True)
            service.submit_answer(gold, "mturk:WORKERB", n % 2 != 0)
        await asyncio.sleep(0.2)  # the block call runs in the background
        await workforce.stop()

    asyncio.run(run())
    assert service.store.is_blocked("mturk:WORKERB") and service.next_assignment("mturk:WORKERB") is None


@pytest.mark.parametrize("reward", [0.005, 0.055, 0.0])
def test_mturk_rewards_are_whole_cents(reward: float) -> None:
    with pytest.raises(ValueError, match="whole cents"):
        ServerConfig(workforce="mturk", reward_per_answer=reward)
    ServerConfig(workforce="simulated", reward_per_answer=reward)  # play money may be any amount
