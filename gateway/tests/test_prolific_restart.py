"""Every paid Prolific call exactly once when the gateway's process is killed in the middle of it.

A child process makes the paid calls through the write-ahead ledger (``ledger.py``) and the Prolific
client, against the fake Prolific running in this test's process, and is killed (``os._exit``) right after
Prolific did one of them and before the ledger heard back: the worst moment. Then the calls run again from
the same database, as a restarted gateway would: no second study, no second publication, approval or bonus.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fake_prolific import TOKEN, FakeProlific

from imagecontains_gateway.ledger import PaidCall, PaidCallLedger, UnresolvedPaidCall, idempotency_key
from imagecontains_gateway.prolific_client import PUBLISH, ProlificClient
from imagecontains_gateway.store import TaskStore

ACCOUNT = "123456789012"
PLACES, REWARD, BONUS = 2, 150, 30
STEPS = ("create_study", "publish", "approve", "bonus_setup", "bonus_pay")


def pay_everything(db: Path, api_url: str, kill_after: str | None = None) -> dict[str, Any]:
    """Create and publish the study, then approve every submission awaiting review and pay each a bonus,
    each call through the ledger; ``kill_after``: die as soon as Prolific did that step."""
    store = TaskStore(str(db))
    store.open_accounts([ACCOUNT], 100_000_000)
    ledger = PaidCallLedger(store)
    client = ProlificClient(TOKEN, api_url, max_attempts=2, backoff_seconds=0.01)

    def step(kind: str, send: Any) -> Any:
        def sending(request: dict[str, Any]) -> dict[str, Any]:
            result = send(request)
            if kind == kill_after:
                os._exit(9)
            return dict(result)

        return sending

    async def run() -> dict[str, Any]:
        async def once(kind: str, key: str, request: dict[str, Any], send: Any, find: Any) -> dict[str, Any]:
            return await ledger.call_once(key, kind, request, step(kind, send), find=find, run_blocking=inline)

        study_key = idempotency_key("create_study", "workforce-1")
        study = await once(
            "create_study",
            study_key,
            {"internal_name": study_key, "places": PLACES},
            lambda r: {"id": create_study(client, r["internal_name"], r["places"])},
            lambda call: _study_found(client, call),
        )
        study_id = study["id"]
        await once(
            "publish",
            idempotency_key("publish", study_id),
            {"study": study_id},
            lambda r: {"status": client.transition_study(r["study"], PUBLISH).status},
            lambda call: {"status": "ACTIVE"} if client.get_study(call.request["study"]).status == "ACTIVE" else None,
        )
        unresolved = []
        for submission in client.list_submissions(study_id):
            if submission.status not in ("AWAITING REVIEW", "APPROVED"):
                continue
            await once(
                "approve",
                idempotency_key("approve", submission.id),
                {"submission": submission.id},
                lambda r: {"status": client.approve_submission(r["submission"]).status},
                # Approving is idempotent at Prolific: sending it again is how it is looked up.
                lambda call: {"status": client.approve_submission(call.request["submission"]).status},
            )
            bulk = await once(
                "bonus_setup",
                idempotency_key("bonus_setup", submission.id),
                {"study": study_id, "submission": submission.id, "cents": BONUS},
                lambda r: {"id": client.create_bonus_payments(r["study"], {r["submission"]: r["cents"]}).id},
                lambda call: None,  # a bonus set up but never paid costs nothing: setting it up again is safe
            )
            try:
                await once(
                    "bonus_pay",
                    idempotency_key("bonus_pay", submission.id),
                    {"bulk": bulk["id"]},
                    lambda r: client.pay_bonus_payments(r["bulk"]) or {"paid": r["bulk"]},
                    None,  # not idempotent, and a payment cannot be looked up: never sent twice
                )
            except UnresolvedPaidCall as err:
                unresolved.append(err.call.kind)
        return {"study": study_id, "unresolved": unresolved}

    try:
        return asyncio.run(run())
    finally:
        store.close()


async def inline(function: Any, *args: Any) -> Any:
    return function(*args)


def create_study(client: ProlificClient, key: str, places: int) -> str:
    return client.create_study(
        name="Does this image contain the object?",
        internal_name=key,
        description="Answer 20 questions about images.",
        external_study_url="https://gateway.example.com/prolific/start?PROLIFIC_PID={{%PROLIFIC_PID%}}",
        completion_code="C0DE1234",
        total_available_places=places,
        reward=REWARD,
        estimated_completion_time=5,
    ).id


def _study_found(client: ProlificClient, call: PaidCall) -> dict[str, Any] | None:
    study = client.find_study(call.request["internal_name"])
    return {"id": study.id} if study else None


def killed_in(db: Path, fake: FakeProlific, step: str) -> None:
    here = str(Path(__file__).resolve().parent)
    child = f"""
        import sys
        sys.path.insert(0, {here!r})
        from pathlib import Path
        from test_prolific_restart import pay_everything
        pay_everything(Path({str(db)!r}), {fake.api_url!r}, kill_after={step!r})
    """
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(child)], capture_output=True, timeout=60)
    assert killed.returncode == 9, killed.stderr.decode()[-2000:]


def participants_answer(fake: FakeProlific) -> None:
    [study_id] = fake.studies
    for n in range(PLACES):
        fake.complete_submission(fake.start_submission(study_id, f"participant-{n}"), "C0DE1234")


@pytest.mark.parametrize("step", STEPS)
def test_a_gateway_killed_after_a_paid_call_makes_none_twice(tmp_path: Path, step: str) -> None:
    db = tmp_path / "gateway.db"
    with FakeProlific(balance_cents=10_000) as fake:
        if STEPS.index(step) >= STEPS.index("approve"):
            pay_everything(db, fake.api_url)  # the study is created and published; nobody has answered yet
            participants_answer(fake)
            killed_in(db, fake, step)
        else:
            killed_in(db, fake, step)
            pay_everything(db, fake.api_url)
            participants_answer(fake)
        done = pay_everything(db, fake.api_url)  # the restarted gateway

        [study_id] = fake.studies
        assert (
            done["study"] == study_id
            and fake.effects[("create_study", idempotency_key("create_study", "workforce-1"))] == 1
        )
        assert fake.effects[("publish", study_id)] == 1
        submissions = fake.study_submissions(study_id)
        assert [fake.effects[("approve", s["id"])] for s in submissions] == [1] * PLACES
        paid = [key for key, count in fake.effects.items() if key[0] == "pay" for _ in range(count)]
        # A payment killed in flight is not made again: it is reported for a person to settle.
        assert len(paid) == PLACES and len(set(paid)) == PLACES
        assert done["unresolved"] == (["bonus_pay"] if step == "bonus_pay" else [])
        assert fake.spent_cents == pytest.approx(PLACES * (REWARD + BONUS) * 1.428)
