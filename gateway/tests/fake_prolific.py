"""A fake Prolific on loopback, for the Prolific client's and workforce's tests and the benchmark.

It speaks Prolific's REST wire protocol as its API reference describes it (read 2026-12-03: docs.prolific.com
/api-reference and /openapi.json): the paths under ``/api/v1/``, ``Authorization: Token <token>``, JSON bodies,
the error envelope ``{"error": {"status", "error_code", "title", "detail"}}``, the study status machine
(``UNPUBLISHED`` -PUBLISH-> ``ACTIVE`` -PAUSE-> ``PAUSED`` -START-> ``ACTIVE``, -STOP-> ``COMPLETED``; a full
study goes ``AWAITING REVIEW`` then ``COMPLETED``, and more places make it ``ACTIVE`` again), the submission
status machine (``ACTIVE`` -> ``AWAITING REVIEW`` -> ``APPROVED``, or ``RETURNED`` / ``TIMED-OUT``, which free
the place), lists in pages (``page``, ``page_size``), the study cost calculator, and bonuses set up then paid
(paying twice pays twice, as Prolific warns).

Where the reference is silent the fake picks the plain choice and says so: a list's last page shows by
``_links.next.href`` being null (and ``meta.count``); a balance that cannot pay is refused with 400 and the
title "Insufficient funds"; the platform fee is 42.8% of rewards and a reward under 6.00 an hour is refused
(prolific.com/pricing: corporate fee, minimum pay £6.00 / $8.00 an hour, as transcribed on 2026-09-20).

Money: publishing (or adding places) reserves what the places cost, fees included, and is refused when the
available balance cannot cover it; approving a submission spends one place's cost; paying bonuses spends
their total. :attr:`FakeProlific.spent_cents` and :attr:`FakeProlific.ledger` are what Prolific would
charge, for tests to compare with the gateway's dashboard; :attr:`FakeProlific.effects` counts how many
times each paid call took effect (``("approve", submission_id)``, ``("pay", bulk_bonus_id)``,
``("publish", study_id)``, ``("create_study", internal_name)``...).

Tests play the participants: :meth:`FakeProlific.start_submission` (a participant takes a place and is sent
to :meth:`FakeProlific.participant_url`), :meth:`complete_submission`, :meth:`return_submission` and
:meth:`time_out_submission`. Faults: :meth:`FakeProlific.inject` answers the next matching requests with
429 (and ``Retry-After``), 5xx or any error, before or after the request took effect.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from loopback import LoopbackServer

TOKEN = "fake-prolific-token-5c1e2b7a"
FEE_RATE = 0.428
# Prolific's error_code numbers are not documented; these only keep the envelope's shape.
_ERROR_CODES = {400: 140000, 401: 140100, 403: 140300, 404: 140400, 429: 142900, 500: 150000, 502: 150200, 503: 150300}
_PLACE_HOLDING = ("RESERVED", "ACTIVE", "AWAITING REVIEW", "APPROVED")
_TRANSITIONS = {
    ("UNPUBLISHED", "PUBLISH"): "ACTIVE",
    ("ACTIVE", "PAUSE"): "PAUSED",
    ("ACTIVE", "STOP"): "COMPLETED",
    ("PAUSED", "START"): "ACTIVE",
    ("PAUSED", "STOP"): "COMPLETED",
}
# Fields a published study may still change (the reference's PATCH rules).
_PUBLISHED_PATCHABLE = {"internal_name", "total_available_places"}


class FakeRefusal(Exception):
    """A participant action the fake Prolific would not allow (a test's mistake or a full study)."""


class _ApiError(Exception):
    def __init__(self, status: int, title: str, detail: Any) -> None:
        super().__init__(title)
        self.status, self.title, self.detail = status, title, detail


@dataclass
class Fault:
    """An injected answer: the next ``times`` requests matching ``method`` and ``path`` get ``status``.

    :param after_effect: the request takes effect first, then the error is sent (a lost response).
    """

    status: int
    times: int = 1
    method: str | None = None
    path: str | None = None
    retry_after: int | None = None
    after_effect: bool = False
    title: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path in path)


class FakeProlific:
    """A fake Prolific API on ``http://127.0.0.1:<port>``; pass :attr:`api_url` to ``ProlificClient``.

    :param token: the only token accepted.
    :param balance_cents: the workspace's balance, in cents.
    :param fee_rate: Prolific's fee on rewards.
    :param vat_rate: VAT on the fee.
    :param currency: the workspace's currency.
    :param min_hourly_reward_cents: rewards paying less an hour (by ``estimated_completion_time``) are refused.
    """

    def __init__(
        self,
        token: str = TOKEN,
        *,
        balance_cents: float = 100_000.0,
        fee_rate: float = FEE_RATE,
        vat_rate: float = 0.0,
        currency: str = "GBP",
        min_hourly_reward_cents: float = 600.0,
    ) -> None:
        self.token = token
        self.min_hourly_reward_cents = min_hourly_reward_cents
        self.balance_cents = balance_cents
        self.reserved_cents = 0.0
        self.fee_rate, self.vat_rate, self.currency = fee_rate, vat_rate, currency
        self.studies: dict[str, dict[str, Any]] = {}
        self.submissions: dict[str, dict[str, Any]] = {}
        self.bulk_bonuses: dict[str, dict[str, Any]] = {}
        # Every request as (method, path without query), and every effect of a paid call.
        self.requests: Counter[tuple[str, str]] = Counter()
        self.effects: Counter[tuple[str, str]] = Counter()
        # Money Prolific charged: (what, id, cents), in order.
        self.ledger: list[tuple[str, str, float]] = []
        self.faults: list[Fault] = []
        self.project_id = "fake-project"
        self._lock = threading.RLock()
        self._server = LoopbackServer(self._answer)
        self.api_url = self._server.endpoint_url

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> FakeProlific:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # What tests read

    @property
    def spent_cents(self) -> float:
        """Everything Prolific charged (approved places with their fees, paid bonuses), in cents."""
        with self._lock:
            return round(sum(cents for _, _, cents in self.ledger), 6)

    @property
    def available_cents(self) -> float:
        with self._lock:
            return self.balance_cents - self.reserved_cents

    def place_cost(self, reward: float) -> float:
        """One place's cost in cents: the reward, the fee on it and the VAT on the fee."""
        return round(reward * (1 + self.fee_rate * (1 + self.vat_rate)), 6)

    def study_submissions(self, study_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for s in self.submissions.values() if s["study_id"] == study_id]

    # Participants

    def start_submission(self, study_id: str, participant_id: str | None = None) -> str:
        """A participant takes a place of an ACTIVE study; returns the submission id (``SESSION_ID``)."""
        with self._lock:
            study = self._study(study_id)
            if study["status"] != "ACTIVE":
                raise FakeRefusal(f"Study {study_id} is {study['status']}: no participant can start it.")
            if self._places_taken(study_id) >= study["total_available_places"]:
                raise FakeRefusal(f"Study {study_id} is full.")
            participant_id = participant_id or uuid.uuid4().hex[:24]
            if any(
                s["participant"] == participant_id and s["study_id"] == study_id and s["status"] in _PLACE_HOLDING
                for s in self.submissions.values()
            ):
                raise FakeRefusal(f"Participant {participant_id} already holds a place in study {study_id}.")
            submission_id = uuid.uuid4().hex[:24]
            self.submissions[submission_id] = {
                "id": submission_id,
                "participant": participant_id,
                "study_id": study_id,
                "status": "ACTIVE",
                "started_at": _now(),
                "completed_at": None,
                "entered_code": None,
                "bonus_payments": [],
                "return_requested": None,
            }
            return submission_id

    def participant_url(self, submission_id: str) -> str:
        """The study URL as Prolific sends the participant there, its placeholders filled in."""
        with self._lock:
            submission = self._submission(submission_id)
            url = self._study(submission["study_id"])["external_study_url"]
            return (
                url.replace("{{%PROLIFIC_PID%}}", submission["participant"])
                .replace("{{%STUDY_ID%}}", submission["study_id"])
                .replace("{{%SESSION_ID%}}", submission_id)
            )

    def complete_submission(self, submission_id: str, code: str) -> None:
        """The participant came back with completion code ``code`` (AWAITING REVIEW, or APPROVED by its code)."""
        with self._lock:
            submission = self._active(submission_id)
            submission["entered_code"], submission["completed_at"] = code, _now()
            study = self._study(submission["study_id"])
            actions = {
                action.get("action")
                for completion in study.get("completion_codes") or []
                if completion.get("code") == code
                for action in completion.get("actions") or []
            }
            submission["status"] = "AWAITING REVIEW"
            if "AUTOMATICALLY_APPROVE" in actions:
                self._approve(submission)
            self._settle(study)

    def return_submission(self, submission_id: str) -> None:
        """The participant gave the place back (it opens again for someone else)."""
        self._end(submission_id, "RETURNED")

    def time_out_submission(self, submission_id: str) -> None:
        """The participant took longer than ``maximum_allowed_time`` (the place opens again)."""
        self._end(submission_id, "TIMED-OUT")

    # Faults

    def inject(
        self,
        status: int,
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        retry_after: int | None = None,
        after_effect: bool = False,
        title: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path`` (a substring) with ``status``."""
        with self._lock:
            self.faults.append(Fault(status, times, method, path, retry_after, after_effect, title))

    # The HTTP side

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(target)
        path, query = split.path, {k: v[-1] for k, v in parse_qs(split.query).items()}
        with self._lock:
            self.requests[(method, path)] += 1
            fault = next((f for f in self.faults if f.matches(method, path)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            try:
                if _header(headers, "Authorization") != f"Token {self.token}":
                    raise _ApiError(401, "Unauthorized", "Authentication credentials were not provided or are invalid.")
                if fault is not None and not fault.after_effect:
                    return _fault_answer(fault)
                status, reply = self._route(method, path, query, _json(body))
                if fault is not None:
                    return _fault_answer(fault)
                return status, {"Content-Type": "application/json"}, json.dumps(reply).encode()
            except _ApiError as err:
                return _error_answer(err.status, err.title, err.detail)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["api", "v1"]:
            raise _ApiError(404, "Not Found", f"No endpoint {path}.")
        route = parts[2:]
        match (method, route):
            case ("GET", ["users", "me"]):
                return 200, {"id": "fake-researcher", "email": "researcher@example.com", "currency_code": self.currency}
            case ("POST", ["study-cost-calculator"]):
                reward, places = _number(body, "reward"), _number(body, "total_available_places")
                return 200, {"total_cost": round(places * self.place_cost(reward), 6)}
            case ("POST", ["studies"]):
                return 201, self._create_study(body)
            case ("GET", ["studies"]):
                state = query.get("state")
                return 200, {"results": [_short(s) for s in self.studies.values() if state in (None, s["status"])]}
            case ("GET", ["projects", project_id, "studies"]):
                found = [_short(s) for s in self.studies.values() if s.get("project") == project_id]
                return 200, self._page(path, query, found)
            case ("GET", ["studies", study_id]):
                return 200, self._study(study_id)
            case ("PATCH", ["studies", study_id]):
                return 200, self._update_study(study_id, body)
            case ("POST", ["studies", study_id, "transition"]):
                return 200, self._transition(study_id, body)
            case ("GET", ["submissions"]):
                return 200, self._list_submissions(path, query)
            case ("GET", ["submissions", submission_id]):
                return 200, self._submission(submission_id)
            case ("POST", ["submissions", submission_id, "transition"]):
                return 200, self._transition_submission(submission_id, body)
            case ("POST", ["submissions", "bonus-payments"]):
                return 201, self._create_bonuses(body)
            case ("POST", ["bulk-bonus-payments", bulk_id, "pay"]):
                self._pay_bonuses(bulk_id)
                return 202, "The bonuses will be paid in the following minutes."
        raise _ApiError(404, "Not Found", f"No endpoint {method} {path}.")

    # Studies

    def _create_study(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _ApiError(400, "Bad Request", "Expected a JSON object.")
        required = (
            "name",
            "description",
            "external_study_url",
            "prolific_id_option",
            "total_available_places",
            "estimated_completion_time",
            "reward",
        )
        missing = [name for name in required if body.get(name) in (None, "")]
        if missing:
            raise _ApiError(400, "Bad Request", {name: ["This field is required."] for name in missing})
        if not urlsplit(body["external_study_url"]).scheme.startswith("http"):
            raise _ApiError(400, "Bad Request", {"external_study_url": ["Enter a valid URL."]})
        for name in ("total_available_places", "reward", "estimated_completion_time"):
            if _number(body, name) <= 0:
                raise _ApiError(400, "Bad Request", {name: ["Ensure this value is greater than 0."]})
        self._check_pay(body["reward"], body["estimated_completion_time"])
        study_id = uuid.uuid4().hex[:24]
        study = {
            **body,
            "id": study_id,
            "status": "UNPUBLISHED",
            "project": body.get("project", self.project_id),
            "total_available_places": int(body["total_available_places"]),
            "places_taken": 0,
            "number_of_submissions": 0,
            "date_created": _now(),
            "published_at": None,
            "is_ready_to_publish": True,
        }
        self.studies[study_id] = study
        self.effects[("create_study", str(body.get("internal_name") or study_id))] += 1
        return study

    def _update_study(self, study_id: str, body: Any) -> dict[str, Any]:
        study = self._study(study_id)
        if not isinstance(body, dict):
            raise _ApiError(400, "Bad Request", "Expected a JSON object.")
        if study["status"] != "UNPUBLISHED":
            refused = sorted(set(body) - _PUBLISHED_PATCHABLE)
            if refused:
                raise _ApiError(400, "Bad Request", f"Cannot update {', '.join(refused)} of a published study.")
        if "total_available_places" in body:
            places = int(_number(body, "total_available_places"))
            if study["status"] != "UNPUBLISHED":
                if places < study["total_available_places"]:
                    raise _ApiError(400, "Bad Request", "total_available_places can only be increased.")
                self._reserve(study, places - study["total_available_places"])
                if study["status"] in ("AWAITING REVIEW", "COMPLETED") and places > study["total_available_places"]:
                    study["status"] = "ACTIVE"
            study["total_available_places"] = places
        if "reward" in body or "estimated_completion_time" in body:
            self._check_pay(
                body.get("reward", study["reward"]),
                body.get("estimated_completion_time", study["estimated_completion_time"]),
            )
        study.update({k: v for k, v in body.items() if k != "total_available_places"})
        self.effects[("update_study", study_id)] += 1
        return study

    def _transition(self, study_id: str, body: Any) -> dict[str, Any]:
        study = self._study(study_id)
        action = body.get("action") if isinstance(body, dict) else None
        target = _TRANSITIONS.get((study["status"], action))
        if target is None:
            raise _ApiError(400, "Bad Request", f"Cannot {action} a study that is {study['status']}.")
        if action == "PUBLISH":
            self._reserve(study, study["total_available_places"])
            study["published_at"] = _now()
        if action == "STOP":
            free = study["total_available_places"] - self._places_taken(study_id)
            self.reserved_cents -= free * self.place_cost(study["reward"])
        study["status"] = target
        self.effects[(action.lower(), study_id)] += 1
        return study

    def _check_pay(self, reward: float, minutes: float) -> None:
        hourly = reward * 60 / minutes
        if hourly < self.min_hourly_reward_cents:
            raise _ApiError(
                400,
                "Bad Request",
                {
                    "reward": [
                        f"The reward pays {hourly / 100:.2f} an hour, under the minimum of "
                        f"{self.min_hourly_reward_cents / 100:.2f} an hour."
                    ]
                },
            )

    def _reserve(self, study: dict[str, Any], places: int) -> None:
        cost = places * self.place_cost(study["reward"])
        if cost > self.available_cents + 1e-9:
            raise _ApiError(
                400,
                "Insufficient funds",
                f"Your workspace balance is too low: {places} places cost {cost / 100:.2f} {self.currency}, "
                f"{self.available_cents / 100:.2f} available. Please top up.",
            )
        self.reserved_cents += cost

    def _places_taken(self, study_id: str) -> int:
        return sum(1 for s in self.submissions.values() if s["study_id"] == study_id and s["status"] in _PLACE_HOLDING)

    def _settle(self, study: dict[str, Any]) -> None:
        """A full study with nobody still at work awaits review, then completes once everything is reviewed."""
        mine = [s for s in self.submissions.values() if s["study_id"] == study["id"]]
        study["places_taken"] = self._places_taken(study["id"])
        study["number_of_submissions"] = len(mine)
        if study["status"] not in ("ACTIVE", "AWAITING REVIEW"):
            return
        if study["places_taken"] < study["total_available_places"] or any(s["status"] == "ACTIVE" for s in mine):
            return
        study["status"] = "AWAITING REVIEW" if any(s["status"] == "AWAITING REVIEW" for s in mine) else "COMPLETED"

    # Submissions

    def _list_submissions(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        study_id = query.get("study")
        if not study_id:
            raise _ApiError(400, "Bad Request", {"study": ["This query parameter is required."]})
        status = query.get("status", "").upper().replace("_", " ") or None
        found = sorted(
            (s for s in self.submissions.values() if s["study_id"] == study_id and status in (None, s["status"])),
            key=lambda s: (s["started_at"], s["id"]),
        )
        return self._page(path, query, [_submission_short(s) for s in found])

    def _transition_submission(self, submission_id: str, body: Any) -> dict[str, Any]:
        submission = self._submission(submission_id)
        action = body.get("action") if isinstance(body, dict) else None
        if action != "APPROVE":
            raise _ApiError(400, "Bad Request", f"The fake Prolific only approves; got {action!r}.")
        self.effects[("approve_call", submission_id)] += 1
        if submission["status"] == "APPROVED":
            return submission  # "if you make the same request twice, the second request will be ignored"
        if submission["status"] != "AWAITING REVIEW":
            raise _ApiError(400, "Bad Request", f"Cannot approve a submission that is {submission['status']}.")
        self._approve(submission)
        self._settle(self._study(submission["study_id"]))
        return submission

    def _approve(self, submission: dict[str, Any]) -> None:
        cost = self.place_cost(self._study(submission["study_id"])["reward"])
        submission["status"] = "APPROVED"
        self.reserved_cents -= cost
        self.balance_cents -= cost
        self.ledger.append(("approve", submission["id"], cost))
        self.effects[("approve", submission["id"])] += 1

    def _active(self, submission_id: str) -> dict[str, Any]:
        submission = self._submission(submission_id)
        if submission["status"] != "ACTIVE":
            raise FakeRefusal(f"Submission {submission_id} is {submission['status']}, not ACTIVE.")
        return submission

    def _end(self, submission_id: str, status: str) -> None:
        with self._lock:
            submission = self._active(submission_id)
            submission["status"] = status
            self._settle(self._study(submission["study_id"]))

    # Bonuses

    def _create_bonuses(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("study_id") or not body.get("csv_bonuses"):
            raise _ApiError(400, "Bad Request", "study_id and csv_bonuses are required.")
        study = self._study(body["study_id"])
        amounts: dict[str, float] = {}
        wrong: list[str] = []
        for line in str(body["csv_bonuses"]).strip().splitlines():
            ident, _, amount = line.partition(",")
            try:
                cents = float(Decimal(amount.strip()) * 100)
            except InvalidOperation:
                raise _ApiError(400, "Bad Request", f"Invalid amount in line {line!r}.") from None
            taking_part = [
                s
                for s in self.submissions.values()
                if s["study_id"] == study["id"] and ident.strip() in (s["id"], s["participant"])
            ]
            if not taking_part or cents <= 0:
                wrong.append(ident.strip())
            else:
                amounts[taking_part[0]["id"]] = amounts.get(taking_part[0]["id"], 0.0) + cents
        if wrong:
            raise _ApiError(400, "Bad Request", f"These ids did not take part in the study: {', '.join(wrong)}.")
        amount = sum(amounts.values())
        fees = round(amount * self.fee_rate, 6)
        vat = round(fees * self.vat_rate, 6)
        bulk_id = uuid.uuid4().hex[:24]
        self.bulk_bonuses[bulk_id] = {
            "id": bulk_id,
            "study": study["id"],
            "amount": amount,
            "fees": fees,
            "vat": vat,
            "total_amount": round(amount + fees + vat, 6),
            "amounts": amounts,
        }
        self.effects[("create_bonuses", bulk_id)] += 1
        return {k: v for k, v in self.bulk_bonuses[bulk_id].items() if k != "amounts"}

    def _pay_bonuses(self, bulk_id: str) -> None:
        bulk = self.bulk_bonuses.get(bulk_id)
        if bulk is None:
            raise _ApiError(404, "Not Found", f"No bulk bonus payment {bulk_id}.")
        if bulk["total_amount"] > self.available_cents + 1e-9:
            raise _ApiError(400, "Insufficient funds", "Your workspace balance is too low to pay these bonuses.")
        # Not idempotent, as Prolific warns: every call pays again.
        self.balance_cents -= bulk["total_amount"]
        self.ledger.append(("bonus", bulk_id, bulk["total_amount"]))
        self.effects[("pay", bulk_id)] += 1
        for submission_id, cents in bulk["amounts"].items():
            self.submissions[submission_id]["bonus_payments"].append(cents)

    # Helpers

    def _page(self, path: str, query: dict[str, str], items: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            page, page_size = int(query.get("page", 1)), int(query.get("page_size", 20))
        except ValueError:
            raise _ApiError(400, "Bad Request", "page and page_size are whole numbers.") from None
        if page < 1 or page_size < 1:
            raise _ApiError(400, "Bad Request", "page and page_size start at 1.")
        last = max(1, math.ceil(len(items) / page_size))
        if page > last:
            raise _ApiError(404, "Not Found", "Invalid page.")

        def link(number: int) -> dict[str, str | None]:
            return {"href": f"{self.api_url}{path}?{urlencode({**query, 'page': number})}", "title": str(number)}

        return {
            "results": items[(page - 1) * page_size : page * page_size],
            "_links": {
                "self": link(page),
                "next": link(page + 1) if page < last else {"href": None, "title": None},
                "previous": link(page - 1) if page > 1 else {"href": None, "title": None},
                "last": link(last),
            },
            "meta": {"count": len(items)},
        }

    def _study(self, study_id: str) -> dict[str, Any]:
        study = self.studies.get(study_id)
        if study is None:
            raise _ApiError(404, "Not Found", f"No study {study_id}.")
        return study

    def _submission(self, submission_id: str) -> dict[str, Any]:
        submission = self.submissions.get(submission_id)
        if submission is None:
            raise _ApiError(404, "Not Found", f"No submission {submission_id}.")
        return submission


def _short(study: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "name",
        "internal_name",
        "status",
        "estimated_completion_time",
        "total_available_places",
        "places_taken",
        "number_of_submissions",
        "reward",
        "published_at",
        "date_created",
        "is_ready_to_publish",
    )
    return {key: study.get(key) for key in keys}


def _submission_short(submission: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": submission["id"],
        "participant_id": submission["participant"],
        "status": submission["status"],
        "started_at": submission["started_at"],
        "completed_at": submission["completed_at"],
        "has_siblings": False,
        "study_code": submission["entered_code"],
        "return_requested": submission["return_requested"],
    }


def _error_answer(status: int, title: str, detail: Any) -> tuple[int, dict[str, str], bytes]:
    envelope = {
        "error": {"status": status, "error_code": _ERROR_CODES.get(status, 140000), "title": title, "detail": detail}
    }
    return status, {"Content-Type": "application/json"}, json.dumps(envelope).encode()


def _fault_answer(fault: Fault) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = _error_answer(fault.status, fault.title or _TITLES.get(fault.status, "Error"), "Injected.")
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)  # delay-seconds: a whole number (RFC 9110)
    return status, headers, body


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _header(headers: dict[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise _ApiError(400, "Bad Request", "JSON parse error.") from None


def _number(body: Any, name: str) -> float:
    value = body.get(name) if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _ApiError(400, "Bad Request", {name: ["A valid number is required."]})
    return float(value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
