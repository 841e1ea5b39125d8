"""A thin client of Prolific's REST API (``https://api.prolific.com/api/v1/``), on ``requests``.

Prolific has no official Python SDK. Every path, field and status below was checked on 2026-12-03 against
Prolific's API reference (docs.prolific.com/api-reference: Studies, Submissions, Bonuses,
Introduction) and its OpenAPI document (docs.prolific.com/openapi.json). What the reference leaves open is
said where it is used (the pages of a list, the shape of an insufficient-funds refusal).

Units as Prolific has them: ``reward`` and every amount it returns are in cents (pence) of the workspace's
currency; ``estimated_completion_time`` and ``maximum_allowed_time`` are minutes.

Errors (all :class:`ProlificError`):

- :class:`ProlificAuthError`: 401 or 403: the token is wrong or may not do this (refuse to start).
- :class:`ProlificInsufficientFunds`: the workspace's balance cannot pay.
- :class:`ProlificRequestError`: any other 4xx: Prolific refused the request itself, with its message;
  sending it again would not help, so it is never retried.
- :class:`ProlificUnavailable`: 429 or 5xx still after the retries, or no answer at all.

429 and 5xx are retried with backoff (honouring ``Retry-After``, bounded) by urllib3's ``Retry`` -- but only
where sending the request twice cannot do a thing twice: a call that creates or pays something (create a
study, create or pay bonuses) is sent again only after a 429 or a failed connection (the request never
arrived); after any other failure its outcome is unknown and the caller's ledger must find out
(``ledger.py``). The token is sent in the ``Authorization: Token <token>`` header only, and appears
in no log, error or repr.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

DEFAULT_API_URL = "https://api.prolific.com"
# Where a participant's browser goes once a batch is done (completion_codes' code in ``cc``).
COMPLETION_URL = "https://app.prolific.com/submissions/complete?cc={code}"
# Study statuses (Study.status) and the transition actions that move between them.
UNPUBLISHED, ACTIVE, PAUSED, COMPLETED, PUBLISHING = "UNPUBLISHED", "ACTIVE", "PAUSED", "COMPLETED", "PUBLISHING"
PUBLISH, PAUSE, START, STOP = "PUBLISH", "PAUSE", "START", "STOP"
_ACTION_RESULTS = {PUBLISH: (ACTIVE, PUBLISHING), PAUSE: (PAUSED,), START: (ACTIVE,), STOP: (COMPLETED,)}
# Submission statuses as Prolific returns them (the list's ``status`` filter takes them with "_" for " ").
RESERVED, AWAITING_REVIEW, APPROVED = "RESERVED", "AWAITING REVIEW", "APPROVED"
RETURNED, TIMED_OUT, REJECTED = "RETURNED", "TIMED-OUT", "REJECTED"
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
# Retried answers: rate limiting and the server errors that mean "not now".
_RETRIED_STATUSES = (429, 500, 502, 503, 504)


class ProlificError(Exception):
    """Prolific did not do what was asked.

    :param message: what happened, with Prolific's own words when it sent some.
    :param status: the HTTP status, when there was an answer.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProlificAuthError(ProlificError):
    """401 or 403: the token is missing, wrong, revoked, or may not act on this workspace."""


class ProlificRequestError(ProlificError):
    """Prolific refused the request itself (400, 404, 409, 422...): never retried; its message says why."""


class ProlificInsufficientFunds(ProlificError):
    """The workspace's balance cannot pay for what was asked (publishing, more places, bonuses)."""


class ProlificUnavailable(ProlificError):
    """429 or 5xx after every retry, or no answer: the call may be tried again later."""


@dataclass(frozen=True)
class Study:
    """A study as Prolific returns it.

    :param id: the study id (``STUDY_ID`` in the study URL).
    :param status: ``UNPUBLISHED``, ``PUBLISHING``, ``ACTIVE``, ``PAUSED``, ``AWAITING REVIEW``, ``COMPLETED``...
    :param internal_name: the name only the researcher sees (we put our idempotency key there).
    :param total_available_places: places in all.
    :param places_taken: places participants took (when Prolific says).
    :param reward: cents per place.
    :param estimated_completion_time: minutes.
    :param raw: the whole JSON object.
    """

    id: str
    status: str | None
    internal_name: str | None
    total_available_places: int
    places_taken: int | None
    reward: float | None
    estimated_completion_time: float | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Study:
        return cls(
            id=str(data["id"]),
            status=data.get("status"),
            internal_name=data.get("internal_name"),
            total_available_places=int(data.get("total_available_places") or 0),
            places_taken=int(data["places_taken"]) if data.get("places_taken") is not None else None,
            reward=data.get("reward"),
            estimated_completion_time=data.get("estimated_completion_time"),
            raw=data,
        )


@dataclass(frozen=True)
class Submission:
    """One participant's place in a study (``SESSION_ID`` in the study URL).

    :param id: the submission id.
    :param participant_id: the participant (``PROLIFIC_PID``).
    :param study_id: the study, when Prolific says (the list of a study's submissions leaves it out).
    :param status: ``ACTIVE``, ``AWAITING REVIEW``, ``APPROVED``, ``RETURNED``, ``TIMED-OUT``, ``REJECTED``...
    :param started_at: when the participant started (ISO 8601).
    :param completed_at: when they completed, if they did.
    :param bonus_payments: bonuses paid on it, in cents (in the single submission's answer only).
    :param raw: the whole JSON object.
    """

    id: str
    participant_id: str
    study_id: str | None
    status: str
    started_at: str | None
    completed_at: str | None
    bonus_payments: tuple[float, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], study_id: str | None = None) -> Submission:
        return cls(
            id=str(data["id"]),
            # The list calls it participant_id, the single submission participant.
            participant_id=str(data.get("participant_id") or data.get("participant") or ""),
            study_id=data.get("study_id") or study_id,
            status=str(data["status"]),
            started_at=data.get("started_at"),
            completed_at=data.get("completed_at"),
            bonus_payments=tuple(data.get("bonus_payments") or ()),
            raw=data,
        )


@dataclass(frozen=True)
class BulkBonus:
    """Bonuses set up (not yet paid) for one study; pay them with :meth:`ProlificClient.pay_bonus_payments`.

    :param id: the bulk bonus payment id.
    :param study: the study.
    :param amount: cents the participants receive.
    :param fees: Prolific's fees, in cents.
    :param vat: VAT on the fees, in cents.
    :param total_amount: cents taken from the balance.
    """

    id: str
    study: str | None
    amount: float | None
    fees: float | None
    vat: float | None
    total_amount: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BulkBonus:
        return cls(
            id=str(data["id"]),
            study=data.get("study"),
            amount=data.get("amount"),
            fees=data.get("fees"),
            vat=data.get("vat"),
            total_amount=float(data["total_amount"]),
        )


class ProlificClient:
    """The Prolific calls the gateway makes; each method is one documented endpoint (or all pages of one).

    Blocking (``requests``): call from a thread, not the event loop. Thread-safe as a ``requests.Session``
    is for these calls.

    :param token: the API token (from ``$PROLIFIC_TOKEN`` or the config file, never a flag).
    :param api_url: the API's base URL (``--prolific-api-url``): Prolific's, or a fake's in tests; ``https://``
        (``http://`` only on loopback, as the token goes with every request).
    :param timeout: seconds to connect, and to wait for each answer.
    :param max_attempts: attempts of a call in all (retries of 429, 5xx and failed connections).
    :param backoff_seconds: first wait between attempts (doubling, with jitter) when no ``Retry-After`` says.
    :param max_wait_seconds: longest wait between attempts, ``Retry-After`` included.
    """

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API_URL,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_seconds: float = 0.5,
        max_wait_seconds: float = 60.0,
    ) -> None:
        if not token or not token.strip():
            raise ProlificAuthError("No Prolific API token given (it comes from $PROLIFIC_TOKEN or the config file).")
        parts = urlsplit(api_url)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS):
            # The token would cross the network in clear text.
            raise ValueError(f"Invalid Prolific API URL {api_url!r}: expected https:// (http:// only on loopback).")
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        retries = max_attempts - 1
        # Calls that do the same when sent twice: reads, PATCH of absolute values, transitions, approvals.
        self._session = _session(
            token,
            Retry(
                total=retries,
                connect=retries,
                read=retries,
                status=retries,
                other=0,
                allowed_methods=None,
                status_forcelist=_RETRIED_STATUSES,
                backoff_factor=backoff_seconds,
                backoff_max=max_wait_seconds,
                backoff_jitter=backoff_seconds,
                retry_after_max=int(max_wait_seconds),
                raise_on_status=False,
            ),
        )
        # Calls that create or pay something: sent again only when they never arrived (429, no connection).
        self._once_session = _session(
            token,
            Retry(
                total=retries,
                connect=retries,
                read=0,
                status=retries,
                other=0,
                allowed_methods=None,
                status_forcelist=(429,),
                backoff_factor=backoff_seconds,
                backoff_max=max_wait_seconds,
                backoff_jitter=backoff_seconds,
                retry_after_max=int(max_wait_seconds),
                raise_on_status=False,
            ),
        )

    def __repr__(self) -> str:
        return f"ProlificClient(api_url={self.api_url!r})"

    def close(self) -> None:
        self._session.close()
        self._once_session.close()

    # Account

    def me(self) -> dict[str, Any]:
        """``GET /api/v1/users/me/``: the token's user; the start-up check of the token."""
        return self._call("GET", "/api/v1/users/me/")

    def study_cost(self, reward: float, total_available_places: int) -> float:
        """``POST /api/v1/study-cost-calculator/``: what ``total_available_places`` places at ``reward`` cents
        cost in all, fees and VAT included, in cents."""
        body = {"reward": reward, "total_available_places": total_available_places}
        return float(self._call("POST", "/api/v1/study-cost-calculator/", json=body)["total_cost"])

    # Studies

    def create_study(
        self,
        *,
        name: str,
        internal_name: str,
        description: str,
        external_study_url: str,
        completion_code: str,
        total_available_places: int,
        reward: float,
        estimated_completion_time: float,
        maximum_allowed_time: float | None = None,
        project: str | None = None,
        device_compatibility: Iterable[str] = ("desktop", "tablet", "mobile"),
        **fields: Any,
    ) -> Study:
        """``POST /api/v1/studies/``: a draft (``UNPUBLISHED``) study; publish it with :meth:`transition_study`.

        Participants reach ``external_study_url`` with ``{{%PROLIFIC_PID%}}``, ``{{%STUDY_ID%}}`` and
        ``{{%SESSION_ID%}}`` filled in (``prolific_id_option="url_parameters"``), and end on
        :data:`COMPLETION_URL` with ``completion_code``, which sends their submission to manual review
        (``MANUALLY_REVIEW``: approved by the gateway once their answers are in). ``internal_name`` should be
        the caller's idempotency key: a create whose answer was lost is found again by it (:meth:`find_study`),
        as this call is not sent twice. ``fields``: any other field of Prolific's study (filters...).
        """
        body = {
            "name": name,
            "internal_name": internal_name,
            "description": description,
            "external_study_url": external_study_url,
            "prolific_id_option": "url_parameters",
            "completion_codes": [
                {"code": completion_code, "code_type": "COMPLETED", "actions": [{"action": "MANUALLY_REVIEW"}]}
            ],
            "total_available_places": total_available_places,
            "reward": reward,
            "estimated_completion_time": estimated_completion_time,
            "device_compatibility": list(device_compatibility),
            **({"maximum_allowed_time": maximum_allowed_time} if maximum_allowed_time is not None else {}),
            **({"project": project} if project is not None else {}),
            **fields,
        }
        return Study.from_json(self._call("POST", "/api/v1/studies/", json=body, once=True))

    def get_study(self, study_id: str) -> Study:
        """``GET /api/v1/studies/{id}/``."""
        return Study.from_json(self._call("GET", f"/api/v1/studies/{study_id}/"))

    def list_studies(self, *, project: str | None = None, status: str | None = None) -> list[Study]:
        """Every study of ``project`` (``GET /api/v1/projects/{id}/studies/``, all pages), else of the
        account (``GET /api/v1/studies/``, filtered by ``status``)."""
        if project is not None:
            found = self._pages(f"/api/v1/projects/{project}/studies/", {})
            return [Study.from_json(s) for s in found if status is None or s.get("status") == status]
        params = {"state": status} if status is not None else {}
        return [Study.from_json(s) for s in self._call("GET", "/api/v1/studies/", params=params)["results"]]

    def find_study(self, internal_name: str, *, project: str | None = None) -> Study | None:
        """The study whose ``internal_name`` is ``internal_name`` (the idempotency key of its create), if any:
        how a create whose answer was lost is found again."""
        return next((s for s in self.list_studies(project=project) if s.internal_name == internal_name), None)

    def update_study(self, study_id: str, **fields: Any) -> Study:
        """``PATCH /api/v1/studies/{id}/``: once published, only ``internal_name`` and a larger
        ``total_available_places`` (which makes a ``COMPLETED`` study ``ACTIVE`` again)."""
        return Study.from_json(self._call("PATCH", f"/api/v1/studies/{study_id}/", json=fields))

    def transition_study(self, study_id: str, action: str) -> Study:
        """``POST /api/v1/studies/{id}/transition/`` with ``PUBLISH``, ``PAUSE``, ``START`` or ``STOP``.

        A study already where the action leads (e.g. a retried PUBLISH that had arrived) is no error.
        """
        if action not in _ACTION_RESULTS:
            raise ValueError(f"Invalid study action {action!r}: expected one of {', '.join(_ACTION_RESULTS)}.")
        try:
            data = self._call("POST", f"/api/v1/studies/{study_id}/transition/", json={"action": action})
        except ProlificRequestError:
            study = self.get_study(study_id)
            if study.status in _ACTION_RESULTS[action]:
                return study
            raise
        return Study.from_json(data)

    # Submissions

    def list_submissions(self, study_id: str, *, status: str | None = None, page_size: int = 100) -> list[Submission]:
        """Every submission of the study (``GET /api/v1/submissions/?study=``, all pages), of ``status`` if given
        (as Prolific returns it, e.g. ``AWAITING REVIEW``)."""
        params: dict[str, Any] = {"study": study_id}
        if status is not None:
            params["status"] = status.replace(" ", "_")
        return [Submission.from_json(s, study_id) for s in self._pages("/api/v1/submissions/", params, page_size)]

    def get_submission(self, submission_id: str) -> Submission:
        """``GET /api/v1/submissions/{id}/``: its participant, study and status (the arrival check)."""
        return Submission.from_json(self._call("GET", f"/api/v1/submissions/{submission_id}/"))

    def approve_submission(self, submission_id: str) -> Submission:
        """``POST /api/v1/submissions/{id}/transition/`` ``APPROVE``: pays the reward (idempotent at Prolific)."""
        data = self._call("POST", f"/api/v1/submissions/{submission_id}/transition/", json={"action": "APPROVE"})
        return Submission.from_json(data)

    # Bonuses

    def create_bonus_payments(self, study_id: str, bonuses: Mapping[str, int]) -> BulkBonus:
        """``POST /api/v1/submissions/bonus-payments/``: set up (not pay) bonuses, ``{submission id: cents}``.

        Prolific takes the amounts as decimals of the currency ("1.50"): cents are turned into that here, so
        that 30 never means 30 pounds. Not sent twice; the result's id must be stored before paying.
        """
        if not bonuses:
            raise ValueError("No bonuses to set up.")
        if any(cents <= 0 for cents in bonuses.values()):
            raise ValueError(f"Invalid bonuses {dict(bonuses)!r}: amounts are positive whole cents.")
        csv = "".join(f"{submission},{cents // 100}.{cents % 100:02d}\n" for submission, cents in bonuses.items())
        body = {"study_id": study_id, "csv_bonuses": csv}
        return BulkBonus.from_json(self._call("POST", "/api/v1/submissions/bonus-payments/", json=body, once=True))

    def pay_bonus_payments(self, bulk_bonus_id: str) -> None:
        """``POST /api/v1/bulk-bonus-payments/{id}/pay/``: pay bonuses set up before (asynchronously, at Prolific).

        Not idempotent at Prolific (a second call pays again): sent again only when it never arrived; on any
        other failure the caller must treat the payment as possibly made.
        """
        self._call("POST", f"/api/v1/bulk-bonus-payments/{bulk_bonus_id}/pay/", once=True)

    # Transport

    def _pages(self, path: str, params: dict[str, Any], page_size: int = 100) -> list[dict[str, Any]]:
        """Every item of a paginated list (``page``, ``page_size``; 1-based).

        The reference documents the parameters, not how the last page shows: the pages end at one shorter
        than ``page_size``, an empty one, or a ``_links.next`` whose ``href`` is null.
        """
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self._call("GET", path, params={**params, "page": page, "page_size": page_size})
            results = data.get("results") or []
            found += results
            next_link = (data.get("_links") or {}).get("next")
            if len(results) < page_size or (isinstance(next_link, dict) and next_link.get("href") is None):
                return found
            page += 1

    def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None, once: bool = False
    ) -> Any:
        session = self._once_session if once else self._session
        url = self.api_url + path
        try:
            response = session.request(method, url, json=json, params=params, timeout=self.timeout)
        except requests.RequestException as err:
            # The URL holds no secret (the token travels in a header only).
            raise ProlificUnavailable(f"Prolific did not answer {method} {path}: {type(err).__name__}: {err}") from None
        if response.status_code < 400:
            return response.json() if response.content else None
        raise _error(method, path, response)


def _session(token: str, retry: Retry) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    session.headers["Accept"] = "application/json"
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _error(method: str, path: str, response: requests.Response) -> ProlificError:
    """The exception of an error answer, with Prolific's message (``{"error": {"title", "detail", ...}}``)."""
    status = response.status_code
    message = f"Prolific refused {method} {path}: {status} {_message(response)}"
    if status in (401, 403):
        return ProlificAuthError(message, status)
    if status in _RETRIED_STATUSES:
        return ProlificUnavailable(message, status)
    # The reference documents no code of its own for a balance that cannot pay: Prolific says so in words.
    lowered = message.lower()
    if status == 402 or "insufficient funds" in lowered or "balance" in lowered or "top up" in lowered:
        return ProlificInsufficientFunds(message, status)
    return ProlificRequestError(message, status)


def _message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.reason or "(no message)"
    error = data.get("error", data) if isinstance(data, dict) else data
    if not isinstance(error, dict):
        return str(error)[:500]
    parts = [str(error[key]) for key in ("title", "detail", "additional_information") if error.get(key)]
    return " - ".join(parts)[:500] or response.reason or "(no message)"
