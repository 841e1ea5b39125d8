"""The Prolific client against the fake Prolific over loopback: every call's shape, and every error path."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest
from fake_prolific import TOKEN, FakeProlific

from imagecontains_gateway.prolific_client import (
    AWAITING_REVIEW,
    COMPLETION_URL,
    ProlificAuthError,
    ProlificClient,
    ProlificInsufficientFunds,
    ProlificRequestError,
    ProlificUnavailable,
)

STUDY_URL = (
    "https://gateway.example.com/prolific/start?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}"
    "&SESSION_ID={{%SESSION_ID%}}"
)


@pytest.fixture
def fake() -> Iterator[FakeProlific]:
    with FakeProlific(balance_cents=10_000) as fake:
        yield fake


def client_of(fake: FakeProlific, token: str = TOKEN, **overrides: float) -> ProlificClient:
    settings = {"max_attempts": 3, "backoff_seconds": 0.01, "max_wait_seconds": 2.0, "timeout": 5.0, **overrides}
    return ProlificClient(token, fake.api_url, **settings)  # type: ignore[arg-type]


def create(client: ProlificClient, places: int = 3, reward: float = 150, key: str = "imagecontains-study-1") -> str:
    study = client.create_study(
        name="Does this image contain the object?",
        internal_name=key,
        description="Look at 20 images and say whether each contains the named object.",
        external_study_url=STUDY_URL,
        completion_code="C0DE1234",
        total_available_places=places,
        reward=reward,
        estimated_completion_time=5,
        maximum_allowed_time=30,
        project="fake-project",
    )
    return study.id


def test_a_study_from_draft_to_paid_participants(fake: FakeProlific) -> None:
    client = client_of(fake)
    assert client.me()["id"] == "fake-researcher"
    assert client.study_cost(150, 3) == pytest.approx(3 * 150 * 1.428)
    study_id = create(client)
    draft = fake.studies[study_id]
    assert draft["status"] == "UNPUBLISHED" and draft["prolific_id_option"] == "url_parameters"
    assert draft["completion_codes"] == [
        {"code": "C0DE1234", "code_type": "COMPLETED", "actions": [{"action": "MANUALLY_REVIEW"}]}
    ]
    assert draft["reward"] == 150 and draft["maximum_allowed_time"] == 30
    # A lost create is found again by its internal name.
    found = client.find_study("imagecontains-study-1", project="fake-project")
    assert found is not None and found.id == study_id
    assert (found.status, found.total_available_places) == ("UNPUBLISHED", 3)
    assert client.find_study("imagecontains-study-2") is None
    assert [s.id for s in client.list_studies(status="UNPUBLISHED")] == [study_id]

    assert client.transition_study(study_id, "PUBLISH").status == "ACTIVE"
    sessions = [fake.start_submission(study_id, f"participant-{n}") for n in range(3)]
    url = fake.participant_url(sessions[0])
    assert url.endswith(f"PROLIFIC_PID=participant-0&STUDY_ID={study_id}&SESSION_ID={sessions[0]}")
    arrived = client.get_submission(sessions[0])
    assert (arrived.participant_id, arrived.study_id, arrived.status) == ("participant-0", study_id, "ACTIVE")
    for session in sessions[:2]:
        fake.complete_submission(session, "C0DE1234")
    fake.return_submission(sessions[2])

    waiting = client.list_submissions(study_id, status=AWAITING_REVIEW)
    assert sorted(s.id for s in waiting) == sorted(sessions[:2])
    assert {s.participant_id for s in waiting} == {"participant-0", "participant-1"}
    approved = client.approve_submission(sessions[0])
    assert approved.status == "APPROVED"
    client.approve_submission(sessions[0])  # idempotent at Prolific: the second is ignored
    assert fake.effects[("approve", sessions[0])] == 1

    # More places, pause and start again, bonuses set up then paid, and what all of it cost.
    assert client.update_study(study_id, total_available_places=5).total_available_places == 5
    assert client.transition_study(study_id, "PAUSE").status == "PAUSED"
    assert client.transition_study(study_id, "START").status == "ACTIVE"
    bulk = client.create_bonus_payments(study_id, {sessions[0]: 75})
    assert bulk.amount == pytest.approx(75) and bulk.total_amount == pytest.approx(75 * 1.428)
    assert fake.effects[("pay", bulk.id)] == 0  # set up is not paid
    client.pay_bonus_payments(bulk.id)
    assert client.get_submission(sessions[0]).bonus_payments == (75.0,)
    assert client.transition_study(study_id, "STOP").status == "COMPLETED"
    assert fake.spent_cents == pytest.approx(150 * 1.428 + 75 * 1.428)


def test_a_full_study_awaits_review_then_completes_and_more_places_reopen_it(fake: FakeProlific) -> None:
    client = client_of(fake)
    study_id = create(client, places=1)
    client.transition_study(study_id, "PUBLISH")
    session = fake.start_submission(study_id)
    fake.complete_submission(session, "C0DE1234")
    assert client.get_study(study_id).status == "AWAITING REVIEW"
    client.approve_submission(session)
    assert client.get_study(study_id).status == "COMPLETED"
    assert client.update_study(study_id, total_available_places=2).status == "ACTIVE"


def test_lists_are_read_to_the_last_page(fake: FakeProlific) -> None:
    client = client_of(fake)
    study_id = create(client, places=7)
    client.transition_study(study_id, "PUBLISH")
    sessions = [fake.start_submission(study_id) for _ in range(7)]
    for session in sessions[:5]:
        fake.complete_submission(session, "C0DE1234")
    assert sorted(s.id for s in client.list_submissions(study_id, page_size=2)) == sorted(sessions)
    assert len(client.list_submissions(study_id, status=AWAITING_REVIEW, page_size=2)) == 5
    assert fake.requests[("GET", "/api/v1/submissions/")] == 4 + 3  # 7 in pages of 2, then 5 in pages of 2
    assert client.list_submissions(study_id, status="TIMED-OUT") == []


def test_a_wrong_token_is_an_auth_error_that_names_no_token(
    fake: FakeProlific, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-0f9e8d7c6b"
    with pytest.raises(ProlificAuthError, match="401 Unauthorized") as refused:
        client_of(fake, wrong).me()
    assert fake.requests[("GET", "/api/v1/users/me/")] == 1  # never retried
    fake.inject(403, title="Forbidden")
    with pytest.raises(ProlificAuthError, match="403"):
        client_of(fake).create_bonus_payments("study", {"s": 1})
    assert wrong not in str(refused.value) and wrong not in caplog.text
    with pytest.raises(ProlificAuthError, match="No Prolific API token"):
        ProlificClient("  ", fake.api_url)
    with pytest.raises(ValueError, match="expected https://"):
        ProlificClient(TOKEN, "http://api.prolific.com")


def test_throttling_is_retried_after_retry_after(fake: FakeProlific) -> None:
    fake.inject(429, retry_after=1, path="/studies/")
    client = client_of(fake)
    started = time.monotonic()
    study_id = create(client)  # a create is resent after a 429: it never arrived
    assert time.monotonic() - started >= 1.0
    assert fake.requests[("POST", "/api/v1/studies/")] == 2 and len(fake.studies) == 1 and study_id in fake.studies


def test_server_errors_are_retried_a_bounded_number_of_times(fake: FakeProlific) -> None:
    client = client_of(fake)
    fake.inject(503, times=2, path="/users/me/")
    assert client.me()["id"] == "fake-researcher"
    fake.inject(500, times=10, path="/users/me/")
    with pytest.raises(ProlificUnavailable, match="500 Internal Server Error") as outage:
        client.me()
    assert outage.value.status == 500
    assert fake.requests[("GET", "/api/v1/users/me/")] == 3 + 3


def test_a_request_prolific_refuses_is_never_retried_and_carries_its_message(fake: FakeProlific) -> None:
    client = client_of(fake)
    study_id = create(client)
    with pytest.raises(ProlificRequestError, match="Cannot PAUSE a study that is UNPUBLISHED") as refused:
        client.transition_study(study_id, "PAUSE")
    assert refused.value.status == 400
    assert fake.requests[("POST", f"/api/v1/studies/{study_id}/transition/")] == 1
    with pytest.raises(ProlificRequestError, match="404 Not Found - No submission nobody"):
        client.get_submission("nobody")
    with pytest.raises(ProlificRequestError, match="did not take part in the study: stranger"):
        client.create_bonus_payments(study_id, {"stranger": 100})
    with pytest.raises(ProlificRequestError, match=r"under the minimum of 6\.00 an hour"):
        create(client, reward=40)  # 40 pence for 5 minutes: 4.80 an hour
    with pytest.raises(ValueError, match="Invalid study action"):
        client.transition_study(study_id, "APPROVE")


def test_a_balance_that_cannot_pay_is_insufficient_funds(fake: FakeProlific) -> None:
    client = client_of(fake)
    study_id = create(client, places=100)  # 100 x 150 x 1.428 cents > the 100.00 balance
    with pytest.raises(ProlificInsufficientFunds, match="Insufficient funds") as poor:
        client.transition_study(study_id, "PUBLISH")
    assert poor.value.status == 400 and client.get_study(study_id).status == "UNPUBLISHED"
    assert fake.spent_cents == 0 and fake.available_cents == 10_000


def test_a_payment_whose_answer_was_lost_is_not_sent_again(fake: FakeProlific) -> None:
    client = client_of(fake)
    study_id = create(client)
    client.transition_study(study_id, "PUBLISH")
    session = fake.start_submission(study_id)
    bulk = client.create_bonus_payments(study_id, {session: 150})
    fake.inject(502, path="/pay/", after_effect=True)
    with pytest.raises(ProlificUnavailable, match="502"):
        client.pay_bonus_payments(bulk.id)
    assert (
        fake.effects[("pay", bulk.id)] == 1
        and fake.requests[("POST", f"/api/v1/bulk-bonus-payments/{bulk.id}/pay/")] == 1
    )
    assert fake.spent_cents == pytest.approx(150 * 1.428)


def test_a_retried_transition_that_had_arrived_is_no_error(fake: FakeProlific) -> None:
    client = client_of(fake)
    study_id = create(client)
    fake.inject(502, path="/transition/", after_effect=True)
    assert client.transition_study(study_id, "PUBLISH").status == "ACTIVE"
    assert fake.effects[("publish", study_id)] == 1


def test_no_answer_is_unavailable_and_names_no_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ProlificClient(TOKEN, f"http://127.0.0.1:{port}", max_attempts=2, backoff_seconds=0.01, timeout=2)
    with pytest.raises(ProlificUnavailable, match="did not answer GET /api/v1/users/me/") as down:
        client.me()
    assert TOKEN not in str(down.value) and TOKEN not in repr(client) and TOKEN not in caplog.text


def test_bonuses_are_sent_as_decimals_of_the_currency(fake: FakeProlific) -> None:
    client = client_of(fake)
    study_id = create(client)
    client.transition_study(study_id, "PUBLISH")
    session = fake.start_submission(study_id)
    assert client.create_bonus_payments(study_id, {session: 5}).amount == pytest.approx(5)  # "0.05", not 5 pounds
    with pytest.raises(ValueError, match="positive whole cents"):
        client.create_bonus_payments(study_id, {session: 0})
    assert COMPLETION_URL.format(code="C0DE1234") == "https://app.prolific.com/submissions/complete?cc=C0DE1234"
