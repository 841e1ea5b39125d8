"""The human workforce: sign-in tokens, the question each person is answering, and the dashboard's figures.

People answer through the same ``CrowdService.next_assignment`` / ``submit_answer`` interface as the
simulated workers, so their answers land in the same answers table and meet the same adjudicator.
Tokens are issued by ``imagecontains-server token ...`` (see docs/workforce.md) and only their SHA-256
hashes are stored: a token is 256 random bits, so a fast hash is enough and a stolen database holds none.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from imagecontains_gateway.adjudication import MODEL_FIELDS, CrowdPrior, WorkerModel
from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.service import Assignment, CrowdService
from imagecontains_gateway.store import BROKEN_IMAGE, CANT_TELL, PROCESSING, connect_private

log = logging.getLogger(__name__)

WORKER, DASHBOARD = "worker", "dashboard"
# People's answers are stored under "human:<name>", apart from the simulated "sim-worker-<n>".
HUMAN_PREFIX = "human:"
MAX_WORKER_NAME_LENGTH = 64
# How many tasks a dashboard page lists (newest first), and how many slowest ones it names.
DASHBOARD_TASKS = 200
SLOWEST_TASKS = 5
# How long a dashboard's figures are kept before they are computed again (the page asks every 2 s).
DASHBOARD_CACHE_SECONDS = 2.0
_SWEEP_SECONDS = 1.0
# How long after an answer the worker may take it back (a stray key), if it did not decide its task.
UNDO_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sign_in_tokens (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (kind, subject)
);
CREATE TABLE IF NOT EXISTS web_sessions (
    session_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class LastAnswer:
    """A worker's last answer, which it may still undo for a few seconds.

    :param assignment: the question answered.
    :param answer: what the worker said: ``yes``, ``no``, ``cant-tell`` or ``broken-image``.
    :param at: ``time.monotonic()`` when it was recorded.
    :param claimed_at: ``time.monotonic()`` when the question was first given to the worker: an undo gives it back
        with its time running from then, not anew (issue 24: answer/undo cycles held a question past its limit).
    """

    assignment: Assignment
    answer: str
    at: float
    claimed_at: float


@dataclass(frozen=True)
class Identity:
    """Who a sign-in token belongs to.

    :param kind: ``worker`` (answers questions) or ``dashboard`` (an account owner).
    :param subject: the worker's name, or the account id.
    """

    kind: str
    subject: str


def validate_worker_name(name: str) -> str:
    """Return ``name`` if it is 1 to 64 printable characters without leading or trailing spaces."""
    if not name or len(name) > MAX_WORKER_NAME_LENGTH or name != name.strip() or not name.isprintable():
        raise ValueError(
            f"Invalid worker name {name!r}: use 1 to {MAX_WORKER_NAME_LENGTH} printable characters, "
            "without leading or trailing spaces."
        )
    return name


def validate_account_id(account_id: str) -> str:
    """Return ``account_id`` if it is 12 digits."""
    if not (len(account_id) == 12 and account_id.isdigit()):
        raise ValueError(f"Invalid account id {account_id!r}: expected 12 digits.")
    return account_id


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WorkforceStore:
    """Sign-in tokens, and the dashboard's read-only views of tasks and answers, in the server's SQLite file.

    A connection of its own, so that the ``token`` command works whether or not a server is running.

    :param path: the server's database file.
    """

    def __init__(self, path: str) -> None:
        self._db = connect_private(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def issue_token(self, kind: str, subject: str) -> str:
        """A new token for a worker (by name) or an account's dashboard; it replaces the subject's previous one."""
        if kind == WORKER:
            validate_worker_name(subject)
        elif kind == DASHBOARD:
            validate_account_id(subject)
        else:
            raise ValueError(f"Invalid token kind {kind!r}: expected {WORKER!r} or {DASHBOARD!r}.")
        token = f"ic{kind[0]}_{secrets.token_urlsafe(32)}"
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("DELETE FROM sign_in_tokens WHERE kind = ? AND subject = ?", (kind, subject))
        # A replaced token also ends every session opened with the old one (that is how access is revoked).
        self._db.execute("DELETE FROM web_sessions WHERE kind = ? AND subject = ?", (kind, subject))
        self._db.execute(
            "INSERT INTO sign_in_tokens (token_hash, kind, subject, created_at) VALUES (?, ?, ?, ?)",
            (hash_token(token), kind, subject, time.time()),
        )
        self._db.execute("COMMIT")
        return token

    def identify(self, token: str) -> Identity | None:
        row = self._db.execute(
            "SELECT kind, subject FROM sign_in_tokens WHERE token_hash = ?", (hash_token(token),)
        ).fetchone()
        return Identity(*row) if row else None

    def open_session(self, identity: Identity, seconds: float) -> str:
        """A new session for ``identity`` lasting ``seconds``: its random id (only the hash is stored)."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        self._db.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (now,))
        self._db.execute(
            "INSERT INTO web_sessions (session_hash, kind, subject, expires_at) VALUES (?, ?, ?, ?)",
            (hash_token(session_id), identity.kind, identity.subject, now + seconds),
        )
        return session_id

    def session(self, session_id: str) -> Identity | None:
        """Who the session belongs to, or None once it ended (expired, signed out, token replaced)."""
        row = self._db.execute(
            "SELECT kind, subject FROM web_sessions WHERE session_hash = ? AND expires_at > ?",
            (hash_token(session_id), time.time()),
        ).fetchone()
        return Identity(*row) if row else None

    def end_session(self, session_id: str) -> None:
        self._db.execute("DELETE FROM web_sessions WHERE session_hash = ?", (hash_token(session_id),))

    def image_urls(self, account: str) -> list[str]:
        """The distinct image URLs of ``account``'s tasks that name an ``/images/`` path (local images)."""
        rows = self._db.execute(
            "SELECT DISTINCT json_extract(input, '$.image.url') AS url FROM tasks "
            "WHERE account = ? AND url LIKE '%/images/%'",
            (account,),
        )
        return [url for (url,) in rows]

    def worker_names(self) -> list[str]:
        """The people who hold a worker token."""
        return [name for (name,) in self._db.execute("SELECT subject FROM sign_in_tokens WHERE kind = ?", (WORKER,))]

    def answers_given(self, worker: str) -> int:
        """Answers to tasks and to gold questions alike: a worker's count must not tell which was which."""
        return int(
            self._db.execute(
                "SELECT (SELECT COUNT(*) FROM answers WHERE worker = ?) + (SELECT COUNT(*) FROM gold_answers WHERE worker = ?)",
                (worker, worker),
            ).fetchone()[0]
        )

    def worker_quality(self, account: str, prior: CrowdPrior, reward_per_answer: float) -> dict[str, Any]:
        """The dashboard's view of the workers who answered ``account``'s tasks (no other account's: issue 24):
        each one's estimated accuracies, gold score, blocked state and answers to the account's tasks; and the gold
        answers, paid by whoever runs the server, not billed."""
        # Kept by triggers on the answers table (store.py): no pass over all of the account's answers.
        answered = dict(
            self._db.execute(
                "SELECT worker, answers FROM account_worker_answers WHERE account = ? AND answers > 0", (account,)
            )
        )
        marks = ",".join("?" * len(answered))
        rows = self._db.execute(
            f"SELECT worker, {', '.join(MODEL_FIELDS)}, blocked_reason FROM worker_models "  # noqa: S608
            f"WHERE worker IN ({marks}) ORDER BY worker",
            list(answered),
        ).fetchall()
        workers = []
        for worker, *fields, blocked_reason in rows:
            model = WorkerModel(*fields)
            workers.append(
                {
                    "worker": worker.removeprefix(HUMAN_PREFIX),
                    "answers": answered[worker],
                    "accuracy": round(model.balanced_accuracy(prior), 3),
                    "accuracy_on_yes": round(model.accuracy_on_yes(prior), 3),
                    "accuracy_on_no": round(model.accuracy_on_no(prior), 3),
                    "gold_right": model.gold_right,
                    "gold_answers": model.gold_answers,
                    "blocked": blocked_reason,
                }
            )
        gold_answers = self._db.execute("SELECT COUNT(*) FROM gold_answers WHERE answer >= 0").fetchone()[0]
        return {
            "workers": workers,
            "gold": {"answers": gold_answers, "cost": round(gold_answers * reward_per_answer, 6)},
        }

    def dashboard(
        self, account: str, starting_balance: float, now: float, name_prefix: str = "", page: int = 1
    ) -> dict[str, Any]:
        """The figures of the requester dashboard for ``account`` (see docs/workforce.md): of its tasks whose
        name starts with ``name_prefix`` (e.g. one DAG's namespace), and its whole spend and balance.

        Totals and the slowest tasks are aggregated in SQL over all of them; ``DASHBOARD_TASKS`` tasks are listed,
        newest first, from ``page`` (1 is the newest).
        """
        selected = (account, len(name_prefix), name_prefix)
        states = dict(
            self._db.execute(
                "SELECT state, COUNT(*) FROM tasks WHERE account = ? AND substr(name, 1, ?) = ? GROUP BY state",
                selected,
            )
        )
        total = sum(states.values())
        pages = max(math.ceil(total / DASHBOARD_TASKS), 1)
        page = min(max(page, 1), pages)
        balance_row = self._db.execute("SELECT microdollars FROM balances WHERE account = ?", (account,)).fetchone()
        balance = (balance_row[0] if balance_row else 0) / 1e6
        rows = self._db.execute(
            "SELECT t.id, t.function, t.name, t.input, t.state, t.result, t.problem, t.created_at, t.deadline_at, "  # noqa: S608
            f"{_FINISHED_AT} FROM tasks t WHERE t.account = ? AND substr(t.name, 1, ?) = ? "
            "ORDER BY t.id DESC LIMIT ? OFFSET ?",
            (*selected, DASHBOARD_TASKS, (page - 1) * DASHBOARD_TASKS),
        ).fetchall()
        listed = [_task_summary(row, now) for row in rows]
        by_id = {task.pop("id"): task for task in listed}
        if by_id:
            marks = ",".join("?" * len(by_id))
            for task_id, worker, answer in self._db.execute(
                f"SELECT task_id, worker, answer FROM answers WHERE task_id IN ({marks}) ORDER BY id",  # noqa: S608
                list(by_id),
            ):
                _add_answer(by_id[task_id], worker, answer)
        for task in listed:
            task["agreement"] = _agreement(task)
        slowest = self._db.execute(
            "SELECT name, json_extract(input, '$.target.label'), state, MAX(CASE WHEN state = 'processing' THEN ? "  # noqa: S608
            "WHEN json_extract(problem, '$.code') = 'Expired' THEN deadline_at "
            f"ELSE {_FINISHED_AT} END - created_at, 0.0) AS seconds FROM tasks t "
            "WHERE account = ? AND substr(name, 1, ?) = ? ORDER BY seconds DESC, id LIMIT ?",
            (now, *selected, SLOWEST_TASKS),
        ).fetchall()
        broken_images = self._db.execute(  # through the partial index of broken-image reports (store.py)
            "SELECT COUNT(DISTINCT a.task_id) FROM answers a JOIN tasks t ON t.id = a.task_id "  # noqa: S608
            f"WHERE a.answer = {BROKEN_IMAGE} AND t.account = ? AND substr(t.name, 1, ?) = ?",
            selected,
        ).fetchone()[0]
        finished = total - states.get(PROCESSING, 0)
        return {
            "account": account,
            "name_prefix": name_prefix,
            "states": states,
            "total": total,
            "finished": finished,
            "progress": finished / total if total else None,
            "spend": round(starting_balance - balance, 6),
            "balance": balance,
            "broken_images": broken_images,
            "page": page,
            "pages": pages,
            "tasks": listed,
            "slowest": [
                {"task_name": name, "label": label, "state": state, "seconds": round(seconds, 3)}
                for name, label, state, seconds in slowest
            ],
        }


# When a task finished: its own record, else (a task finished before that was recorded) its last answer, else its
# creation.
_FINISHED_AT = "COALESCE(t.finished_at, (SELECT MAX(a.created_at) FROM answers a WHERE a.task_id = t.id), t.created_at)"


def _task_summary(row: Sequence[Any], now: float) -> dict[str, Any]:
    task_id, function, name, input_json, state, result, problem, created_at, deadline_at, finished_at = row
    task_input = json.loads(input_json)
    problem_details = json.loads(problem) if problem else None
    # How long the task took (or has taken so far): until it finished, or its deadline when it expired.
    if state == PROCESSING:
        end = now
    elif problem_details and problem_details.get("code") == "Expired":
        end = deadline_at
    else:
        end = finished_at
    return {
        "id": task_id,
        "function": function,
        "task_name": name,
        "label": task_input.get("target", {}).get("label") if isinstance(task_input, dict) else None,
        "image_url": task_input.get("image", {}).get("url") if isinstance(task_input, dict) else None,
        "state": state,
        "result": json.loads(result) if result else None,
        "problem": problem_details.get("code") if problem_details else None,
        "seconds": round(max(end - created_at, 0.0), 3),
        "yes": 0,
        "no": 0,
        "cant_tell": 0,
        "broken_image": 0,
        "workers": [],
    }


def _add_answer(task: dict[str, Any], worker: str, answer: int) -> None:
    kind = {CANT_TELL: "cant_tell", BROKEN_IMAGE: "broken_image"}.get(answer, "yes" if answer else "no")
    task[kind] += 1
    task["workers"].append(worker.removeprefix(HUMAN_PREFIX))


def _agreement(task: dict[str, Any]) -> float | None:
    """The share of yes/no votes that agree with the result (or, before there is one, with the majority).

    None below two votes: a single vote always agrees with itself, which says nothing.
    """
    votes = task["yes"] + task["no"]
    if votes < 2:
        return None
    result = task["result"]
    says_yes = result["containsTarget"] if isinstance(result, dict) else task["yes"] >= task["no"]
    return round((task["yes"] if says_yes else task["no"]) / votes, 3)


class DashboardFigures:
    """The dashboards' figures, computed off the event loop (one thread, its own database connection) and kept
    ``DASHBOARD_CACHE_SECONDS`` per (account, name prefix, page): five dashboards open on 16k tasks held a worker's
    page up to 282 ms (issue 24); now they cost one query a few seconds, on another thread.

    :param config: the server settings (starting balance, reward).
    :param db_path: the server's database file.
    :param crowd_prior: the service's crowd prior (``CrowdService.crowd_prior``), which it keeps up to date in memory.
    """

    def __init__(self, config: ServerConfig, db_path: str, crowd_prior: Callable[[], CrowdPrior]) -> None:
        self.config = config
        self.crowd_prior = crowd_prior
        self._store = WorkforceStore(db_path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard")
        self._cached: dict[tuple[str, str, int], tuple[float, asyncio.Future[dict[str, Any]]]] = {}

    async def figures(self, account: str, name_prefix: str, page: int) -> dict[str, Any]:
        """The figures of one dashboard page; callers share them and must not change them."""
        now = time.monotonic()
        for key in [key for key, (at, _) in self._cached.items() if now - at >= DASHBOARD_CACHE_SECONDS]:
            del self._cached[key]
        key = (account, name_prefix, page)
        if key not in self._cached:
            future = asyncio.get_running_loop().run_in_executor(self._thread, self._compute, *key)
            self._cached[key] = (now, future)
        return await asyncio.shield(self._cached[key][1])

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._store.close()

    def _compute(self, account: str, name_prefix: str, page: int) -> dict[str, Any]:
        config = self.config
        figures = self._store.dashboard(account, config.starting_balance, time.time(), name_prefix, page)
        figures.update(self._store.worker_quality(account, self.crowd_prior(), config.reward_per_answer))
        return figures


class HumanWorkforce:
    """The people answering on the worker page: each holds at most one question at a time.

    A question stays with its worker (a reload shows it again) until answered, or until
    ``config.human_claim_seconds`` pass, when it is given back to the other workers. For
    ``UNDO_SECONDS`` after an answer that did not decide its task, the worker may take it back: the
    question is shown again, and the one shown meanwhile is set aside and comes next (neither is paid twice).

    :param config: the server settings.
    :param db_path: the server's database file (for tokens and the dashboard).
    """

    def __init__(self, config: ServerConfig, db_path: str) -> None:
        self.config = config
        self.db_path = db_path
        self._service: CrowdService | None = None
        self._store: WorkforceStore | None = None
        self._held: dict[str, tuple[Assignment, float]] = {}
        # Questions put aside by an undo (still claimed and paid for): each comes back once the redo is answered.
        self._set_aside: dict[str, tuple[Assignment, float]] = {}
        self._last: dict[str, LastAnswer] = {}
        # What a worker is told on the next page (an answer that came too late, an undo refused).
        self._notices: dict[str, str] = {}
        # Each worker's last answered question, so that a second click on it is not taken for a late answer.
        self._last_answered: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._team_completes: bool | None = None
        # What else the dashboard must say is wrong (e.g. a paid crowd's loop that died): each gives a reason or None.
        self.problem_sources: list[Callable[[], str | None]] = []
        self._dashboards: DashboardFigures | None = None
        self.problem_sources.append(lambda: self.team()["message"])  # a workforce that cannot complete tasks

    def start(self, service: CrowdService) -> None:
        self._service = service
        self._store = WorkforceStore(self.db_path)
        self._dashboards = DashboardFigures(self.config, self.db_path, lambda: service.crowd_prior)
        for state in (self._held, self._set_aside, self._last, self._notices, self._last_answered):
            state.clear()
        self._team_completes = None
        self._check_team()
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._store is not None:
            self._store.close()
        if self._dashboards is not None:
            self._dashboards.close()
        self._service = self._store = self._sweeper = self._dashboards = None

    async def dashboard_figures(self, account: str, name_prefix: str, page: int) -> dict[str, Any]:
        """The figures of a requester dashboard page (see :class:`DashboardFigures`)."""
        if self._dashboards is None:
            raise RuntimeError("The human workforce is not running.")
        return await self._dashboards.figures(account, name_prefix, page)

    @property
    def running(self) -> bool:
        return self._service is not None

    @property
    def store(self) -> WorkforceStore:
        if self._store is None:
            raise RuntimeError("The human workforce is not running.")
        return self._store

    @property
    def service(self) -> CrowdService:
        if self._service is None:
            raise RuntimeError("The human workforce is not running.")
        return self._service

    def question_for(self, name: str) -> Assignment | None:
        """The question ``name`` holds, else the next one it has not answered (claimed for it), else None."""
        worker = HUMAN_PREFIX + name
        held = self._held.get(worker)
        if held is not None:
            if self.service.is_open(held[0]):
                return held[0]
            del self._held[worker]
        aside = self._set_aside.pop(worker, None)
        if aside is not None and self.service.is_open(aside[0]):
            self._held[worker] = aside  # its time kept running while it was set aside
            return aside[0]
        assignment = self.service.next_assignment(worker)
        if assignment is not None:
            self._held[worker] = (assignment, time.monotonic())
        return assignment

    def held_image_url(self, name: str) -> str | None:
        """The image URL of the question ``name`` holds, or None (claims nothing)."""
        held = self._held.get(HUMAN_PREFIX + name)
        return held[0].image_url if held is not None else None

    def answer(self, name: str, question_id: int, contains_target: bool | None) -> bool:
        """Record ``name``'s answer to the question it holds; False if it does not hold ``question_id`` (any more)."""
        held = self._give_up(name, question_id)
        if held is not None:
            self.service.submit_answer(held[0], HUMAN_PREFIX + name, contains_target)
            answer = "cant-tell" if contains_target is None else "yes" if contains_target else "no"
            self._last[HUMAN_PREFIX + name] = LastAnswer(held[0], answer, time.monotonic(), held[1])
        return held is not None

    def report_broken_image(self, name: str, question_id: int) -> bool:
        """Record that the image of the question ``name`` holds did not load; False if it does not hold ``question_id``."""
        held = self._give_up(name, question_id)
        if held is not None:
            self.service.report_broken_image(held[0], HUMAN_PREFIX + name)
            self._last[HUMAN_PREFIX + name] = LastAnswer(held[0], "broken-image", time.monotonic(), held[1])
        return held is not None

    def undoable(self, name: str) -> tuple[LastAnswer, int] | None:
        """``name``'s last answer and the whole seconds left to undo it, while it may be undone; else None."""
        last = self._last.get(HUMAN_PREFIX + name)
        if last is None:
            return None
        left = UNDO_SECONDS - (time.monotonic() - last.at)
        if left <= 0 or not self.service.is_open(last.assignment):
            return None
        return last, math.ceil(left)

    def undo(self, name: str, question_id: int) -> bool:
        """Take back ``name``'s last answer (to ``question_id``) and show that question again; False if too late."""
        worker = HUMAN_PREFIX + name
        undoable = self.undoable(name)
        if undoable is None or undoable[0].assignment.question_id != question_id:
            self._notices[worker] = (
                "That answer can no longer be undone: its question was decided, or the time to undo it ran out."
            )
            return False
        last = undoable[0]
        if not self.service.retract_answer(last.assignment, worker):
            return False
        self._last.pop(worker)
        if last.assignment.gold or self.service.store.claim(last.assignment.task_id, worker):
            held = self._held.pop(worker, None)
            if held is not None:
                self._set_aside[worker] = held
            self._held[worker] = (last.assignment, last.claimed_at)
        else:
            self._notices[worker] = (
                "Your answer was taken back. Somebody else is answering that question right now; you will be asked it again later."
            )
        return True

    def seconds_left(self, name: str) -> int | None:
        """Whole seconds ``name`` may still take to answer the question it holds (None when it holds none)."""
        held = self._held.get(HUMAN_PREFIX + name)
        if held is None:
            return None
        assignment, since = held
        left = self.config.human_claim_seconds - (time.monotonic() - since)
        task = None if assignment.gold else self.service.store.get_by_id(assignment.task_id)
        if task is not None:
            left = min(left, task.deadline_at - time.time())
        return max(math.ceil(left), 0)

    def take_notice(self, name: str) -> str | None:
        """What to tell ``name`` on its next page, once (an answer that came too late, an undo refused)."""
        return self._notices.pop(HUMAN_PREFIX + name, None)

    def _give_up(self, name: str, question_id: int) -> tuple[Assignment, float] | None:
        """The question ``name`` holds and since when, no longer held, if it is ``question_id``; else None.

        An answer to a question the worker no longer holds, and has not answered (a second click would be
        that), came after its time ran out: it is dropped, and the worker told so on the next page.
        """
        worker = HUMAN_PREFIX + name
        held = self._held.get(worker)
        if held is None or held[0].question_id != question_id:
            if self._last_answered.get(worker) != question_id:
                self._notices[worker] = (
                    "Your last answer came after that question's time ran out, so it was not recorded."
                )
            return None
        del self._held[worker]
        self._last_answered[worker] = question_id
        return held

    async def wait_for_question(self, name: str, timeout: float) -> bool:
        """Return True as soon as ``name`` holds a question, False after ``timeout`` seconds without one."""
        deadline = time.monotonic() + timeout
        while self.question_for(name) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self.service.wait_for_work(min(remaining, _SWEEP_SECONDS))
        return True

    def answers_given(self, name: str) -> int:
        return self.store.answers_given(HUMAN_PREFIX + name)

    def problems(self) -> list[str]:
        return [problem for source in self.problem_sources if (problem := source())]

    def release_stale(self) -> None:
        """Give back questions held, or set aside, longer than ``human_claim_seconds`` (the worker left)."""
        cutoff = time.monotonic() - self.config.human_claim_seconds
        for claims in (self._held, self._set_aside):
            for worker, (assignment, since) in list(claims.items()):
                if since <= cutoff:
                    del claims[worker]
                    self.service.give_back(assignment)

    def release(self, name: str) -> None:
        """Give back the questions ``name`` holds or set aside, and forget its last answer (it signed out)."""
        worker = HUMAN_PREFIX + name
        for claims in (self._held, self._set_aside):
            claimed = claims.pop(worker, None)
            if claimed is not None:
                self.service.give_back(claimed[0])
        self._last.pop(worker, None)

    def team(self) -> dict[str, Any]:
        """Whether the people with a worker token (and, ``mixed``, the simulated workers), those not blocked, can
        complete a task at the confidence target: the dashboard's figures, with what to do when they cannot."""
        people = [HUMAN_PREFIX + name for name in self.store.worker_names()]
        simulated = [f"{c.name}-{n + 1}" for c in self.config.crowd_classes for n in range(c.count)]
        workers = [
            w
            for w in people + (simulated if self.config.workforce == "mixed" else [])
            if not self.service.store.is_blocked(w)
        ]
        verdict = self.service.reach(workers)
        completes = verdict.contains_target is not None
        target = self.config.confidence
        message = None
        if not completes:
            message = (
                f"This workforce cannot complete tasks: {len(workers)} workers who may answer, and even when all of "
                f"them agree a task reaches {verdict.confidence:.3f} confidence, short of the target {target} (a person "
                f"not measured yet counts as {self.service.crowd_prior.on_yes:.2f} accurate on images with the target "
                f"and {self.service.crowd_prior.on_no:.2f} on the others; one answer never settles a "
                "task). Load gold questions (imagecontains-server gold add) so that people's accuracy is measured, "
                "add people, or lower --confidence; docs/workforce.md, 'Small teams'."
            )
        return {
            "workers": len(workers),
            "completes": completes,
            "confidence": round(verdict.confidence, 4),
            "target": target,
            "message": message,
        }

    def _check_team(self) -> None:
        """Log when the workforce becomes unable (or able again) to complete tasks: at start, then on each change."""
        team = self.team()
        if team["completes"] != self._team_completes:
            if team["message"] is not None:
                log.warning(team["message"])
            elif self._team_completes is not None:
                log.info("The workforce can complete tasks again (%d workers).", team["workers"])
        self._team_completes = team["completes"]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            self.release_stale()
            self._check_team()


def token_main(argv: Sequence[str]) -> None:
    """``imagecontains-server token worker NAME | dashboard ACCOUNT_ID [--db FILE]``: print a new sign-in token."""
    parser = argparse.ArgumentParser(
        prog="imagecontains-server token",
        description="Issue a sign-in token for the worker page or an account's dashboard (replaces the previous one).",
    )
    parser.add_argument("kind", choices=[WORKER, DASHBOARD])
    parser.add_argument("subject", help="the worker's name, or the 12-digit account id of the dashboard")
    parser.add_argument("--db", default="imagecontains-server.db", help="the server's SQLite file")
    args = parser.parse_args(argv)
    store = WorkforceStore(args.db)
    try:
        token = store.issue_token(args.kind, args.subject)
    except ValueError as err:
        raise SystemExit(f"imagecontains-server token: {err}") from None
    finally:
        store.close()
    print(token)
