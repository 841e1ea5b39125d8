"""SQLite persistence of tasks, answers, balances, worker reliability and temporary credentials.

WAL mode with ``synchronous=NORMAL``: every acknowledged change is in the WAL file before the
response is sent, so killing the process (even SIGKILL) loses nothing; only an OS crash could.
All calls come from the server's event loop thread, one connection, no locking needed.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, microdollars INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY,
    agreed INTEGER NOT NULL DEFAULT 0,
    disagreed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    access_key_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    secret TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

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
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
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
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for rooms that keep tables of their own in this file (``server/mturk.py``), so that
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
            "UPDATE tasks SET state = ?, result = ?, problem = ?, claimed_by = NULL WHERE id = ? AND state = 'processing'",
            (
                state,
                None if result is None else canonical_json(result),
                None if problem is None else canonical_json(problem),
                task_id,
            ),
        )
        return cursor.rowcount == 1

    def expire_due(self, now: float, problem: dict[str, str]) -> int:
        """Fail every processing task whose deadline has passed; return how many."""
        cursor = self._db.execute(
            "UPDATE tasks SET state = 'failed', problem = ?, claimed_by = NULL "
            "WHERE state = 'processing' AND deadline_at <= ?",
            (canonical_json(problem), now),
        )
        return cursor.rowcount

    def claim_next(self, worker: str, function: str) -> StoredTask | None:
        """Give ``worker`` the oldest processing task nobody is answering that it has not answered yet."""
        row = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks t WHERE function = ? AND state = 'processing' "  # noqa: S608
            "AND claimed_by IS NULL AND NOT EXISTS "
            "(SELECT 1 FROM answers a WHERE a.task_id = t.id AND a.worker = ?) ORDER BY id LIMIT 1",
            (function, worker),
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

    def broken_image_reports(self, task_id: int) -> int:
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM answers WHERE task_id = ? AND answer = ?", (task_id, BROKEN_IMAGE)
            ).fetchone()[0]
        )

    def _add(self, task_id: int, worker: str, code: int, now: float) -> None:
        self._db.execute(
            "INSERT INTO answers (task_id, worker, answer, created_at) VALUES (?, ?, ?, ?)",
            (task_id, worker, code, now),
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

    def worker_record(self, workers: list[str]) -> dict[str, tuple[int, int]]:
        """Agreements and disagreements of each worker with past adjudicated results."""
        marks = ",".join("?" * len(workers))
        rows = self._db.execute(
            f"SELECT worker, agreed, disagreed FROM workers WHERE worker IN ({marks})",  # noqa: S608
            workers,
        ).fetchall()
        return {worker: (agreed, disagreed) for worker, agreed, disagreed in rows}

    def record_agreement(self, outcomes: list[tuple[str, bool]]) -> None:
        self._db.executemany(
            "INSERT INTO workers (worker, agreed, disagreed) VALUES (?, ?, ?) ON CONFLICT (worker) DO UPDATE "
            "SET agreed = agreed + excluded.agreed, disagreed = disagreed + excluded.disagreed",
            [(worker, int(agreed), int(not agreed)) for worker, agreed in outcomes],
        )

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
