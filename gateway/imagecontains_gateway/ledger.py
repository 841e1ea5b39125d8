"""The write-ahead ledger of paid calls: every call that spends money is made exactly once across crashes.

A paid call (create a study, approve a submission, pay a bonus...) is first recorded as an *intent* under an
idempotency key, in the server's SQLite file and in the same transaction as the charge to the account that
pays for it; only then is it sent. Before each send the intent counts an attempt, and once the remote service
confirms, the intent is marked done with what it returned. After a crash (or a lost response) the intent is
still there, not done: :meth:`PaidCallLedger.call_once` then first asks the service whether the call took
effect (``find``) and sends it again only if it did not, so it never happens twice. A call that cannot be
looked up (``find`` is None, e.g. a non-idempotent payment) and may have been sent is never resent: it raises
:class:`UnresolvedPaidCall` for a person to settle.

A call of several remote steps is one intent per step, each stored before the next is sent: a Prolific bonus
is set up (``find`` answering None: an unpaid bonus costs nothing, so setting it up again is safe), its id
stored as that intent's result, then paid (no ``find``: Prolific's pay is not idempotent and cannot be looked
up), as ``gateway/tests/test_prolific_restart.py`` does.

The ledger shares the task store's connection, and with it the event loop thread: only ``send`` and ``find``
run elsewhere (in threads, as they block on the network).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imagecontains_gateway.store import TaskStore

PENDING, DONE, ABANDONED = "pending", "done", "abandoned"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS paid_calls (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    problem TEXT,
    account TEXT,
    microdollars INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS paid_calls_pending ON paid_calls (kind, created_at) WHERE state = 'pending';
"""

Json = dict[str, Any]


def idempotency_key(kind: str, *parts: object) -> str:
    """A key naming one call: the same parts give the same key (after a restart too), other parts another.

    Include what makes the call unique in this database and no other (e.g. a task's id and creation time), so
    that a new database never reuses the key of an old one's call.
    """
    digest = hashlib.sha256("\0".join(map(repr, (kind, *parts))).encode()).hexdigest()
    return f"imagecontains-{kind}-{digest[:32]}"


class InsufficientBalance(Exception):
    """The account cannot pay for the call: nothing was recorded and nothing must be sent."""


class UnresolvedPaidCall(Exception):
    """A call that may have been sent, and whose outcome cannot be looked up: it is not sent again.

    :param call: the intent, as stored.
    """

    def __init__(self, call: PaidCall) -> None:
        super().__init__(
            f"Paid call {call.key!r} ({call.kind}) may have been sent before a crash and cannot be looked up; "
            "it is not sent again: check it with the crowd platform and settle it by hand."
        )
        self.call = call


@dataclass(frozen=True)
class PaidCall:
    """One intent, as stored.

    :param key: the idempotency key (unique; the same key always means the same call).
    :param kind: what the call is (``create_study``, ``approve``, ``bonus``...): the workforce's own names.
    :param request: what is sent (JSON-able).
    :param state: ``pending``, ``done`` or ``abandoned``.
    :param attempts: sends started; above 0 while pending, the call may have taken effect.
    :param result: what the service returned, once done.
    :param problem: why the call was abandoned.
    :param account: the account charged for it, if any.
    :param microdollars: the amount charged.
    """

    key: str
    kind: str
    request: Json
    state: str
    attempts: int
    result: Json | None
    problem: str | None
    account: str | None
    microdollars: int

    @property
    def done(self) -> bool:
        return self.state == DONE


class PaidCallLedger:
    """The intents of paid calls, in the task store's SQLite file (its connection and transactions).

    :param store: the task store.
    """

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._db = store.connection
        self._db.executescript(_SCHEMA)
        # Keys being called now, with how many callers wait on each: one call per key at a time.
        self._in_flight: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def intend(
        self, key: str, kind: str, request: Json, *, account: str | None = None, microdollars: int = 0
    ) -> PaidCall:
        """Record the intent of a call (and charge ``account``) before it is sent; the stored one if ``key`` exists.

        A key seen before is never charged again. Raises :class:`InsufficientBalance` (nothing recorded) when
        the account cannot pay ``microdollars``.
        """
        with self.store.transaction():
            existing = self.get(key)
            if existing is not None:
                return existing
            if account is not None and not self.store.charge(account, microdollars):
                raise InsufficientBalance(f"Account {account} cannot pay {microdollars / 1e6:.2f} for {kind} {key!r}.")
            self._db.execute(
                "INSERT INTO paid_calls (key, kind, request, state, account, microdollars, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, kind, json.dumps(request), PENDING, account, microdollars, time.time()),
            )
        call = self.get(key)
        assert call is not None
        return call

    def _attempt(self, key: str) -> None:
        """Note that a send starts now (from here on, the call may have taken effect)."""
        self._db.execute("UPDATE paid_calls SET attempts = attempts + 1 WHERE key = ? AND state = ?", (key, PENDING))

    def _finish(self, key: str, result: Json) -> None:
        """The service confirmed the call: mark it done with what it returned."""
        self._db.execute(
            "UPDATE paid_calls SET state = ?, result = ?, finished_at = ? WHERE key = ? AND state = ?",
            (DONE, json.dumps(result), time.time(), key, PENDING),
        )

    def abandon(self, key: str, problem: str, *, refund: bool) -> None:
        """Give the call up (the service refused it, so it never took effect); ``refund`` gives the charge back."""
        with self.store.transaction():
            call = self._require(key)
            if call.state != PENDING:
                return
            self._db.execute(
                "UPDATE paid_calls SET state = ?, problem = ?, finished_at = ? WHERE key = ?",
                (ABANDONED, problem, time.time(), key),
            )
            if refund and call.account is not None and call.microdollars:
                self.store.charge(call.account, -call.microdollars)  # a negative charge credits the account
                self._db.execute("UPDATE paid_calls SET microdollars = 0 WHERE key = ?", (key,))

    def get(self, key: str) -> PaidCall | None:
        row = self._db.execute(_SELECT + "WHERE key = ?", (key,)).fetchone()
        return _call(row) if row else None

    def unfinished(self, kind: str | None = None) -> list[PaidCall]:
        """The intents not yet done nor abandoned (of ``kind``), oldest first: what a restart must resolve."""
        rows = self._db.execute(
            _SELECT + "WHERE state = ? AND (? IS NULL OR kind = ?) ORDER BY created_at, key",
            (PENDING, kind, kind),
        ).fetchall()
        return [_call(row) for row in rows]

    async def call_once(
        self,
        key: str,
        kind: str,
        request: Json,
        send: Callable[[Json], Json],
        *,
        find: Callable[[PaidCall], Json | None] | None = None,
        account: str | None = None,
        microdollars: int = 0,
        run_blocking: Callable[..., Any] = asyncio.to_thread,
    ) -> Json:
        """Make the call ``key`` exactly once; return what the service returned for it.

        ``send(request)`` makes the call; ``find(call)`` asks the service whether a call that may have been
        sent took effect (what it returned, else None). Both block and run through ``run_blocking`` (a thread
        by default). A call already done returns its stored result without any request. If ``send`` raises,
        the intent stays pending (the next ``call_once`` looks it up first); a caller that knows the call was
        refused (e.g. HTTP 400) calls :meth:`abandon`. Concurrent calls of one key are made one after the other
        (the later ones get the first one's result).
        """
        lock, users = self._in_flight.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            # A second caller of the same key waits, then finds the first one's call done (or pending to look up).
            async with lock:
                return await self._call_once(key, kind, request, send, find, account, microdollars, run_blocking)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._in_flight[key]

    async def _call_once(
        self,
        key: str,
        kind: str,
        request: Json,
        send: Callable[[Json], Json],
        find: Callable[[PaidCall], Json | None] | None,
        account: str | None,
        microdollars: int,
        run_blocking: Callable[..., Any],
    ) -> Json:
        call = self.intend(key, kind, request, account=account, microdollars=microdollars)
        if call.done:
            assert call.result is not None
            return call.result
        if call.state == ABANDONED:
            raise ValueError(f"Paid call {key!r} was abandoned: {call.problem}")
        if call.attempts:
            if find is None:
                raise UnresolvedPaidCall(call)
            found = await run_blocking(find, call)
            if found is not None:
                self._finish(key, found)
                return found
        self._attempt(key)
        result = await run_blocking(send, call.request)
        self._finish(key, result)
        return result

    def _require(self, key: str) -> PaidCall:
        call = self.get(key)
        if call is None:
            raise KeyError(f"No paid call {key!r} in the ledger.")
        return call


_SELECT = "SELECT key, kind, request, state, attempts, result, problem, account, microdollars FROM paid_calls "


def _call(row: tuple[Any, ...]) -> PaidCall:
    return PaidCall(
        key=row[0],
        kind=row[1],
        request=json.loads(row[2]),
        state=row[3],
        attempts=row[4],
        result=json.loads(row[5]) if row[5] is not None else None,
        problem=row[6],
        account=row[7],
        microdollars=row[8],
    )
