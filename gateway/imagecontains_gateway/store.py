"""SQLite persistence of tasks, answers, balances, worker models, gold questions and temporary credentials.

WAL mode with ``synchronous=NORMAL``: every acknowledged change is in the WAL file before the
response is sent, so killing the process (even SIGKILL) loses nothing; only an OS crash could.
All calls come from the server's event loop thread, one connection, no locking needed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from imagecontains_gateway.adjudication import MODEL_FIELDS, ClassPrior, WorkerModel

PROCESSING, COMPLETED, FAILED = "processing", "completed", "failed"
# The stored answers of a human worker who could not tell, or whose image did not load: they keep the worker
# from being asked again, but are no votes.
CANT_TELL = -1
BROKEN_IMAGE = -2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    function TEXT NOT NULL,
    name TEXT NOT NULL,
    input TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    problem TEXT,
    created_at REAL NOT NULL,
    deadline_at REAL NOT NULL,
    get_count INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    UNIQUE (account, function, name)
);
CREATE INDEX IF NOT EXISTS tasks_processing_by_account ON tasks (account) WHERE state = 'processing';
CREATE INDEX IF NOT EXISTS tasks_open ON tasks (function, id) WHERE state = 'processing' AND claimed_by IS NULL;
CREATE INDEX IF NOT EXISTS tasks_deadline ON tasks (deadline_at) WHERE state = 'processing';
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL,
    worker TEXT NOT NULL,
    answer INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_by_task ON answers (task_id, worker);
CREATE INDEX IF NOT EXISTS answers_by_worker ON answers (worker, answer, created_at);
CREATE INDEX IF NOT EXISTS answers_broken_image ON answers (task_id) WHERE answer = -2;
CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, microdollars INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS worker_models (
    worker TEXT PRIMARY KEY,
    yes_said_yes REAL NOT NULL DEFAULT 0,
    yes_said_no REAL NOT NULL DEFAULT 0,
    no_said_no REAL NOT NULL DEFAULT 0,
    no_said_yes REAL NOT NULL DEFAULT 0,
    gold_right INTEGER NOT NULL DEFAULT 0,
    gold_wrong INTEGER NOT NULL DEFAULT 0,
    questions INTEGER NOT NULL DEFAULT 0,
    blocked_reason TEXT,
    blocked_at REAL
);
CREATE TABLE IF NOT EXISTS class_priors (
    account TEXT NOT NULL,
    function TEXT NOT NULL,
    label TEXT NOT NULL,
    yes REAL NOT NULL,
    no REAL NOT NULL,
    hard REAL NOT NULL DEFAULT 0,
    easy REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (account, function, label)
);
CREATE TABLE IF NOT EXISTS gold_questions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_url TEXT NOT NULL,
    label TEXT NOT NULL,
    contains_target INTEGER NOT NULL,
    UNIQUE (image_url, label)
);
CREATE TABLE IF NOT EXISTS gold_answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gold_id INTEGER NOT NULL,
    worker TEXT NOT NULL,
    answer INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS gold_answers_by_worker ON gold_answers (worker, gold_id);
CREATE TABLE IF NOT EXISTS account_worker_answers (
    account TEXT NOT NULL,
    worker TEXT NOT NULL,
    answers INTEGER NOT NULL,
    PRIMARY KEY (account, worker)
);
CREATE TRIGGER IF NOT EXISTS answer_counted AFTER INSERT ON answers WHEN NEW.answer >= 0 BEGIN
    INSERT INTO account_worker_answers (account, worker, answers)
    SELECT account, NEW.worker, 1 FROM tasks WHERE id = NEW.task_id
    ON CONFLICT (account, worker) DO UPDATE SET answers = answers + 1;
END;
CREATE TRIGGER IF NOT EXISTS answer_uncounted AFTER DELETE ON answers WHEN OLD.answer >= 0 BEGIN
    UPDATE account_worker_answers SET answers = answers - 1
    WHERE worker = OLD.worker AND account = (SELECT account FROM tasks WHERE id = OLD.task_id);
END;
CREATE TABLE IF NOT EXISTS worker_non_answers (
    worker TEXT PRIMARY KEY,
    cant_tell INTEGER NOT NULL DEFAULT 0,
    broken_image INTEGER NOT NULL DEFAULT 0,
    broken_gold INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    access_key_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    secret TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

# Columns added since a table's first version: when a task went to broken-image review, and when it finished (the
# dashboard's durations; NULL in rows finished before the column existed); the class prior's hard images.
_ADDED_COLUMNS = {
    "tasks": {"broken_review": "INTEGER NOT NULL DEFAULT 0", "finished_at": "REAL"},
    "class_priors": {"hard": "REAL NOT NULL DEFAULT 0", "easy": "REAL NOT NULL DEFAULT 0"},
}
_MODEL_COLUMNS = ", ".join(MODEL_FIELDS)


@dataclass(frozen=True)
class NonAnswers:
    """A worker's answers that were no vote: "can't tell", images reported broken, gold images reported broken
    (gold images are known to load, so those reports were wrong)."""

    cant_tell: int = 0
    broken_image: int = 0
    broken_gold: int = 0

    @property
    def total(self) -> int:
        return self.cant_tell + self.broken_image + self.broken_gold


NON_ANSWER_KINDS = ("cant_tell", "broken_image", "broken_gold")
_TASK_COLUMNS = "id, account, function, name, input, state, result, problem, created_at, deadline_at, get_count"


@dataclass(frozen=True)
class StoredTask:
    """One task row; ``input``, ``result`` and ``problem`` are kept as the JSON text that was stored."""

    id: int
    account: str
    function: str
    name: str
    input: str
    state: str
    result: str | None
    problem: str | None
    created_at: float
    deadline_at: float
    get_count: int

    def document_json(self) -> str:
        """The task document of the contract, serialised without re-parsing the stored JSON."""
        return (
            f'{{"taskName":{json.dumps(self.name)},"input":{self.input},"state":"{self.state}",'
            f'"result":{self.result or "null"},"problemDetails":{self.problem or "null"}}}'
        )


def connect_private(path: str) -> sqlite3.Connection:
    """Open the server's database, readable and writable by its owner only.

    It holds account secrets of temporary credentials and session hashes. SQLite gives the ``-wal`` and
    ``-shm`` files it creates the mode of the database file; files made by an older version are tightened.
    """
    try:
        # Only a new file is opened here: closing any descriptor of an open database drops this process's
        # POSIX locks on it, and another process may then checkpoint and delete the WAL still being written.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    except FileExistsError:
        pass
    for file in (path, f"{path}-wal", f"{path}-shm"):
        try:
            if os.stat(file).st_mode & 0o077:
                os.chmod(file, 0o600)
        except FileNotFoundError:
            pass
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def canonical_json(value: Any) -> str:
    """JSON text that is equal for equal values (used to compare a repeated PUT's input)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_microdollars(dollars: float) -> int:
    return round(dollars * 1_000_000)


class TaskStore:
    """Tasks, answers, balances, worker reliability and sessions in one SQLite file.

    :param path: the database file (created when missing).
    """

    def __init__(self, path: str) -> None:
        self._db = connect_private(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        counted = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'account_worker_answers'"
        ).fetchone()
        self._db.executescript(_SCHEMA)
        if not counted:  # a database of an earlier version: count the votes it holds once
            self._db.execute(
                "INSERT OR IGNORE INTO account_worker_answers (account, worker, answers) SELECT t.account, a.worker, "
                "COUNT(*) FROM answers a JOIN tasks t ON t.id = a.task_id WHERE a.answer >= 0 GROUP BY 1, 2"
            )
        for table, added in _ADDED_COLUMNS.items():  # a database of an earlier version
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column, definition in added.items():
                if column not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for rooms that keep tables of their own in this file (``server/ledger.py``), so that
        their changes and the task's can share one :meth:`transaction`."""
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Apply the changes made inside the block together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def open_accounts(self, accounts: list[str], starting_microdollars: int) -> None:
        """Give accounts seen for the first time their starting balance (kept across restarts)."""
        self._db.executemany(
            "INSERT OR IGNORE INTO balances (account, microdollars) VALUES (?, ?)",
            [(account, starting_microdollars) for account in accounts],
        )

    def release_claims(self) -> None:
        """Forget which worker was answering what: after a restart those workers are gone."""
        self._db.execute("UPDATE tasks SET claimed_by = NULL WHERE state = 'processing' AND claimed_by IS NOT NULL")

    # Tasks

    def get(self, account: str, function: str, name: str) -> StoredTask | None:
        row = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE account = ? AND function = ? AND name = ?",  # noqa: S608
            (account, function, name),
        ).fetchone()
        return StoredTask(*row) if row else None

    def get_by_id(self, task_id: int) -> StoredTask | None:
        row = self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()  # noqa: S608
        return StoredTask(*row) if row else None

    def insert(
        self, account: str, function: str, name: str, input_json: str, now: float, deadline: float
    ) -> StoredTask:
        cursor = self._db.execute(
            "INSERT INTO tasks (account, function, name, input, state, created_at, deadline_at) "
            "VALUES (?, ?, ?, ?, 'processing', ?, ?)",
            (account, function, name, input_json, now, deadline),
        )
        return StoredTask(
            cursor.lastrowid or 0, account, function, name, input_json, PROCESSING, None, None, now, deadline, 0
        )

    def delete(self, task_id: int) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM answers WHERE task_id = ?", (task_id,))
            self._db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))

    def count_processing(self, account: str) -> int:
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM tasks WHERE account = ? AND state = 'processing'", (account,)
            ).fetchone()[0]
        )

    def count_get(self, task_id: int) -> None:
        self._db.execute("UPDATE tasks SET get_count = get_count + 1 WHERE id = ?", (task_id,))

    def finish(self, task_id: int, *, result: Any = None, problem: Any = None) -> bool:
        """Complete (``result``) or fail (``problem``) a task that is still processing; False if it was not."""
        state = COMPLETED if problem is None else FAILED
        cursor = self._db.execute(
            "UPDATE tasks SET state = ?, result = ?, problem = ?, claimed_by = NULL, finished_at = ? "
            "WHERE id = ? AND state = 'processing'",
            (
                state,
                None if result is None else canonical_json(result),
                None if problem is None else canonical_json(problem),
                time.time(),
                task_id,
            ),
        )
        return cursor.rowcount == 1

    def expire_due(self, now: float, problem: dict[str, str]) -> int:
        """Fail every processing task whose deadline has passed; return how many."""
        cursor = self._db.execute(
            "UPDATE tasks SET state = 'failed', problem = ?, claimed_by = NULL, finished_at = deadline_at "
            "WHERE state = 'processing' AND deadline_at <= ?",
            (canonical_json(problem), now),
        )
        return cursor.rowcount

    def cancel(
        self, account: str, function: str, problem: dict[str, str], *, names: Sequence[str] = (), prefix: str = ""
    ) -> list[str]:
        """Fail ``account``'s processing tasks of ``function`` named in ``names``, or whose names start with a
        non-empty ``prefix``, with ``problem``; return their names (nobody is asked them again)."""
        if prefix:
            where, values = "substr(name, 1, ?) = ?", [len(prefix), prefix]
        else:
            where, values = f"name IN ({','.join('?' * len(names))})", list(names)
        rows = self._db.execute(
            "UPDATE tasks SET state = 'failed', problem = ?, claimed_by = NULL "  # noqa: S608
            f"WHERE account = ? AND function = ? AND state = 'processing' AND {where} RETURNING name",
            [canonical_json(problem), account, function, *values],
        ).fetchall()
        return sorted(name for (name,) in rows)

    def claim_next(
        self,
        worker: str,
        function: str,
        accounts: Collection[str] | None = None,
        *,
        reviewer: bool = False,
        created_before: float | None = None,
    ) -> StoredTask | None:
        """Give ``worker`` the oldest processing task nobody is answering that it has not answered yet (of one of
        ``accounts``, when given; created before ``created_before``, when given); a task under broken-image review
        only to a ``reviewer``."""
        of_accounts = "" if accounts is None else f"AND account IN ({','.join('?' * len(accounts))}) "
        old_enough = "" if created_before is None else "AND created_at < ? "
        row = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks t WHERE function = ? AND state = 'processing' "  # noqa: S608
            f"AND claimed_by IS NULL {of_accounts}{old_enough}AND (broken_review = 0 OR ?) AND NOT EXISTS "
            "(SELECT 1 FROM answers a WHERE a.task_id = t.id AND a.worker = ?) ORDER BY id LIMIT 1",
            (function, *(accounts or ()), *(() if created_before is None else (created_before,)), reviewer, worker),
        ).fetchone()
        if row is None:
            return None
        self._db.execute("UPDATE tasks SET claimed_by = ? WHERE id = ?", (worker, row[0]))
        return StoredTask(*row)

    def claim(self, task_id: int, worker: str) -> bool:
        """Give ``worker`` this processing task if nobody is answering it; False if somebody is (or it is done)."""
        cursor = self._db.execute(
            "UPDATE tasks SET claimed_by = ? WHERE id = ? AND state = 'processing' AND claimed_by IS NULL",
            (worker, task_id),
        )
        return cursor.rowcount == 1

    def unclaim(self, task_id: int) -> None:
        self._db.execute("UPDATE tasks SET claimed_by = NULL WHERE id = ?", (task_id,))

    def tasks(self, function: str | None = None) -> list[dict[str, Any]]:
        """Every stored task with its answers (for tests and operators, not the hot path)."""
        query = f"SELECT {_TASK_COLUMNS} FROM tasks"  # noqa: S608
        rows = self._db.execute(
            query + (" WHERE function = ? ORDER BY id" if function else " ORDER BY id"), (function,) if function else ()
        ).fetchall()
        result = []
        for row in rows:
            task = StoredTask(*row)
            result.append(
                {
                    "account": task.account,
                    "function": task.function,
                    "task_name": task.name,
                    "state": task.state,
                    "input": json.loads(task.input),
                    "result": json.loads(task.result) if task.result else None,
                    "problem": json.loads(task.problem) if task.problem else None,
                    "answers": [(worker, bool(answer)) for worker, answer in self.answers(task.id)],
                }
            )
        return result

    # Answers, workers and money

    def answers(self, task_id: int) -> list[tuple[str, int]]:
        """The yes/no votes of a task (``CANT_TELL`` answers left out)."""
        return self._db.execute(
            "SELECT worker, answer FROM answers WHERE task_id = ? AND answer >= 0 ORDER BY id", (task_id,)
        ).fetchall()

    def add_answer(self, task_id: int, worker: str, answer: bool | None, now: float) -> None:
        """Store a vote, or ``None`` for "can't tell"."""
        self._add(task_id, worker, CANT_TELL if answer is None else int(answer), now)

    def delete_answers(self, task_id: int, worker: str) -> None:
        self._db.execute("DELETE FROM answers WHERE task_id = ? AND worker = ?", (task_id, worker))

    def add_broken_image_report(self, task_id: int, worker: str, now: float) -> None:
        self._add(task_id, worker, BROKEN_IMAGE, now)

    def broken_image_reporters(self, task_id: int) -> list[str]:
        """The workers who reported the task's image broken."""
        rows = self._db.execute("SELECT worker FROM answers WHERE task_id = ? AND answer = ?", (task_id, BROKEN_IMAGE))
        return [worker for (worker,) in rows]

    def broken_image_reports_since(self, worker: str, since: float) -> int:
        """How many images ``worker`` reported broken (and was believed) since ``since``."""
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM answers WHERE worker = ? AND answer = ? AND created_at >= ?",
                (worker, BROKEN_IMAGE, since),
            ).fetchone()[0]
        )

    def non_answers_of_task(self, task_id: int) -> int:
        """The task's "can't tell" answers and broken-image reports."""
        return int(
            self._db.execute("SELECT COUNT(*) FROM answers WHERE task_id = ? AND answer < 0", (task_id,)).fetchone()[0]
        )

    def start_broken_image_review(self, task_id: int) -> None:
        self._db.execute("UPDATE tasks SET broken_review = 1 WHERE id = ?", (task_id,))

    def in_broken_image_review(self, task_id: int) -> bool:
        row = self._db.execute("SELECT broken_review FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return bool(row and row[0])

    def count_non_answer(self, worker: str, kind: str) -> NonAnswers:
        """Count one more non-answer of ``kind`` (a ``NonAnswers`` field) in the worker's record; return the record."""
        if kind not in NON_ANSWER_KINDS:
            raise ValueError(f"Invalid non-answer kind {kind!r}.")
        row = self._db.execute(
            f"INSERT INTO worker_non_answers (worker, {kind}) VALUES (?, 1) ON CONFLICT (worker) "  # noqa: S608
            f"DO UPDATE SET {kind} = {kind} + 1 RETURNING cant_tell, broken_image, broken_gold",
            (worker,),
        ).fetchone()
        return NonAnswers(*row)

    def non_answers(self, worker: str) -> NonAnswers:
        row = self._db.execute(
            "SELECT cant_tell, broken_image, broken_gold FROM worker_non_answers WHERE worker = ?", (worker,)
        ).fetchone()
        return NonAnswers(*row) if row else NonAnswers()

    def questions_given(self, worker: str) -> int:
        row = self._db.execute("SELECT questions FROM worker_models WHERE worker = ?", (worker,)).fetchone()
        return int(row[0]) if row else 0

    def _add(self, task_id: int, worker: str, code: int, now: float) -> None:
        self._db.execute(
            "INSERT INTO answers (task_id, worker, answer, created_at) VALUES (?, ?, ?, ?)",
            (task_id, worker, code, now),
        )

    def refund(self, account: str, microdollars: int) -> None:
        self._db.execute(
            "UPDATE balances SET microdollars = microdollars + ? WHERE account = ?", (microdollars, account)
        )

    def charge(self, account: str, microdollars: int) -> bool:
        """Take ``microdollars`` from the account's balance; False (and nothing taken) if it has too little."""
        cursor = self._db.execute(
            "UPDATE balances SET microdollars = microdollars - ? WHERE account = ? AND microdollars >= ?",
            (microdollars, account, microdollars),
        )
        return cursor.rowcount == 1

    def balance(self, account: str) -> int:
        row = self._db.execute("SELECT microdollars FROM balances WHERE account = ?", (account,)).fetchone()
        return int(row[0]) if row else 0

    # Worker models and gold questions

    def worker_models(self, workers: Iterable[str]) -> dict[str, WorkerModel]:
        """The stored model of each of ``workers`` that has one."""
        workers = list(workers)
        marks = ",".join("?" * len(workers))
        rows = self._db.execute(
            f"SELECT worker, {_MODEL_COLUMNS} FROM worker_models WHERE worker IN ({marks})",  # noqa: S608
            workers,
        ).fetchall()
        return {row[0]: WorkerModel(*row[1:]) for row in rows}

    def save_models(self, models: Mapping[str, WorkerModel]) -> None:
        names = MODEL_FIELDS
        self._db.executemany(
            f"INSERT INTO worker_models (worker, {_MODEL_COLUMNS}) VALUES ({','.join('?' * (len(names) + 1))}) "  # noqa: S608
            f"ON CONFLICT (worker) DO UPDATE SET {', '.join(f'{name} = excluded.{name}' for name in names)}",
            [(worker, *(getattr(model, name) for name in names)) for worker, model in models.items()],
        )

    def class_prior(self, account: str, function: str, label: str) -> ClassPrior:
        """How often the finished tasks of ``account`` for ``function`` and ``label`` contained the target, and how
        often they were hard."""
        row = self._db.execute(
            "SELECT yes, no, hard, easy FROM class_priors WHERE account = ? AND function = ? AND label = ?",
            (account, function, label),
        ).fetchone()
        return ClassPrior(*row) if row else ClassPrior()

    def save_class_prior(self, account: str, function: str, label: str, prior: ClassPrior) -> None:
        self._db.execute(
            "INSERT INTO class_priors (account, function, label, yes, no, hard, easy) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (account, function, label) DO UPDATE SET "
            "yes = excluded.yes, no = excluded.no, hard = excluded.hard, easy = excluded.easy",
            (account, function, label, prior.yes, prior.no, prior.hard, prior.easy),
        )

    def count_question(self, worker: str) -> int:
        """Count one more question given to ``worker``; return how many it had been given before."""
        row = self._db.execute(
            "INSERT INTO worker_models (worker, questions) VALUES (?, 1) "
            "ON CONFLICT (worker) DO UPDATE SET questions = questions + 1 RETURNING questions",
            (worker,),
        ).fetchone()
        return int(row[0]) - 1

    def block(self, worker: str, reason: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO worker_models (worker, blocked_reason, blocked_at) VALUES (?, ?, ?) ON CONFLICT (worker) "
            "DO UPDATE SET blocked_reason = excluded.blocked_reason, blocked_at = excluded.blocked_at",
            (worker, reason, now),
        )

    def is_blocked(self, worker: str) -> bool:
        row = self._db.execute("SELECT blocked_reason FROM worker_models WHERE worker = ?", (worker,)).fetchone()
        return row is not None and row[0] is not None

    def add_gold(self, questions: Iterable[tuple[str, str, bool]]) -> int:
        """Store gold questions (image URL, label, true answer); return how many were new."""
        with self.transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO gold_questions (image_url, label, contains_target) VALUES (?, ?, ?)",
                [(image_url, label, int(contains)) for image_url, label, contains in questions],
            )
            return self._db.total_changes - before

    def next_gold(self, worker: str, draw: float, avoid: Collection[int] = ()) -> tuple[int, str, str, bool] | None:
        """A gold question ``worker`` has not answered yet, picked by ``draw`` in [0, 1): (id, image, label, truth).

        Gold questions in ``avoid`` are picked only when no other is left.
        """
        unanswered = (
            "FROM gold_questions g WHERE NOT EXISTS "
            "(SELECT 1 FROM gold_answers a WHERE a.gold_id = g.id AND a.worker = ?)"
        )
        for excluded in (list(avoid), []) if avoid else ([],):
            where = unanswered + (f" AND g.id NOT IN ({','.join('?' * len(excluded))})" if excluded else "")
            count = self._db.execute(f"SELECT COUNT(*) {where}", (worker, *excluded)).fetchone()[0]
            if count:
                row = self._db.execute(
                    f"SELECT id, image_url, label, contains_target {where} ORDER BY id LIMIT 1 OFFSET ?",
                    (worker, *excluded, int(draw * count)),
                ).fetchone()
                return (row[0], row[1], row[2], bool(row[3]))
        return None

    def gold_question(self, gold_id: int) -> tuple[str, str]:
        """The (image URL, label) of a gold question."""
        row = self._db.execute("SELECT image_url, label FROM gold_questions WHERE id = ?", (gold_id,)).fetchone()
        return row[0], row[1]

    def gold_truth(self, image_url: str, label: str) -> bool | None:
        """The true answer of the gold question on ``image_url`` about ``label`` (compared case-insensitively)."""
        rows = self._db.execute(
            "SELECT label, contains_target FROM gold_questions WHERE image_url = ?", (image_url,)
        ).fetchall()
        wanted = label.casefold()
        return next((bool(contains) for stored, contains in rows if stored.casefold() == wanted), None)

    def add_gold_answer(self, gold_id: int, worker: str, answer: bool | None, now: float) -> None:
        self._db.execute(
            "INSERT INTO gold_answers (gold_id, worker, answer, created_at) VALUES (?, ?, ?, ?)",
            (gold_id, worker, CANT_TELL if answer is None else int(answer), now),
        )

    def delete_gold_answer(self, gold_id: int, worker: str) -> bool | None:
        """Delete ``worker``'s answer to a gold question; return the vote it was (None: "can't tell" or none)."""
        row = self._db.execute(
            "DELETE FROM gold_answers WHERE gold_id = ? AND worker = ? RETURNING answer", (gold_id, worker)
        ).fetchone()
        return None if row is None or row[0] < 0 else bool(row[0])

    def export_answers(self) -> Iterator[dict[str, Any]]:
        """Every yes/no answer, task and gold alike, in the order given (for ``export-answers``)."""
        rows = self._db.execute(
            "SELECT a.created_at, 0, t.account, t.name, a.worker, a.answer FROM answers a "
            "JOIN tasks t ON t.id = a.task_id WHERE a.answer >= 0 UNION ALL "
            "SELECT created_at, 1, NULL, 'gold-' || gold_id, worker, answer FROM gold_answers WHERE answer >= 0 "
            "ORDER BY 1"
        )
        for answered_at, gold, account, task_name, worker, answer in rows:
            yield {
                "task_name": task_name,
                "worker": worker,
                "contains_target": bool(answer),
                "gold": bool(gold),
                "answered_at": datetime.fromtimestamp(answered_at, timezone.utc).isoformat(),
                "account": account,
            }

    # Temporary credentials

    def add_session(self, access_key_id: str, account: str, secret: str, token: str, expires_at: float) -> None:
        self._db.execute(
            "INSERT INTO sessions (access_key_id, account, secret, token, expires_at) VALUES (?, ?, ?, ?, ?)",
            (access_key_id, account, secret, token, expires_at),
        )

    def session(self, access_key_id: str) -> tuple[str, str, str, float] | None:
        row = self._db.execute(
            "SELECT account, secret, token, expires_at FROM sessions WHERE access_key_id = ?", (access_key_id,)
        ).fetchone()
        return (row[0], row[1], row[2], row[3]) if row else None
