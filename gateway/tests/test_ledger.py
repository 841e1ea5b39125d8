"""The write-ahead ledger of paid calls: exactly once across lost responses, refusals and killed processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from imagecontains_gateway.ledger import (
    DONE,
    PENDING,
    InsufficientBalance,
    PaidCall,
    PaidCallLedger,
    UnresolvedPaidCall,
    idempotency_key,
)
from imagecontains_gateway.store import TaskStore

ACCOUNT = "123456789012"


class Remote:
    """A paid service kept in a JSON file (so a killed process's calls stay visible): what each key paid, and
    how many times it was paid."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def pay(self, request: dict[str, Any]) -> dict[str, Any]:
        paid = self._read()
        entry = paid.setdefault(request["key"], {"id": f"payment-{len(paid)}", "times": 0})
        entry["times"] += 1
        self.path.write_text(json.dumps(paid))
        return {"id": entry["id"]}

    def find(self, call: PaidCall) -> dict[str, Any] | None:
        entry = self._read().get(call.request["key"])
        return {"id": entry["id"]} if entry else None

    def times(self, key: str) -> int:
        return int(self._read().get(key, {}).get("times", 0))


def open_ledger(tmp_path: Path, balance: int = 10_000_000) -> PaidCallLedger:
    store = TaskStore(str(tmp_path / "crowd.db"))
    store.open_accounts([ACCOUNT], balance)
    return PaidCallLedger(store)


async def inline(function: Any, *args: Any) -> Any:
    return function(*args)


def call_once(ledger: PaidCallLedger, key: str, send: Any, find: Any = None, microdollars: int = 0) -> Any:
    return asyncio.run(
        ledger.call_once(
            key,
            "bonus",
            {"key": key},
            send,
            find=find,
            account=ACCOUNT if microdollars else None,
            microdollars=microdollars,
            run_blocking=inline,
        )
    )


def test_a_call_is_sent_once_and_its_result_kept(tmp_path: Path) -> None:
    ledger, remote = open_ledger(tmp_path), Remote(tmp_path / "remote.json")
    first = call_once(ledger, "k1", remote.pay, remote.find, microdollars=250_000)
    again = call_once(ledger, "k1", remote.pay, remote.find, microdollars=250_000)
    assert first == again == {"id": "payment-0"} and remote.times("k1") == 1
    assert ledger.store.balance(ACCOUNT) == 10_000_000 - 250_000  # charged once
    assert ledger.get("k1").state == DONE  # type: ignore[union-attr]
    assert ledger.unfinished() == []


def test_a_lost_response_is_looked_up_instead_of_sent_again(tmp_path: Path) -> None:
    ledger, remote = open_ledger(tmp_path), Remote(tmp_path / "remote.json")

    def pay_then_lose_the_response(request: dict[str, Any]) -> dict[str, Any]:
        remote.pay(request)
        raise ConnectionError("connection reset")

    with pytest.raises(ConnectionError):
        call_once(ledger, "k1", pay_then_lose_the_response, remote.find)
    assert [call.key for call in ledger.unfinished("bonus")] == ["k1"]
    assert call_once(ledger, "k1", remote.pay, remote.find) == {"id": "payment-0"}
    assert remote.times("k1") == 1


def test_a_call_that_never_arrived_is_sent_again(tmp_path: Path) -> None:
    ledger, remote = open_ledger(tmp_path), Remote(tmp_path / "remote.json")

    def refuse_to_connect(request: dict[str, Any]) -> dict[str, Any]:
        raise ConnectionError("connection refused")

    with pytest.raises(ConnectionError):
        call_once(ledger, "k1", refuse_to_connect, remote.find)
    assert call_once(ledger, "k1", remote.pay, remote.find) == {"id": "payment-0"}
    assert remote.times("k1") == 1


def test_a_call_that_cannot_be_looked_up_is_never_sent_twice(tmp_path: Path) -> None:
    ledger, remote = open_ledger(tmp_path), Remote(tmp_path / "remote.json")

    def pay_then_time_out(request: dict[str, Any]) -> dict[str, Any]:
        remote.pay(request)
        raise TimeoutError

    with pytest.raises(TimeoutError):
        call_once(ledger, "k1", pay_then_time_out)
    with pytest.raises(UnresolvedPaidCall, match=r"k1.*not sent again"):
        call_once(ledger, "k1", remote.pay)
    assert remote.times("k1") == 1


def test_concurrent_calls_of_one_key_make_it_once(tmp_path: Path) -> None:
    ledger, remote = open_ledger(tmp_path), Remote(tmp_path / "remote.json")

    def slow_pay(request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.2)  # long enough for the other caller to arrive while this one is in flight
        return remote.pay(request)

    async def both() -> list[Any]:
        calls = [ledger.call_once("k1", "bonus", {"key": "k1"}, slow_pay, find=remote.find) for _ in range(2)]
        return await asyncio.gather(*calls)

    assert asyncio.run(both()) == [{"id": "payment-0"}] * 2
    assert remote.times("k1") == 1 and ledger._in_flight == {}


def test_an_account_that_cannot_pay_records_and_sends_nothing(tmp_path: Path) -> None:
    ledger, remote = open_ledger(tmp_path, balance=100_000), Remote(tmp_path / "remote.json")
    with pytest.raises(InsufficientBalance):
        call_once(ledger, "k1", remote.pay, remote.find, microdollars=250_000)
    assert ledger.get("k1") is None and remote.times("k1") == 0
    assert ledger.store.balance(ACCOUNT) == 100_000


def test_a_refused_call_is_abandoned_and_refunded(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path)
    call = ledger.intend("k1", "approve", {"id": "s1"}, account=ACCOUNT, microdollars=400_000)
    assert call.state == PENDING and ledger.store.balance(ACCOUNT) == 9_600_000
    ledger.abandon("k1", "400: submission is not awaiting review", refund=True)
    assert ledger.store.balance(ACCOUNT) == 10_000_000 and ledger.get("k1").microdollars == 0  # type: ignore[union-attr]
    assert ledger.unfinished() == []
    with pytest.raises(ValueError, match="abandoned: 400"):
        call_once(ledger, "k1", lambda request: {})


def test_keys_name_one_call() -> None:
    key = idempotency_key("approve", "study-1", "submission-9")
    assert key == idempotency_key("approve", "study-1", "submission-9")
    assert key != idempotency_key("approve", "study-1", "submission-90")
    assert key != idempotency_key("bonus", "study-1", "submission-9")
    assert key.startswith("imagecontains-approve-")


_CRASHING_CHILD = """
import asyncio, os, sys
sys.path.insert(0, {here!r})
from pathlib import Path
from test_ledger import ACCOUNT, Remote, inline, open_ledger
ledger, remote = open_ledger(Path({tmp!r})), Remote(Path({tmp!r}) / "remote.json")
def send(request):
    if {after_effect!r}:
        remote.pay(request)
    os._exit(9)  # killed in the middle of the call, with or without its effect
asyncio.run(ledger.call_once("k1", "bonus", {{"key": "k1"}}, send, find=remote.find, account=ACCOUNT,
                             microdollars=300_000, run_blocking=inline))
"""


@pytest.mark.parametrize("after_effect", [True, False], ids=["killed-after-the-call", "killed-before-the-call"])
def test_a_killed_process_leaves_a_call_made_exactly_once(tmp_path: Path, after_effect: bool) -> None:
    here = str(Path(__file__).resolve().parent)
    child = _CRASHING_CHILD.format(here=here, tmp=str(tmp_path), after_effect=after_effect)
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(child)], capture_output=True, timeout=60)
    assert killed.returncode == 9, killed.stderr.decode()
    ledger, remote = open_ledger(tmp_path), Remote(tmp_path / "remote.json")
    assert [call.key for call in ledger.unfinished()] == ["k1"]
    assert call_once(ledger, "k1", remote.pay, remote.find, microdollars=300_000) == {"id": "payment-0"}
    assert remote.times("k1") == 1
    assert ledger.store.balance(ACCOUNT) == 10_000_000 - 300_000  # charged once, before the crash
