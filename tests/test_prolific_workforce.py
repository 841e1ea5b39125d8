"""The Prolific workforce end to end over loopback: the hook puts tasks on a local server (``--workforce prolific``),
which runs a study on the fake Prolific (tests/fake_prolific.py); simulated participants follow the study URL over
HTTP, answer their batch on the participant pages and are sent back with the completion code; the server approves
their submissions, once, and the tasks complete. Also: a restart in the middle, refusals at the start page,
returned submissions, errors from Prolific, and the supervised loop."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fake_prolific import TOKEN, FakeProlific
from prolific_participants import (
    ACCOUNT,
    BATCH,
    IMAGES,
    Participant,
    prolific_server,
    truth,
    wait_until,
)
from requests_aws4auth import AWS4Auth

from airflow_provider_imagecontains.exceptions import InvalidTaskError
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from imagecontains_gateway.__main__ import config_from_args, parse_args
from imagecontains_gateway.__main__ import main as server_main
from imagecontains_gateway.app import CrowdServerApp
from imagecontains_gateway.config import DEMO_ACCOUNT, Account
from imagecontains_gateway.prolific import STUDY_URL_QUERY
from imagecontains_gateway.store import TaskStore
from imagecontains_gateway.testing import LocalCrowdServer


@pytest.fixture
def fake() -> Iterator[FakeProlific]:
    with FakeProlific() as fake:
        yield fake


def connect(monkeypatch: pytest.MonkeyPatch, server: LocalCrowdServer) -> ImageContainsHook:
    monkeypatch.setenv("AIRFLOW_CONN_IMAGECONTAINS_DEFAULT", json.dumps(server.airflow_connection()))
    return ImageContainsHook()


def put_images(hook: ImageContainsHook, images: list[str], label: str = "person") -> list[str]:
    names = [f"frame-{n}" for n in range(len(images))]
    for name, url in zip(names, images, strict=True):
        hook.put_task("image-contains", name, {"image": {"url": url}, "target": {"label": label}})
    return names


def approvals(fake: FakeProlific) -> Counter[str]:
    return Counter({key[1]: n for key, n in fake.effects.items() if key[0] == "approve"})


def bonus_payments(fake: FakeProlific) -> Counter[str]:
    return Counter({key[1]: n for key, n in fake.effects.items() if key[0] == "pay"})


def the_study(fake: FakeProlific) -> str:
    wait_until(lambda: any(s["status"] == "ACTIVE" for s in fake.studies.values()), what="a published study")
    (study_id,) = fake.studies
    return study_id


def test_participants_answer_batches_and_are_approved_once(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prolific_server(tmp_path, fake) as server:
        hook = connect(monkeypatch, server)
        names = put_images(hook, IMAGES)
        study_id = the_study(fake)
        study = fake.studies[study_id]
        assert study["external_study_url"] == f"{server.endpoint_url}/prolific/start?{STUDY_URL_QUERY}"
        assert study["completion_codes"][0]["actions"] == [{"action": "MANUALLY_REVIEW"}]
        participants = []
        while any(hook.get_task("image-contains", name)["state"] == "processing" for name in names):
            assert len(participants) < 12, "the tasks should finish within a dozen batches"
            participant = Participant(fake, study_id, f"pid{len(participants):03d}")
            participant.submit(participant.take_part())
            participants.append(participant)
        for name, url in zip(names, IMAGES, strict=True):
            task = hook.get_task("image-contains", name)
            assert task["state"] == "completed", task
            assert task["result"]["containsTarget"] == truth(url, "person")
        wait_until(lambda: len(approvals(fake)) == len(participants), what="every submission approved")
        time.sleep(0.3)  # more review cycles: nothing is approved twice
        assert approvals(fake) == Counter(p.session_id for p in participants)
        assert len(fake.studies) == 1, "one long-lived study, not one per image"
        wait_until(lambda: fake.studies[study_id]["status"] in ("PAUSED", "COMPLETED"), what="no more participants")
        workers = {worker for task in server.tasks() for worker, _ in task["answers"]}
        assert workers <= {f"prolific:{p.pid}" for p in participants}
        assert spend(server) == pytest.approx(fake.spent_cents / 100, abs=1e-4), "the dashboard's spend is Prolific's"


def spend(server: LocalCrowdServer) -> float:
    """What the account was charged (its starting balance less its balance), in dollars."""
    with sqlite3.connect(server.db_path) as db:
        (microdollars,) = db.execute("SELECT microdollars FROM balances WHERE account = ?", (ACCOUNT,)).fetchone()
    return server.config.starting_balance - microdollars / 1e6


def dashboard_figures(server: LocalCrowdServer) -> dict[str, Any]:
    """The figures the requester's dashboard shows (``/dashboard/data``, signed in with a dashboard token)."""
    dashboard = requests.Session()
    token = server.issue_token("dashboard", ACCOUNT)
    dashboard.post(f"{server.endpoint_url}/signin", data={"token": token}, timeout=30).raise_for_status()
    figures: dict[str, Any] = dashboard.get(f"{server.endpoint_url}/dashboard/data", timeout=30).json()
    return figures


def test_a_restart_in_the_middle_loses_nothing_and_pays_nothing_twice(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Assumed 0.05 s per answer at 3600/hour: 20 cents a place; participants take 0.1 s or more: a top-up is due.
    server = prolific_server(tmp_path, fake, prolific_seconds_per_answer=0.05, prolific_hourly_rate=3600.0)
    with server:
        hook = connect(monkeypatch, server)
        names = put_images(hook, IMAGES[:4])
        study_id = the_study(fake)
        first = Participant(fake, study_id, "pid-first")
        page = first.take_part(questions=2, seconds_per_answer=0.1)
        server.kill()  # no graceful shutdown: the question held and the loop's state in memory are gone
        server.start()
        page = first.get(page.url)  # the participant reloads: the batch goes on where it was
        assert f"Question 3 of {BATCH}" in page.text, page.text
        first.submit(first.go_on(page, seconds_per_answer=0.1))
        participants = [first]
        while any(hook.get_task("image-contains", name)["state"] == "processing" for name in names):
            assert len(participants) < 12
            participant = Participant(fake, study_id, f"pid{len(participants):03d}")
            participant.submit(participant.take_part(seconds_per_answer=0.1))
            participants.append(participant)
            if len(participants) == 2:
                server.restart()
        wait_until(lambda: len(approvals(fake)) == len(participants), what="every submission approved")
        wait_until(lambda: len(bonus_payments(fake)) == len(participants), what="a top-up bonus for everyone")
        server.restart()
        time.sleep(0.5)
        assert len(fake.studies) == 1, "found again after each restart: no second study"
        assert approvals(fake) == Counter(p.session_id for p in participants), "each approved once"
        assert set(bonus_payments(fake).values()) == {1}, "each bonus paid once"
        for name in names:
            assert hook.get_task("image-contains", name)["state"] == "completed"
        assert spend(server) == pytest.approx(fake.spent_cents / 100, abs=1e-4)


def test_a_study_created_before_a_crash_hid_its_id_is_found_not_created_again(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prolific_server(tmp_path, fake) as server:
        put_images(connect(monkeypatch, server), IMAGES[:2])
        the_study(fake)
    # As if the server died between Prolific creating the study and its answer being stored.
    with sqlite3.connect(server.db_path) as db:
        db.execute("UPDATE prolific_studies SET study_id = NULL")
        db.execute("UPDATE paid_calls SET state = 'pending', result = NULL WHERE kind = 'prolific_create_study'")
    with server:
        wait_until(
            lambda: (
                sqlite3.connect(server.db_path).execute("SELECT study_id FROM prolific_studies").fetchone()[0]
                is not None
            ),
            what="the study's id found again",
        )
    assert len(fake.studies) == 1
    assert fake.requests[("POST", "/api/v1/studies/")] == 1


def test_a_lost_answer_to_the_study_creation_does_not_make_a_second_study(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.inject(503, method="POST", path="/api/v1/studies/", after_effect=True)
    with prolific_server(tmp_path, fake) as server:
        put_images(connect(monkeypatch, server), IMAGES[:2])
        the_study(fake)
        time.sleep(0.3)
    assert len(fake.studies) == 1


def test_the_start_page_refuses_what_prolific_does_not_vouch_for(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prolific_server(tmp_path, fake) as server:
        put_images(connect(monkeypatch, server), IMAGES[:4])
        study_id = the_study(fake)
        honest = Participant(fake, study_id, "pid-honest")
        cases = {
            "someone else's submission": honest.start_url().replace("pid-honest", "pid-mallory"),
            "another study": honest.start_url().replace(study_id, "0" * 24),
            "an incomplete link": honest.start_url().split("&SESSION_ID=")[0],
            "a submission Prolific does not know": honest.start_url().replace(honest.session_id, "f" * 24),
        }
        for what, url in cases.items():
            page = honest.get(url)
            assert page.status in (400, 403, 404), what
            assert 'id="refused"' in page.text and 'id="question"' not in page.text, what
        returned = Participant(fake, study_id, "pid-returned")
        fake.return_submission(returned.session_id)
        page = returned.get(returned.start_url())
        assert page.status == 403 and "active" in page.text
        assert 'id="question"' in honest.get(honest.start_url()).text


def test_a_returned_submission_gives_its_question_back(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prolific_server(tmp_path, fake, gold_share=0.0) as server:
        put_images(connect(monkeypatch, server), IMAGES[:1])
        study_id = the_study(fake)
        leaver = Participant(fake, study_id, "pid-leaver")
        held = leaver.get(leaver.start_url())
        assert held.field(r'<img class="frame" src="([^"]+)"') == IMAGES[0]
        fake.return_submission(leaver.session_id)
        wait_until(
            lambda: sqlite3.connect(server.db_path).execute("SELECT claimed_by FROM tasks").fetchone()[0] is None,
            what="the question given back",
        )
        newcomer = Participant(fake, study_id, "pid-newcomer")
        page = newcomer.get(newcomer.start_url())
        assert page.field(r'<img class="frame" src="([^"]+)"') == IMAGES[0]
        assert leaver.get(held.url).status == 401, "a returned submission answers no more"


def test_a_refused_token_stops_the_start_naming_the_cause(tmp_path: Any, fake: FakeProlific) -> None:
    fake.token = "another-token"
    with pytest.raises(ValueError, match=r"Prolific refused the API token \(.*401"):
        CrowdServerApp(prolific_server(tmp_path, fake).config, str(tmp_path / "crowd.db"))


def test_the_command_line_takes_the_token_from_the_environment_only(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--workforce", "prolific", "--prolific-account", ACCOUNT, "--prolific-api-url", fake.api_url]
    flags += ["--db", str(tmp_path / "crowd.db"), "--public-url", "http://127.0.0.1:8787"]
    monkeypatch.delenv("PROLIFIC_TOKEN", raising=False)
    with pytest.raises(SystemExit, match=r"No Prolific API token: set \$PROLIFIC_TOKEN"):
        server_main(flags)
    with pytest.raises(SystemExit):
        server_main([*flags, "--prolific-token", TOKEN])
    assert "unrecognized arguments: --prolific-token" in capsys.readouterr().err
    monkeypatch.setenv("PROLIFIC_TOKEN", TOKEN)
    config = config_from_args(parse_args(flags))
    assert config.prolific_token == TOKEN and TOKEN not in repr(config)
    with pytest.raises(ValueError, match="public_url"):
        config_from_args(parse_args([*flags[:-1], "http://crowd.example.com"]))


def test_a_study_prolific_refuses_fails_its_tasks_once_with_the_reason(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.inject(400, method="POST", path="/api/v1/studies/", title="Bad Request")
    with prolific_server(tmp_path, fake) as server:
        hook = connect(monkeypatch, server)
        names = put_images(hook, IMAGES[:2])
        wait_until(lambda: all(hook.get_task("image-contains", n)["state"] == "failed" for n in names), what="fail")
        problem = hook.get_task("image-contains", names[0])["problemDetails"]
        assert problem["code"] == "ProlificRefused" and "Prolific refused this server's study" in problem["message"]
        hook.put_task("image-contains", "later", {"image": {"url": IMAGES[2]}, "target": {"label": "person"}})
        wait_until(lambda: hook.get_task("image-contains", "later")["state"] == "failed", what="the later task failed")
    assert fake.requests[("POST", "/api/v1/studies/")] == 1, "no retry loop"
    assert not fake.studies and spend(server) == 0


def test_without_funds_tasks_fail_insufficient_funds(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prolific_server(tmp_path, fake, starting_balance=0.01) as server:
        hook = connect(monkeypatch, server)
        names = put_images(hook, IMAGES[:2])
        wait_until(lambda: all(hook.get_task("image-contains", n)["state"] == "failed" for n in names), what="fail")
        assert hook.get_task("image-contains", names[0])["problemDetails"]["code"] == "InsufficientFunds"
    assert not fake.studies, "nothing asked of Prolific"


def test_when_prolifics_balance_cannot_pay_tasks_fail_insufficient_funds(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeProlific(balance_cents=5.0) as poor, prolific_server(tmp_path, poor) as server:
        hook = connect(monkeypatch, server)
        names = put_images(hook, IMAGES[:2])
        wait_until(lambda: all(hook.get_task("image-contains", n)["state"] == "failed" for n in names), what="fail")
        assert hook.get_task("image-contains", names[0])["problemDetails"]["code"] == "InsufficientFunds"
        assert all(study["status"] == "UNPUBLISHED" for study in poor.studies.values())


def test_a_dead_loop_says_so_and_takes_no_more_paid_work(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with prolific_server(tmp_path, fake) as server:
        hook = connect(monkeypatch, server)
        put_images(hook, IMAGES[:1])
        study_id = the_study(fake)
        late = Participant(fake, study_id, "pid-late")
        fake.token = "revoked"
        wait_until(lambda: "The Prolific loop stopped" in caplog.text, what="the loop's death logged")
        # One signed PUT (the hook would retry a 503 with backoff): refused, saying why.
        account = server.account
        refused = requests.put(
            f"{server.endpoint_url}/{ACCOUNT}/functions/image-contains/tasks/later",
            json={"input": {"image": {"url": IMAGES[1]}, "target": {"label": "person"}}},
            auth=AWS4Auth(account.access_key_id, account.secret_access_key, "us-east-1", "crowd"),
            timeout=30,
        )
        assert refused.status_code == 503 and "The Prolific loop stopped" in refused.json()["message"]
        assert late.get(late.start_url()).status == 503
        figures = dashboard_figures(server)
        assert any("The Prolific loop stopped" in problem for problem in figures["problems"])


def test_a_participant_who_finds_no_task_left_still_gets_a_batch_and_the_code(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prolific_server(tmp_path, fake, gold_share=0.0) as server:
        gold = [
            (f"https://gold.example.com/{'person' if n % 2 else 'empty'}-{n}.jpg", "person", bool(n % 2))
            for n in range(3)
        ]
        store = TaskStore(server.db_path)
        store.add_gold(gold)
        store.close()
        hook = connect(monkeypatch, server)
        names = put_images(hook, IMAGES[:4])
        study_id = the_study(fake)
        # Careful participants settle every task (two agreeing answers suffice at this prior) while places for
        # the answers expected at first remain.
        early = 0
        while any(hook.get_task("image-contains", name)["state"] == "processing" for name in names):
            participant = Participant(fake, study_id, f"pid-early{early}")
            participant.submit(participant.take_part())
            early += 1
        # A place more than the work needs (added on Prolific's site, or left when answers came quicker than
        # expected): its participant finds no task.
        fake.studies[study_id]["total_available_places"] += 1
        fake.studies[study_id]["status"] = "ACTIVE"
        late = Participant(fake, study_id, "pid-late")
        page = late.take_part()
        code = late.submit(page)
        assert "You answered 3 questions" in page.text, "a batch of the three gold questions, then the code"
        answered = sqlite3.connect(server.db_path).execute(
            "SELECT COUNT(*) FROM gold_answers WHERE worker = 'prolific:pid-late'"
        )
        assert answered.fetchone()[0] == 3 and code
        wait_until(lambda: fake.effects[("approve", late.session_id)] == 1, what="the gold batch approved")


def test_an_approval_prolific_refuses_is_reported_once_and_the_rest_go_on(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with prolific_server(tmp_path, fake) as server:
        put_images(connect(monkeypatch, server), IMAGES[:4])
        study_id = the_study(fake)
        first, second = (Participant(fake, study_id, f"pid-{n}") for n in range(2))
        fake.inject(400, method="POST", path=f"/api/v1/submissions/{first.session_id}/transition/")
        first.submit(first.take_part())
        wait_until(lambda: "approve it by hand" in caplog.text, what="the refusal reported")
        second.submit(second.take_part())
        wait_until(lambda: fake.effects[("approve", second.session_id)] == 1, what="the next one approved")
        time.sleep(0.3)
    assert caplog.text.count("approve it by hand") == 1, "reported once, not retried in a loop"
    assert fake.requests[("POST", f"/api/v1/submissions/{first.session_id}/transition/")] == 1
    assert "The Prolific loop stopped" not in caplog.text


def test_only_listed_accounts_reach_participants_and_only_with_images_they_can_load(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    staff_only = Account("210987654321", "AKIASTAFFONLY0000001", "staff-only-secret")
    with prolific_server(tmp_path, fake, accounts=(DEMO_ACCOUNT, staff_only), gold_share=0.0) as server:
        hook = connect(monkeypatch, server)
        for url in ("http://frames.example.com/cam1.jpg", "https://cam1.local/frame.jpg", "https://10.0.0.7/f.jpg"):
            with pytest.raises(InvalidTaskError, match=r"Prolific participants|cannot reach"):
                hook.put_task("image-contains", "unreachable", {"image": {"url": url}, "target": {"label": "person"}})
        # The other account's surveillance frame stays with the staff, whatever its URL.
        auth = AWS4Auth(staff_only.access_key_id, staff_only.secret_access_key, "us-east-1", "crowd")
        frame = {"input": {"image": {"url": "http://cam1.local/frame.jpg"}, "target": {"label": "person"}}}
        url = f"{server.endpoint_url}/{staff_only.account_id}/functions/image-contains/tasks/frame"
        assert requests.put(url, json=frame, auth=auth, timeout=30).status_code == 201
        put_images(hook, IMAGES[:1])
        study_id = the_study(fake)
        assert len(fake.studies) == 1, "no study for the account not listed"
        participant = Participant(fake, study_id, "pid-public")
        page = participant.take_part()
        assert "cam1.local" not in page.text
        assert [
            worker
            for task in server.tasks()
            if task["account"] == staff_only.account_id
            for worker, _ in task["answers"]
        ] == []


def test_a_blocked_participant_is_asked_to_return_the_submission(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    with prolific_server(tmp_path, fake) as server:
        put_images(connect(monkeypatch, server), IMAGES[:4])
        study_id = the_study(fake)
        store = TaskStore(server.db_path)
        store.block("prolific:pid-spammer", "gold accuracy 0.20 < 0.60", time.time())
        store.close()
        spammer = Participant(fake, study_id, "pid-spammer")
        page = spammer.get(spammer.start_url())
        assert page.status == 403 and "return your submission" in page.text and 'id="question"' not in page.text


def test_a_participant_who_answered_nothing_gets_no_top_up(
    tmp_path: Any, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pay assumed for 0.05 s an answer at 3600 an hour; participants take 0.1 s: those who answer are due a top-up.
    settings = {"gold_share": 0.0, "prolific_seconds_per_answer": 0.05, "prolific_hourly_rate": 3600.0}
    with prolific_server(tmp_path, fake, **settings) as server:
        hook = connect(monkeypatch, server)
        names = put_images(hook, IMAGES[:2])
        study_id = the_study(fake)
        answering = []
        while any(hook.get_task("image-contains", name)["state"] == "processing" for name in names):
            participant = Participant(fake, study_id, f"pid-answering{len(answering)}")
            participant.submit(participant.take_part(seconds_per_answer=0.1))
            answering.append(participant)
        wait_until(lambda: len(bonus_payments(fake)) == len(answering), what="the answering participants' top-ups")
        # A place more than the work needs: its participant finds no task and no gold, and is approved.
        fake.studies[study_id]["total_available_places"] += 1
        fake.studies[study_id]["status"] = "ACTIVE"
        late = Participant(fake, study_id, "pid-late")
        page = late.take_part()
        assert "You answered 0 questions" in page.text, page.text
        late.submit(page)
        wait_until(lambda: fake.effects[("approve", late.session_id)] == 1, what="the late participant approved")
        time.sleep(0.3)  # more review cycles
    topped_up = [submission for bulk in fake.bulk_bonuses.values() for submission in bulk["amounts"]]
    assert sorted(topped_up) == sorted(p.session_id for p in answering), "a top-up for each who answered, none for late"
