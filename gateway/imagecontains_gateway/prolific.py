"""The Prolific workforce: paid participants answer on a page of this server (docs/prolific.md).

One long-lived study per account listed in ``prolific_accounts`` (Prolific discourages many small studies).
Its ``external_study_url`` brings a participant to ``/prolific/start``; the submission is checked with Prolific,
and the participant, worker ``prolific:<PID>``, answers up to ``prolific_batch_size`` questions (gold mixed in
by the quality policy) before being sent back to Prolific with the study's completion code.

A background loop, supervised (see :attr:`ProlificWorkforce.failure`), grows the study's places as the
outstanding answers need them, pauses the study when no work is left and starts it again when work arrives,
approves completed submissions whose answers are stored, and pays top-up bonuses when the measured time
made the pay fall under ``prolific_hourly_rate``. Nothing is rejected automatically.

Exactly once across crashes: every paid call goes through the write-ahead ledger (``ledger.py``), its intent
stored (and the account charged) before it is sent, and looked up at Prolific rather than resent after a crash.
A study's row, with its unique ``internal_name``, is stored before the study is created, so a crash before its
id came back finds it by that name instead of creating a second one; ``total_available_places`` is sent as an
absolute number; an approval is found by the submission's status; a bonus's id is stored before ``pay``, and a
pay whose outcome a crash hid is never resent. The account pays as Prolific charges: each approved place
(reward, fees and VAT, from Prolific's cost calculator) and each bonus's total.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.ledger import (
    ABANDONED,
    InsufficientBalance,
    PaidCallLedger,
    UnresolvedPaidCall,
    idempotency_key,
)
from imagecontains_gateway.prolific_client import (
    ACTIVE,
    APPROVED,
    AWAITING_REVIEW,
    COMPLETION_URL,
    PAUSE,
    PAUSED,
    PUBLISH,
    REJECTED,
    RETURNED,
    START,
    TIMED_OUT,
    UNPUBLISHED,
    ProlificAuthError,
    ProlificClient,
    ProlificError,
    ProlificInsufficientFunds,
    ProlificRequestError,
)
from imagecontains_gateway.reachability import unreachable_image_reason
from imagecontains_gateway.service import INSUFFICIENT_FUNDS, Assignment, CrowdError, CrowdService
from imagecontains_gateway.store import PROCESSING, to_microdollars
from imagecontains_gateway.validation import IMAGE_CONTAINS

log = logging.getLogger(__name__)

WORKER_PREFIX = "prolific:"
START_PATH = "/prolific/start"
# Prolific substitutes these placeholders in the study URL for each participant.
STUDY_URL_QUERY = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
# Submission statuses whose place Prolific gives to another participant (their claims go back to the queue).
PLACE_FREED = frozenset({RETURNED, TIMED_OUT, REJECTED})
# Answers a task is expected to need before the adjudicator decides, until finished tasks say otherwise.
EXPECTED_ANSWERS_PER_TASK = 3
# Participants' answers that count for the measured seconds per answer, the newest first.
_MEASURED_SESSIONS = 200
_MAX_BACKOFF_SECONDS = 300.0
# The kinds of paid calls this workforce makes through the ledger.
CREATE_STUDY, GROW, APPROVE, BONUS = "prolific_create_study", "prolific_places", "prolific_approve", "prolific_bonus"
# Problem of the tasks a study Prolific refused cannot serve.
PROLIFIC_REFUSED = "ProlificRefused"

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prolific_studies (
    account TEXT PRIMARY KEY,
    internal_name TEXT NOT NULL UNIQUE,
    study_id TEXT UNIQUE,
    completion_code TEXT NOT NULL,
    reward INTEGER NOT NULL,
    estimated_minutes INTEGER NOT NULL,
    places INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS prolific_sessions (
    session_id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL,
    participant TEXT NOT NULL,
    browser_hash TEXT,
    answered INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL DEFAULT 'ACTIVE',
    approved INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS prolific_sessions_by_study ON prolific_sessions (study_id);
"""


@dataclass(frozen=True)
class Study:
    """This server's record of one Prolific study (one per account)."""

    account: str
    internal_name: str
    study_id: str | None
    completion_code: str
    reward: int
    estimated_minutes: int
    places: int


@dataclass(frozen=True)
class Session:
    """A participant's submission as this server knows it."""

    session_id: str
    study_id: str
    participant: str
    answered: int
    started_at: float
    finished_at: float | None
    status: str
    approved: bool

    @property
    def worker(self) -> str:
        return WORKER_PREFIX + self.participant


def reward_cents(hourly_rate: float, batch_size: int, seconds_per_answer: float) -> int:
    """The reward per place, in the currency's minor unit, that pays ``hourly_rate`` for a batch."""
    return math.ceil(hourly_rate * 100 * batch_size * seconds_per_answer / 3600)


def estimated_minutes(batch_size: int, seconds_per_answer: float) -> int:
    return max(1, math.ceil(batch_size * seconds_per_answer / 60))


def study_url(public_url: str) -> str:
    """The ``external_study_url`` of every study: the start page with Prolific's placeholders."""
    return f"{public_url.rstrip('/')}{START_PATH}?{STUDY_URL_QUERY}"


def completion_url(code: str) -> str:
    return COMPLETION_URL.format(code=quote(code, safe=""))


class ProlificStore:
    """The studies and participants' sessions, in the server's SQLite file (the task store's connection)."""

    def __init__(self, service: CrowdService) -> None:
        self.store = service.store
        self._db = service.store.connection
        self._db.executescript(_SCHEMA)

    def study(self, account: str) -> Study | None:
        row = self._db.execute(f"SELECT {_STUDY_COLUMNS} FROM prolific_studies WHERE account = ?", (account,))  # noqa: S608
        found = row.fetchone()
        return Study(*found) if found else None

    def study_by_id(self, study_id: str) -> Study | None:
        row = self._db.execute(f"SELECT {_STUDY_COLUMNS} FROM prolific_studies WHERE study_id = ?", (study_id,))  # noqa: S608
        found = row.fetchone()
        return Study(*found) if found else None

    def studies(self) -> list[Study]:
        return [Study(*row) for row in self._db.execute(f"SELECT {_STUDY_COLUMNS} FROM prolific_studies")]  # noqa: S608

    def add_study(self, study: Study) -> None:
        """Store the study about to be created (before anything is sent: its internal name finds it again)."""
        self._db.execute(
            f"INSERT INTO prolific_studies ({_STUDY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (
                study.account,
                study.internal_name,
                None,
                study.completion_code,
                study.reward,
                study.estimated_minutes,
                study.places,
            ),
        )

    def confirm_created(self, account: str, study_id: str) -> None:
        self._db.execute("UPDATE prolific_studies SET study_id = ? WHERE account = ?", (study_id, account))

    def confirm_places(self, study_id: str, places: int) -> None:
        self._db.execute("UPDATE prolific_studies SET places = MAX(places, ?) WHERE study_id = ?", (places, study_id))

    # Sessions

    def session(self, session_id: str) -> Session | None:
        row = self._db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM prolific_sessions WHERE session_id = ?",  # noqa: S608
            (session_id,),
        ).fetchone()
        return _session(row) if row else None

    def session_of_browser(self, browser_id: str) -> Session | None:
        row = self._db.execute(
            "SELECT session_id FROM prolific_sessions WHERE browser_hash = ?", (_hash(browser_id),)
        ).fetchone()
        return self.session(row[0]) if row else None

    def sessions(self, study_id: str) -> list[Session]:
        rows = self._db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM prolific_sessions WHERE study_id = ?",  # noqa: S608
            (study_id,),
        ).fetchall()
        return [_session(row) for row in rows]

    def open_session(self, session_id: str, study_id: str, participant: str, browser_id: str) -> None:
        """Record the participant's arrival (or return: a new browser id replaces the old one)."""
        self._db.execute(
            "INSERT INTO prolific_sessions (session_id, study_id, participant, browser_hash, started_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET browser_hash = excluded.browser_hash",
            (session_id, study_id, participant, _hash(browser_id), time.time()),
        )

    def count_answer(self, session_id: str) -> None:
        self._db.execute("UPDATE prolific_sessions SET answered = answered + 1 WHERE session_id = ?", (session_id,))

    def finish(self, session_id: str) -> None:
        self._db.execute(
            "UPDATE prolific_sessions SET finished_at = ? WHERE session_id = ? AND finished_at IS NULL",
            (time.time(), session_id),
        )

    def set_session_status(self, session_id: str, status: str) -> None:
        self._db.execute("UPDATE prolific_sessions SET status = ? WHERE session_id = ?", (status, session_id))

    def approved(self, session_id: str) -> None:
        self._db.execute("UPDATE prolific_sessions SET approved = 1 WHERE session_id = ?", (session_id,))

    def median_seconds_per_answer(self) -> float | None:
        """The median of finished batches' seconds per answer (the newest ones), or None before any."""
        rows = self._db.execute(
            "SELECT (finished_at - started_at) / answered FROM prolific_sessions "
            "WHERE finished_at IS NOT NULL AND answered > 0 ORDER BY finished_at DESC LIMIT ?",
            (_MEASURED_SESSIONS,),
        ).fetchall()
        return statistics.median(row[0] for row in rows) if rows else None

    def outstanding_answers(self, account: str, expected_per_task: float) -> float:
        """Answers the account's processing tasks are still expected to need."""
        rows = self._db.execute(
            "SELECT (SELECT COUNT(*) FROM answers a WHERE a.task_id = t.id AND a.answer >= 0) FROM tasks t "
            "WHERE t.account = ? AND t.function = ? AND t.state = ?",
            (account, IMAGE_CONTAINS, PROCESSING),
        ).fetchall()
        return sum(max(expected_per_task - answered, 1.0) for (answered,) in rows)

    def answers_per_finished_task(self, account: str) -> float | None:
        row = self._db.execute(
            "SELECT AVG(json_extract(result, '$.answers')) FROM tasks "
            "WHERE account = ? AND function = ? AND state = 'completed'",
            (account, IMAGE_CONTAINS),
        ).fetchone()
        return float(row[0]) if row and row[0] else None

    def fail_unstarted(self, account: str, problem: dict[str, str]) -> int:
        """Fail the account's processing tasks nobody answered or holds (the ones money was wanted for)."""
        rows = self._db.execute(
            "SELECT id FROM tasks t WHERE account = ? AND function = ? AND state = ? AND claimed_by IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.task_id = t.id)",
            (account, IMAGE_CONTAINS, PROCESSING),
        ).fetchall()
        return sum(self.store.finish(task_id, problem=problem) for (task_id,) in rows)


_STUDY_COLUMNS = "account, internal_name, study_id, completion_code, reward, estimated_minutes, places"
_SESSION_COLUMNS = "session_id, study_id, participant, answered, started_at, finished_at, status, approved"


def _session(row: tuple[Any, ...]) -> Session:
    session_id, study_id, participant, answered, started_at, finished_at, status, approved = row
    return Session(session_id, study_id, participant, answered, started_at, finished_at, status, bool(approved))


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ProlificWorkforce:
    """Runs the studies and serves the participants (their pages are ``prolific_pages.py``).

    :param config: the server settings.
    :param client: the Prolific API client.
    """

    def __init__(self, config: ServerConfig, client: ProlificClient) -> None:
        self.config = config
        self.client = client
        self.accounts = frozenset(config.prolific_accounts)
        self._service: CrowdService | None = None
        self._studies: ProlificStore | None = None
        self._ledger: PaidCallLedger | None = None
        # The question each participant's session holds: session id -> (question, since).
        self._held: dict[str, tuple[Assignment, float]] = {}
        self._runner: asyncio.Task[None] | None = None
        # Why the loop stopped, when it died: the dashboard and PUTs of Prolific accounts' tasks say so.
        self.failure: str | None = None
        # Accounts whose study Prolific refused (400): their tasks fail with this problem, never retried.
        self.refused: dict[str, dict[str, str]] = {}
        # What one approved place costs, by reward (Prolific's cost calculator), in microdollars.
        self._place_costs: dict[int, int] = {}

    def start(self, service: CrowdService) -> None:
        self._service = service
        self._studies = ProlificStore(service)
        self._ledger = PaidCallLedger(service.store)
        self._held.clear()
        self._runner = asyncio.create_task(self._run())
        self._runner.add_done_callback(self._supervise)

    @property
    def running(self) -> bool:
        return self._service is not None

    @property
    def service(self) -> CrowdService:
        if self._service is None:
            raise RuntimeError("The Prolific workforce is not running.")
        return self._service

    @property
    def ledger(self) -> PaidCallLedger:
        if self._ledger is None:
            raise RuntimeError("The Prolific workforce is not running.")
        return self._ledger

    @property
    def studies(self) -> ProlificStore:
        if self._studies is None:
            raise RuntimeError("The Prolific workforce is not running.")
        return self._studies

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        self._service = self._studies = self._ledger = self._runner = None

    def _supervise(self, runner: asyncio.Task[None]) -> None:
        if runner.cancelled():
            return
        err = runner.exception()
        self.failure = f"The Prolific loop stopped: {type(err).__name__}: {err}"
        log.error("%s; no more tasks are taken for Prolific accounts until the server restarts", self.failure)

    # Admission of tasks (CrowdService.check_task)

    def check_task(self, account: str, image_url: str) -> CrowdError | None:
        """Refuse a Prolific account's task the participants could not answer, or while the loop is dead."""
        if account not in self.accounts:
            return None
        if self.failure is not None:
            return CrowdError(503, "ServiceUnavailable", f"{self.failure}; tasks for Prolific are not taken.")
        problem = image_refusal(image_url, self.config.public_url or "")
        return CrowdError(400, "InvalidInput", problem) if problem else None

    # Participants

    def held(self, session_id: str) -> Assignment | None:
        held = self._held.get(session_id)
        return held[0] if held else None

    def question_for(self, session: Session) -> Assignment | None:
        """The question the session holds, else the next one (a task of its study's account, else gold), else None
        when the batch is done or nothing at all is left to ask."""
        held = self._held.get(session.session_id)
        if held is not None:
            if self._open(held[0]):
                return held[0]
            del self._held[session.session_id]
        if session.answered >= self.config.prolific_batch_size or session.finished_at is not None:
            return None
        study = self.studies.study_by_id(session.study_id)
        accounts = {study.account} if study is not None else set()
        assignment = self.service.next_assignment(session.worker, accounts=accounts, charge=False)
        if assignment is None and not self.service.store.is_blocked(session.worker):
            # Nobody is stranded: with no task left the batch is made of gold questions.
            assignment = self.service.gold_assignment(session.worker)
        if assignment is not None:
            self._held[session.session_id] = (assignment, time.monotonic())
        return assignment

    def answer(self, session: Session, question_id: int, answer: bool | str | None) -> bool:
        """Record the session's answer (True/False/None, or ``broken-image``); False if it holds no such question."""
        held = self._held.get(session.session_id)
        if held is None or held[0].question_id != question_id:
            return False
        del self._held[session.session_id]
        if answer == "broken-image":
            self.service.report_broken_image(held[0], session.worker)
        else:
            self.service.submit_answer(held[0], session.worker, answer if answer is None else bool(answer))
        self.studies.count_answer(session.session_id)
        if session.answered + 1 >= self.config.prolific_batch_size:
            self.studies.finish(session.session_id)
        return True

    def seconds_left(self, session_id: str) -> int:
        """Whole seconds the session may still take to answer the question it holds."""
        held = self._held.get(session_id)
        since = held[1] if held else time.monotonic()
        return max(math.ceil(self.config.human_claim_seconds - (time.monotonic() - since)), 0)

    def give_back(self, session_id: str) -> None:
        held = self._held.pop(session_id, None)
        if held is not None:
            self.service.give_back(held[0])

    def _open(self, assignment: Assignment) -> bool:
        if assignment.gold:
            return True
        task = self.service.store.get_by_id(assignment.task_id)
        return task is not None and task.state == PROCESSING and time.time() < task.deadline_at

    def release_stale(self) -> None:
        """Give back questions held longer than ``human_claim_seconds`` (the participant left)."""
        cutoff = time.monotonic() - self.config.human_claim_seconds
        for session_id, (_, since) in list(self._held.items()):
            if since <= cutoff:
                self.give_back(session_id)

    # The loop

    async def _run(self) -> None:
        backoff = self.config.prolific_poll_seconds
        while True:
            try:
                await self.cycle()
                backoff = self.config.prolific_poll_seconds
            except ProlificAuthError:
                raise  # the token was revoked: nothing can be paid or approved any more
            except ProlificError as err:  # outages and throttling the client's own retries did not outlast
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                log.warning("Prolific is not answering (%s); trying again in %.0f s", err, backoff)
            await self.service.wait_for_work(backoff)

    async def cycle(self) -> None:
        """One pass: studies and places for the work there is, then submissions to approve, bonuses to pay."""
        self.release_stale()
        await self._resume()
        for account in sorted(self.accounts):
            await self._staff(account)
        for study in self.studies.studies():
            if study.study_id is not None:
                await self._review(study)

    async def _resume(self) -> None:
        """Settle the paid calls a crash or an outage left unconfirmed, before deciding anything new."""
        for call in self.ledger.unfinished(GROW):
            await self._grow_to(call.request["study_id"], call.request["total_available_places"])
        for call in self.ledger.unfinished(APPROVE):
            await self._approve(call.request["submission_id"], call.account or "", 0)
        for call in self.ledger.unfinished(BONUS):
            await self._pay(call.key, call.request)

    async def _staff(self, account: str) -> None:
        """Make the account's study offer the places its outstanding answers need, or pause it when none."""
        if account in self.refused:
            self.studies.fail_unstarted(account, self.refused[account])
            return
        expected = self.studies.answers_per_finished_task(account) or EXPECTED_ANSWERS_PER_TASK
        outstanding = self.studies.outstanding_answers(account, expected)
        study = self.studies.study(account)
        if study is None:
            if outstanding == 0:
                return
            study = self._new_study(account, outstanding)
            if not await self._affordable(study, study.places):
                self._insufficient(account)
                return
            self.studies.add_study(study)
        if study.study_id is None:
            study = await self._create(study)
            if study is None:
                return
        assert study.study_id is not None
        status = (await self._call(self.client.get_study, study.study_id)).status or UNPUBLISHED
        try:
            if outstanding == 0:
                if status == ACTIVE:
                    await self._pause(study.study_id)
                return
            # More places make a full (AWAITING REVIEW or COMPLETED) study ACTIVE again; a draft is published and
            # a paused study started.
            if await self._grow(study, outstanding) and status in (UNPUBLISHED, PAUSED):
                await self._publish(study.account, study.study_id, PUBLISH if status == UNPUBLISHED else START)
        except ProlificRequestError as err:  # about our request: sending it again would not help
            self._refuse(account, err)

    async def _pause(self, study_id: str) -> None:
        try:
            await self._call(self.client.transition_study, study_id, PAUSE)
        except ProlificRequestError:
            # Full meanwhile (AWAITING REVIEW, COMPLETED): nobody can start it, which is what pausing was for.
            if (await self._call(self.client.get_study, study_id)).status == ACTIVE:
                raise

    def _real_questions_per_place(self) -> float:
        return max(self.config.prolific_batch_size * (1.0 - self.config.gold_share), 1.0)

    def _new_study(self, account: str, outstanding: float) -> Study:
        """The account's study (stored before it is created): its reward pays the hourly rate at the measured pace."""
        seconds = self.studies.median_seconds_per_answer() or self.config.prolific_seconds_per_answer
        batch = self.config.prolific_batch_size
        return Study(
            account=account,
            internal_name=f"imagecontains-{account}-{secrets.token_hex(8)}",
            study_id=None,
            completion_code=secrets.token_hex(4).upper(),
            reward=reward_cents(self.config.prolific_hourly_rate, batch, seconds),
            estimated_minutes=estimated_minutes(batch, seconds),
            places=math.ceil(outstanding / self._real_questions_per_place()),
        )

    async def _create(self, study: Study) -> Study | None:
        """Create the study as a draft, once (found again by its internal name after a crash); None if refused."""
        key = idempotency_key(CREATE_STUDY, study.internal_name)
        try:
            created = await self.ledger.call_once(
                key,
                CREATE_STUDY,
                self._study_fields(study),
                lambda fields: self.client.create_study(**fields).raw,
                find=lambda _: self._study_found(study.internal_name),
            )
        except ProlificRequestError as err:
            self.ledger.abandon(key, str(err), refund=False)
            self._refuse(study.account, err)
            return None
        self.studies.confirm_created(study.account, created["id"])
        log.info("Prolific study %s of account %s: %d places", created["id"], study.account, study.places)
        return self.studies.study(study.account)

    def _study_fields(self, study: Study) -> dict[str, Any]:
        assert self.config.public_url is not None
        return {
            "name": "Does this image contain the object?",
            "internal_name": study.internal_name,
            "description": (
                f"Look at up to {self.config.prolific_batch_size} images, one at a time, and say whether each "
                "contains the object named above it."
            ),
            "external_study_url": study_url(self.config.public_url),
            "completion_code": study.completion_code,
            "total_available_places": study.places,
            "reward": study.reward,
            "estimated_completion_time": study.estimated_minutes,
            "project": self.config.prolific_project,
        }

    def _study_found(self, internal_name: str) -> dict[str, Any] | None:
        found = self.client.list_studies(project=self.config.prolific_project)
        return next((study.raw for study in found if study.internal_name == internal_name), None)

    async def _grow(self, study: Study, outstanding: float) -> bool:
        """Add places when the outstanding answers need more than the places not yet used; False if unaffordable."""
        assert study.study_id is not None
        taken = [s for s in self.studies.sessions(study.study_id) if s.status not in PLACE_FREED]
        batch = self.config.prolific_batch_size
        unanswered = (study.places - len(taken)) * batch + sum(
            max(batch - s.answered, 0) for s in taken if s.finished_at is None
        )
        missing = outstanding - unanswered * (1.0 - self.config.gold_share)
        if missing <= 0:
            return True
        places = study.places + math.ceil(missing / self._real_questions_per_place())
        if not await self._affordable(study, places):
            self._insufficient(study.account)
            return False
        try:
            await self._grow_to(study.study_id, places)
        except ProlificInsufficientFunds:
            self._insufficient(study.account)
            return False
        return True

    async def _grow_to(self, study_id: str, places: int) -> None:
        """Set the study's ``total_available_places`` (an absolute number: sending it twice adds nothing)."""
        key = idempotency_key(GROW, study_id, places)
        try:
            await self.ledger.call_once(
                key,
                GROW,
                {"study_id": study_id, "total_available_places": places},
                lambda _: self.client.update_study(study_id, total_available_places=places).raw,
                find=lambda _: self._places_found(study_id, places),
            )
        except (ProlificInsufficientFunds, ProlificRequestError) as err:
            self.ledger.abandon(key, str(err), refund=False)
            raise
        self.studies.confirm_places(study_id, places)

    def _places_found(self, study_id: str, places: int) -> dict[str, Any] | None:
        study = self.client.get_study(study_id)
        return study.raw if study.total_available_places >= places else None

    async def _affordable(self, study: Study, places: int) -> bool:
        """Whether the account can pay ``places`` places not yet approved, fees included (places are paid on
        approval, as Prolific charges them)."""
        approved = sum(s.approved for s in self.studies.sessions(study.study_id)) if study.study_id else 0
        needed = (places - approved) * await self._place_cost(study.reward)
        return self.service.store.balance(study.account) >= needed

    async def _publish(self, account: str, study_id: str, action: str) -> None:
        try:
            await self._call(self.client.transition_study, study_id, action)
        except ProlificInsufficientFunds:
            self._insufficient(account)

    async def _place_cost(self, reward: int) -> int:
        """What one approved place costs with Prolific's fees and VAT (its cost calculator), in microdollars."""
        if reward not in self._place_costs:
            cents = await self._call(self.client.study_cost, reward, 1)
            self._place_costs[reward] = to_microdollars(cents / 100)
        return self._place_costs[reward]

    def _insufficient(self, account: str) -> None:
        failed = self.studies.fail_unstarted(account, INSUFFICIENT_FUNDS)
        log.warning(
            "Account %s cannot pay for more Prolific places: %d tasks failed InsufficientFunds", account, failed
        )

    def _refuse(self, account: str, err: ProlificRequestError) -> None:
        """Fail the account's waiting tasks with Prolific's reason, now and until a restart (no retry loop)."""
        problem = {"code": PROLIFIC_REFUSED, "message": f"Prolific refused this server's study: {err}"}
        self.refused[account] = problem
        failed = self.studies.fail_unstarted(account, problem)
        log.error("Prolific refused the study of account %s (%s); %d tasks failed", account, err, failed)

    async def _review(self, study: Study) -> None:
        """Approve completed submissions whose answers are stored, free the places given back, pay top-ups."""
        assert study.study_id is not None
        known = {s.session_id: s for s in self.studies.sessions(study.study_id)}
        for submission in await self._call(self.client.list_submissions, study.study_id):
            session = known.get(submission.id)
            if session is None:
                continue  # never reached this server: nothing to pay for; Prolific times it out or it is returned
            if submission.status != session.status:
                self.studies.set_session_status(session.session_id, submission.status)
            if submission.status in PLACE_FREED:
                self.give_back(session.session_id)
            elif submission.status == AWAITING_REVIEW and self._approvable(session):
                try:
                    await self._approve(session.session_id, study.account, await self._place_cost(study.reward))
                except ProlificRequestError as err:
                    self.ledger.abandon(idempotency_key(APPROVE, session.session_id), str(err), refund=True)
                    log.error(
                        "Prolific refused to approve submission %s (%s): approve it by hand", session.session_id, err
                    )
        median = self.studies.median_seconds_per_answer()
        if median is None:
            return
        top_up = reward_cents(self.config.prolific_hourly_rate, self.config.prolific_batch_size, median) - study.reward
        if top_up > 0:
            for session in self.studies.sessions(study.study_id):
                # One who found no question left (no gold either) spent no time answering: no pay fell short.
                if session.approved and session.answered > 0:
                    await self._top_up(study, session, top_up)

    def _approvable(self, session: Session) -> bool:
        """Its batch is in the database, and it was neither approved nor refused by Prolific before."""
        refused = self.ledger.get(idempotency_key(APPROVE, session.session_id))
        return (
            session.finished_at is not None and not session.approved and (refused is None or refused.state != ABANDONED)
        )

    async def _approve(self, submission_id: str, account: str, microdollars: int) -> None:
        """Approve the submission once; the account is charged the place (its reward and fees) with the intent."""
        key = idempotency_key(APPROVE, submission_id)
        request = {"submission_id": submission_id}
        try:
            self.ledger.intend(key, APPROVE, request, account=account, microdollars=microdollars)
        except InsufficientBalance:
            # The participant did the work: approved all the same; the account's balance could not cover it.
            log.warning("Account %s cannot pay the approved place of submission %s", account, submission_id)
            self.ledger.intend(key, APPROVE, request)
        await self.ledger.call_once(
            key,
            APPROVE,
            request,
            lambda _: self.client.approve_submission(submission_id).raw,
            find=lambda _: self._approved_found(submission_id),
        )
        self.studies.approved(submission_id)

    def _approved_found(self, submission_id: str) -> dict[str, Any] | None:
        submission = self.client.get_submission(submission_id)
        return submission.raw if submission.status == APPROVED else None

    async def _top_up(self, study: Study, session: Session, cents: int) -> None:
        """Pay ``session`` a top-up bonus of ``cents`` (its pay fell under the hourly rate), exactly once.

        Setting a bonus up spends nothing (one a crash orphaned before its id was stored stays unpaid); its id
        and cost go into the ledger, the account charged, before ``pay``, which is not idempotent: a pay whose
        answer a crash hid is not resent but reported (:class:`UnresolvedPaidCall`) for a person to settle.
        """
        assert study.study_id is not None
        key = idempotency_key(BONUS, session.session_id)
        if self.ledger.get(key) is not None:
            return
        bonus = await self._call(self.client.create_bonus_payments, study.study_id, {session.session_id: cents})
        request = {"bulk_bonus_id": bonus.id, "submission_id": session.session_id, "cents": cents}
        try:
            self.ledger.intend(
                key, BONUS, request, account=study.account, microdollars=to_microdollars(bonus.total_amount / 100)
            )
        except InsufficientBalance:
            log.warning("Account %s cannot pay a top-up bonus of %d to %s", study.account, cents, session.worker)
            return
        await self._pay(key, request)

    def _pay_bonus(self, request: dict[str, Any]) -> dict[str, Any]:
        self.client.pay_bonus_payments(request["bulk_bonus_id"])
        return {"paid": request["bulk_bonus_id"]}

    async def _pay(self, key: str, request: dict[str, Any]) -> None:
        try:
            await self.ledger.call_once(key, BONUS, request, self._pay_bonus)
        except UnresolvedPaidCall as err:
            self.ledger.abandon(key, str(err), refund=False)
            log.error("%s", err)

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(partial(function, *args))


def prolific_client(config: ServerConfig) -> ProlificClient:
    """A client of ``prolific_api_url`` with the token, checked now: a refused token stops the server's start."""
    if not config.prolific_token:
        raise ValueError(
            "No Prolific API token: set $PROLIFIC_TOKEN, or prolific_token in the --config file (never a flag)."
        )
    client = ProlificClient(config.prolific_token, config.prolific_api_url)
    try:
        client.me()
    except ProlificAuthError as err:
        raise ValueError(
            f"Prolific refused the API token ({err}): create a new token in Prolific's settings and give it in "
            "$PROLIFIC_TOKEN."
        ) from None
    except ProlificError as err:  # Prolific down: the loop tries again, and stops on a refused token then
        log.warning("Could not check the Prolific API token now (%s); the Prolific loop will try again", err)
    return client


def image_refusal(url: str, public_url: str) -> str | None:
    """Why a participant's browser could not load ``url``, else None: an https URL of a host on the internet,
    or an image of this server under ``{public_url}/images/`` (shown to the participant holding its question)."""
    own_images = public_url.rstrip("/") + "/images/"
    if url.startswith(own_images):
        return None
    if urlsplit(url).scheme != "https":
        return (
            f"Invalid image URL {url!r} for Prolific participants: give an https:// URL a browser on the internet "
            f"can load, or an image of this server under {own_images}."
        )
    return unreachable_image_reason(url)
