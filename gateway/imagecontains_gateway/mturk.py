"""The Mechanical Turk workforce: each processing ``image-contains`` task becomes one HIT (docs/mturk.md).

A background loop on the server's event loop posts HITs, reads submitted assignments, gives their answers
to the adjudicator, approves them, and adds one assignment at a time while the adjudicator is not yet
confident. Every boto3 call runs in a thread of its own pool, so the Crowd API keeps answering meanwhile.

Exactly once across crashes: a write to MTurk is first decided in SQLite (``mturk_hits.target``, with the
account charged in the same transaction), then sent with a ``UniqueRequestToken`` derived from the task, so
that sending it again after a crash or a lost response never creates a second HIT or assignment; the HIT id
is stored as soon as MTurk returns it, before anything uses it.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import html
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit
from xml.etree import ElementTree

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from imagecontains_gateway.config import MTURK_MAX_ASSIGNMENTS, ServerConfig
from imagecontains_gateway.service import (
    INCONCLUSIVE,
    INSUFFICIENT_FUNDS,
    Assignment,
    CrowdService,
)
from imagecontains_gateway.store import PROCESSING, TaskStore, to_microdollars
from imagecontains_gateway.validation import IMAGE_CONTAINS
from imagecontains_gateway.wording import article

log = logging.getLogger(__name__)

# MTurk worker ids become the adjudicator's worker ids under this prefix.
WORKER_PREFIX = "mturk:"
ANSWER_FIELD = "containsTarget"
# The values of the answer field, the same words as the worker page; "cant-tell" is no vote.
ANSWER_VALUES = {"yes": True, "no": False, "cant-tell": None}
SANDBOX, PRODUCTION = "sandbox", "production"
_ENDPOINTS = {
    SANDBOX: "https://mturk-requester-sandbox.{region}.amazonaws.com",
    PRODUCTION: "https://mturk-requester.{region}.amazonaws.com",
}
_SUBMIT_URLS = {
    SANDBOX: "https://workersandbox.mturk.com/mturk/externalSubmit",
    PRODUCTION: "https://www.mturk.com/mturk/externalSubmit",
}
_HTML_QUESTION_XMLNS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"
# MTurk's commission: 20% of the reward, 40% for HITs of 10 or more assignments, at least $0.01 per assignment.
FEE_RATE, LARGE_HIT_FEE_RATE, LARGE_HIT_ASSIGNMENTS, MINIMUM_FEE = 0.20, 0.40, 10, 0.01
# Concurrent MTurk calls; botocore retries throttling and outages with backoff inside each call.
_CALLS_IN_FLIGHT = 8
_BOTO_CONFIG = BotoConfig(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=30)
# After a cycle whose calls failed even after botocore's retries, the next cycle waits up to this long.
_MAX_OUTAGE_BACKOFF_SECONDS = 60.0
# A HIT MTurk will not delete yet (assignments still being worked on) is tried again after this long.
_DELETE_RETRY_SECONDS = 60.0
# Hosts no MTurk worker's browser can reach: this machine and names of a local network.
_LOCAL_NAMES = ("localhost",)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mturk_hits (
    task_id INTEGER PRIMARY KEY,
    token TEXT NOT NULL,
    hit_id TEXT,
    assignments INTEGER NOT NULL DEFAULT 0,
    target INTEGER NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS mturk_assignments (
    assignment_id TEXT PRIMARY KEY,
    task_id INTEGER NOT NULL,
    approved INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS mturk_assignments_by_task ON mturk_assignments (task_id);
"""


def fee_per_assignment(reward: float, max_assignments: int) -> float:
    """MTurk's commission on one assignment of a HIT with ``max_assignments`` assignments, in dollars."""
    rate = LARGE_HIT_FEE_RATE if max_assignments >= LARGE_HIT_ASSIGNMENTS else FEE_RATE
    return round(max(reward * rate, MINIMUM_FEE), 6)


def assignment_cost(reward: float, max_assignments: int) -> float:
    """What one assignment costs the requester: the reward plus MTurk's fee."""
    return round(reward + fee_per_assignment(reward, max_assignments), 6)


def unreachable_image_reason(url: str) -> str | None:
    """Why an MTurk worker's browser could not load ``url`` (a loopback or local-network host), else None."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES) or "." not in host:
            return (
                f"Invalid image URL {url!r}: host {host!r} is a local name that MTurk workers cannot reach; "
                "host the image where a browser on the internet can load it (e.g. S3)."
            )
        return None
    if not address.is_global:
        return (
            f"Invalid image URL {url!r}: {host} is a loopback, private or reserved address that MTurk workers "
            "cannot reach; host the image where a browser on the internet can load it (e.g. S3)."
        )
    return None


def html_question(image_url: str, label: str, submit_url: str) -> str:
    """The ``HTMLQuestion`` XML of a HIT asking whether the image at ``image_url`` contains ``label``.

    The form posts to MTurk (``externalSubmit``, or the ``turkSubmitTo`` MTurk gives the page) with the
    ``assignmentId`` and the answer field ``containsTarget``; in preview (``ASSIGNMENT_ID_NOT_AVAILABLE``)
    the answer buttons are disabled. Image URL and label are HTML-escaped, which also keeps ``]]>`` out of
    the CDATA section. The question reads like the worker page's ("an apple", "people").
    """
    page = _PAGE.format(
        article=f"{article(label)} " if article(label) else "",
        label=html.escape(label, quote=True),
        image_url=html.escape(image_url, quote=True),
        submit_url=html.escape(submit_url, quote=True),
        field=ANSWER_FIELD,
    )
    return (
        f'<HTMLQuestion xmlns="{_HTML_QUESTION_XMLNS}"><HTMLContent><![CDATA[{page}]]></HTMLContent>'
        "<FrameHeight>0</FrameHeight></HTMLQuestion>"
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Does this image contain {article}{label}?</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; padding: 12px;
  color: #1b1b1b; background: #fff; }}
main {{ max-width: 720px; margin: 0 auto; }}
h1 {{ font-size: 1.3rem; line-height: 1.35; margin: 0 0 12px; }}
.label {{ background: #fff1b8; padding: 0 4px; border-radius: 3px; overflow-wrap: anywhere; }}
.frame {{ border: 1px solid #c9c9c9; border-radius: 6px; background: #f6f6f6; text-align: center; }}
.frame img {{ display: block; max-width: 100%; max-height: 65vh; margin: 0 auto; }}
.answers {{ display: flex; gap: 8px; margin-top: 12px; }}
.answers button {{ flex: 1 1 0; min-height: 52px; font-size: 1.1rem; font-weight: 600; border-radius: 8px;
  border: 1px solid #6b6b6b; background: #f3f3f3; color: #1b1b1b; cursor: pointer; }}
.answers button.yes {{ background: #dff3e3; border-color: #2e7d32; }}
.answers button.no {{ background: #fde2e1; border-color: #c62828; }}
.answers button:disabled {{ opacity: 0.5; cursor: not-allowed; }}
.note {{ color: #555; font-size: 0.9rem; }}
#preview {{ background: #e8f0fe; border: 1px solid #8ab4f8; border-radius: 6px; padding: 8px 10px; }}
</style>
</head>
<body>
<main>
<h1>Does this image contain {article}<span class="label">{label}</span>?</h1>
<p id="preview" hidden>This is a preview. Accept the HIT to answer.</p>
<div class="frame"><img src="{image_url}" alt="The image to look at"></div>
<form id="mturk_form" name="mturk_form" method="post" action="{submit_url}">
<input type="hidden" id="assignmentId" name="assignmentId" value="ASSIGNMENT_ID_NOT_AVAILABLE">
<div class="answers">
<button type="submit" class="yes" name="{field}" value="yes">Yes</button>
<button type="submit" class="no" name="{field}" value="no">No</button>
<button type="submit" class="cant-tell" name="{field}" value="cant-tell">Can't tell</button>
</div>
</form>
<p class="note">Answer "Can't tell" if the image does not load or you cannot decide.</p>
</main>
<script>
(function () {{
  var params = new URLSearchParams(window.location.search);
  var assignmentId = params.get("assignmentId") || "ASSIGNMENT_ID_NOT_AVAILABLE";
  var submitTo = params.get("turkSubmitTo");
  var form = document.getElementById("mturk_form");
  document.getElementById("assignmentId").value = assignmentId;
  if (submitTo === "https://www.mturk.com" || submitTo === "https://workersandbox.mturk.com") {{
    form.action = submitTo + "/mturk/externalSubmit";
  }}
  if (assignmentId === "ASSIGNMENT_ID_NOT_AVAILABLE") {{
    document.getElementById("preview").hidden = false;
    var buttons = form.querySelectorAll("button");
    for (var i = 0; i < buttons.length; i++) {{ buttons[i].disabled = true; }}
  }}
}})();
</script>
</body>
</html>
"""


def parse_answer(answer_xml: str) -> bool | None:
    """The ``containsTarget`` of an assignment's ``QuestionFormAnswers``: True, False or None (can't tell)."""
    # Assignment answers come from MTurk's authenticated responses; expat refuses entity expansion bombs.
    root = ElementTree.fromstring(answer_xml)  # noqa: S314
    for answer in root:
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in answer}
        if fields.get("QuestionIdentifier") == ANSWER_FIELD:
            return ANSWER_VALUES.get(fields.get("FreeText", ""))
    return None


def mturk_environment(config: ServerConfig) -> str:
    return PRODUCTION if config.mturk_production else SANDBOX


def mturk_client(config: ServerConfig) -> Any:
    """A boto3 ``mturk`` client: the sandbox unless ``mturk_production``, or ``mturk_endpoint_url``.

    Credentials come from boto3's default chain, or the profile ``mturk_profile``.
    """
    session = boto3.session.Session(profile_name=config.mturk_profile)
    if session.get_credentials() is None:
        raise ValueError(
            "No AWS credentials for MTurk: configure boto3's default credential chain "
            "(environment, ~/.aws/credentials, instance role) or give --mturk-profile."
        )
    endpoint = config.mturk_endpoint_url or _ENDPOINTS[mturk_environment(config)].format(region=config.mturk_region)
    return session.client("mturk", region_name=config.mturk_region, endpoint_url=endpoint, config=_BOTO_CONFIG)


def is_request_error(err: Exception) -> bool:
    """MTurk refused the request itself (it will not succeed as it is); anything else is worth retrying."""
    return isinstance(err, ClientError) and err.response.get("Error", {}).get("Code") == "RequestError"


class MTurkRequester:
    """The MTurk requester calls the workforce makes, one boto3 call each (blocking: run them in threads).

    :param client: a boto3 ``mturk`` client.
    :param config: the server settings (HIT properties, reward).
    """

    def __init__(self, client: Any, config: ServerConfig) -> None:
        self.client = client
        self.config = config
        self.submit_url = _SUBMIT_URLS[mturk_environment(config)]
        # Made once: botocore's get_paginator searches its data folders on every call.
        self._hits_pages = client.get_paginator("list_hits")
        self._assignment_pages = client.get_paginator("list_assignments_for_hit")

    @property
    def endpoint_url(self) -> str:
        return str(self.client.meta.endpoint_url)

    def available_balance(self) -> float:
        return float(self.client.get_account_balance()["AvailableBalance"])

    def create_hit(self, token: str, image_url: str, label: str, assignments: int, lifetime_seconds: int) -> str:
        """Post the HIT of one task; return its id. Sent again with the same ``token``, return the same HIT."""
        try:
            response = self.client.create_hit(
                MaxAssignments=assignments,
                AutoApprovalDelayInSeconds=self.config.mturk_auto_approval_delay_seconds,
                LifetimeInSeconds=lifetime_seconds,
                AssignmentDurationInSeconds=self.config.mturk_assignment_duration_seconds,
                Reward=f"{self.config.reward_per_answer:.2f}",
                Title=self.config.mturk_title,
                Keywords=self.config.mturk_keywords,
                Description=self.config.mturk_description,
                Question=html_question(image_url, label, self.submit_url),
                RequesterAnnotation=token,
                QualificationRequirements=list(self.config.mturk_qualification_requirements),
                UniqueRequestToken=token,
            )
        except ClientError as err:
            # A token already used (HitAlreadyExists: an earlier call succeeded): find that HIT by its annotation.
            hit_id = self.find_hit(token) if is_request_error(err) else None
            if hit_id is None:
                raise
            return hit_id
        return str(response["HIT"]["HITId"])

    def find_hit(self, token: str) -> str | None:
        """The id of the HIT posted with ``token``, if there is one."""
        for page in self._hits_pages.paginate(PaginationConfig={"PageSize": 100}):
            for hit in page.get("HITs", []):
                if hit.get("RequesterAnnotation") == token:
                    return str(hit["HITId"])
        return None

    def add_assignments(self, hit_id: str, current: int, target: int, token: str) -> None:
        """Grow the HIT from ``current`` to ``target`` assignments; sent again with the same token, no-op."""
        try:
            self.client.create_additional_assignments_for_hit(
                HITId=hit_id, NumberOfAdditionalAssignments=target - current, UniqueRequestToken=token
            )
        except ClientError as err:
            # The same token again is refused: the HIT tells whether the first call took effect.
            if not is_request_error(err) or self.client.get_hit(HITId=hit_id)["HIT"]["MaxAssignments"] < target:
                raise

    def submitted_assignments(self, hit_id: str) -> list[dict[str, Any]]:
        """Every submitted or approved assignment of the HIT (all pages)."""
        pages = self._assignment_pages.paginate(
            HITId=hit_id, AssignmentStatuses=["Submitted", "Approved"], PaginationConfig={"PageSize": 100}
        )
        return [assignment for page in pages for assignment in page.get("Assignments", [])]

    def approve(self, assignment_id: str) -> None:
        """Approve (pay) an assignment; an assignment already approved or rejected is left as it is."""
        try:
            self.client.approve_assignment(AssignmentId=assignment_id)
        except ClientError as err:
            status = (
                self.client.get_assignment(AssignmentId=assignment_id)["Assignment"]["AssignmentStatus"]
                if is_request_error(err)
                else None
            )
            if status not in ("Approved", "Rejected"):
                raise

    def expire(self, hit_id: str) -> None:
        """Take the HIT off the market now (assignments being worked on can still be submitted)."""
        self.client.update_expiration_for_hit(
            HITId=hit_id, ExpireAt=datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
        )

    def delete(self, hit_id: str) -> bool:
        """Dispose of the HIT; False while MTurk does not allow it yet (assignments not yet submitted or paid)."""
        try:
            self.client.delete_hit(HITId=hit_id)
        except ClientError as err:
            if is_request_error(err):
                return False
            raise
        return True

    def block_worker(self, worker_id: str, reason: str) -> None:
        """Keep an MTurk worker from this requester's HITs (``CreateWorkerBlock``)."""
        self.client.create_worker_block(WorkerId=worker_id, Reason=reason)


@dataclass(frozen=True)
class Hit:
    """What the server stores of one task's HIT.

    :param task_id: the task.
    :param token: the ``UniqueRequestToken`` (and ``RequesterAnnotation``) of its CreateHIT.
    :param hit_id: the HIT id once MTurk returned it.
    :param assignments: the HIT's ``MaxAssignments`` as MTurk confirmed it.
    :param target: the ``MaxAssignments`` decided (and charged); above ``assignments`` while a write is due.
    :param closed: the task finished and its HIT was expired where needed.
    :param read: assignments read (answers taken) so far.
    :param task_state: the task's state, or None once the task was deleted.
    """

    task_id: int
    token: str
    hit_id: str | None
    assignments: int
    target: int
    closed: bool
    read: int
    task_state: str | None

    @property
    def write_due(self) -> bool:
        return self.hit_id is None or self.target > self.assignments

    @property
    def outstanding(self) -> int:
        return self.assignments - self.read


class MTurkStore:
    """The HITs and read assignments, in the server's SQLite file, on the task store's connection.

    :param store: the task store (its connection and transactions are shared).
    """

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._db = store.connection
        self._db.executescript(_SCHEMA)

    def hits(self, task_id: int | None = None) -> list[Hit]:
        """Every HIT not yet disposed of (or the one of ``task_id``), oldest task first."""
        rows = self._db.execute(
            "SELECT h.task_id, h.token, h.hit_id, h.assignments, h.target, h.closed, "
            "(SELECT COUNT(*) FROM mturk_assignments a WHERE a.task_id = h.task_id), t.state "
            "FROM mturk_hits h LEFT JOIN tasks t ON t.id = h.task_id WHERE ? IS NULL OR h.task_id = ? "
            "ORDER BY h.task_id",
            (task_id, task_id),
        ).fetchall()
        return [Hit(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]) for r in rows]

    def hit(self, task_id: int) -> Hit | None:
        found = self.hits(task_id)
        return found[0] if found else None

    def unposted_task_ids(self) -> list[int]:
        """Processing image-contains tasks without a HIT yet, oldest first."""
        rows = self._db.execute(
            "SELECT t.id FROM tasks t WHERE t.function = ? AND t.state = 'processing' "
            "AND NOT EXISTS (SELECT 1 FROM mturk_hits h WHERE h.task_id = t.id) ORDER BY t.id",
            (IMAGE_CONTAINS,),
        ).fetchall()
        return [row[0] for row in rows]

    def decide(self, task_id: int, token: str, target: int, account: str, microdollars: int) -> bool:
        """Charge ``account`` and record that the task's HIT must have ``target`` assignments; False if too poor."""
        with self.store.transaction():
            if not self.store.charge(account, microdollars):
                return False
            self._db.execute(
                "INSERT INTO mturk_hits (task_id, token, target) VALUES (?, ?, ?) "
                "ON CONFLICT (task_id) DO UPDATE SET target = excluded.target",
                (task_id, token, target),
            )
        return True

    def confirm(self, task_id: int, hit_id: str, assignments: int) -> None:
        self._db.execute(
            "UPDATE mturk_hits SET hit_id = ?, assignments = ? WHERE task_id = ?", (hit_id, assignments, task_id)
        )

    def close(self, task_id: int) -> None:
        self._db.execute("UPDATE mturk_hits SET closed = 1 WHERE task_id = ?", (task_id,))

    def forget(self, task_id: int) -> None:
        with self.store.transaction():
            self._db.execute("DELETE FROM mturk_assignments WHERE task_id = ?", (task_id,))
            self._db.execute("DELETE FROM mturk_hits WHERE task_id = ?", (task_id,))

    def record_read(self, assignment_id: str, task_id: int) -> bool:
        """Note that an assignment's answer was taken; False if it already was."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO mturk_assignments (assignment_id, task_id) VALUES (?, ?)", (assignment_id, task_id)
        )
        return cursor.rowcount == 1

    def has_answer(self, task_id: int, worker: str) -> bool:
        row = self._db.execute("SELECT 1 FROM answers WHERE task_id = ? AND worker = ?", (task_id, worker)).fetchone()
        return row is not None

    def unapproved(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT assignment_id FROM mturk_assignments WHERE approved = 0")]

    def approved(self, assignment_id: str) -> None:
        self._db.execute("UPDATE mturk_assignments SET approved = 1 WHERE assignment_id = ?", (assignment_id,))


class MTurkWorkforce:
    """Posts processing image-contains tasks as HITs and feeds their answers to the adjudicator.

    :param service: the Crowd API service (its store, adjudication and wake-ups).
    :param requester: the MTurk calls.
    """

    def __init__(self, service: CrowdService, requester: MTurkRequester) -> None:
        self.service = service
        self.requester = requester
        self.config = service.config
        self.hits = MTurkStore(service.store)
        self.reward = self.config.reward_per_answer
        self.max_assignments = min(self.config.max_answers_per_task, MTURK_MAX_ASSIGNMENTS)
        self._executor = ThreadPoolExecutor(_CALLS_IN_FLIGHT, thread_name_prefix="mturk")
        self._runner: asyncio.Task[None] | None = None
        self._delete_attempts: dict[int, float] = {}
        self._blocking: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.service.block_listeners.append(self.block_soon)  # quality control's blocks reach MTurk too
        self._runner = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def block_worker(self, worker: str, reason: str) -> None:
        """Block the MTurk worker ``mturk:<WorkerId>`` from this requester's HITs (quality control)."""
        if not worker.startswith(WORKER_PREFIX):
            raise ValueError(f"Invalid worker {worker!r}: not an MTurk worker ({WORKER_PREFIX}<WorkerId>).")
        await self._call(self.requester.block_worker, worker.removeprefix(WORKER_PREFIX), reason)

    def block_soon(self, worker: str, reason: str) -> None:
        """A ``CrowdService.block_listeners`` entry: block an MTurk worker on MTurk too, in the background."""
        if worker.startswith(WORKER_PREFIX):
            blocking = asyncio.get_running_loop().create_task(self.block_worker(worker, reason))
            self._blocking.add(blocking)
            blocking.add_done_callback(self._blocked)

    def _blocked(self, blocking: asyncio.Task[None]) -> None:
        self._blocking.discard(blocking)
        if not blocking.cancelled() and (err := blocking.exception()) is not None:
            # Blocked here all the same: its answers weigh what its record says, should MTurk still offer it HITs.
            log.warning("Could not block a worker on MTurk (%s)", _describe(err))

    # The loop

    async def _run(self) -> None:
        balance = await self._retrying(self.requester.available_balance)
        log.info(
            "MTurk workforce: %s endpoint %s, available balance $%.2f",
            mturk_environment(self.config),
            self.requester.endpoint_url,
            balance,
        )
        backoff = self.config.mturk_poll_seconds
        while True:
            try:
                failed = await self.cycle()
            except Exception:  # the loop must outlive any one bad cycle: every task depends on it
                log.exception("MTurk workforce cycle failed; retrying")
                failed = True
            backoff = min(backoff * 2, _MAX_OUTAGE_BACKOFF_SECONDS) if failed else self.config.mturk_poll_seconds
            await self.service.wait_for_work(backoff)

    async def cycle(self) -> bool:
        """One pass over every HIT; True if some MTurk call failed (after botocore's retries)."""
        results = await self._each(
            self._read, [hit for hit in self.hits.hits() if hit.task_state == PROCESSING and hit.outstanding > 0]
        )
        try:
            await self._decide()
        except (ClientError, BotoCoreError) as err:
            results.append(err)
            log.warning("MTurk GetAccountBalance failed (%s); retrying on the next cycle", _describe(err))
        # New decisions, and writes a crash or an outage left unconfirmed (resent with the same token).
        results += await self._each(self._write, [hit for hit in self.hits.hits() if hit.write_due])
        hits = self.hits.hits()
        results += await self._each(
            self._close, [h for h in hits if h.hit_id and h.task_state not in (None, PROCESSING)]
        )
        results += await self._each(self._dispose, [h for h in hits if h.hit_id and h.task_state is None])
        results += await self._each(self._approve, self.hits.unapproved())
        return any(isinstance(result, Exception) for result in results)

    async def _decide(self) -> None:
        """Decide which tasks get a HIT or one more assignment, and whether the money covers it."""
        wanted = [(task_id, self.config.mturk_initial_assignments) for task_id in self.hits.unposted_task_ids()]
        for hit in self.hits.hits():
            if hit.task_state != PROCESSING or hit.write_due or hit.outstanding > 0:
                continue
            if hit.assignments >= self.max_assignments:
                self.service.store.finish(hit.task_id, problem=INCONCLUSIVE)
            else:
                wanted.append((hit.task_id, hit.assignments + 1))
        if not wanted:
            return
        available = await self._call(self.requester.available_balance)
        for task_id, target in wanted:
            task = self.service.store.get_by_id(task_id)
            if task is None or task.state != PROCESSING:
                continue
            existing = self.hits.hit(task_id)
            cost = (target - (existing.assignments if existing else 0)) * assignment_cost(self.reward, target)
            token = (
                existing.token
                if existing
                else _hit_token(task.account, task.function, task.name, task.id, task.created_at)
            )
            if cost > available + 1e-9 or not self.hits.decide(
                task_id, token, target, task.account, to_microdollars(cost)
            ):
                self.service.store.finish(task_id, problem=INSUFFICIENT_FUNDS)
                continue
            available -= cost

    async def _write(self, hit: Hit) -> None:
        if hit.hit_id is None:
            task = self.service.store.get_by_id(hit.task_id)
            if task is None:  # deleted before MTurk confirmed its HIT: find out whether there is one to dispose of
                hit_id = await self._call(self.requester.find_hit, hit.token)
                if hit_id is None:
                    self.hits.forget(hit.task_id)
                else:
                    self.hits.confirm(hit.task_id, hit_id, hit.target)
                return
            task_input = json.loads(task.input)
            lifetime = max(int(task.deadline_at - time.time()), 60)
            hit_id = await self._call(
                self.requester.create_hit,
                hit.token,
                task_input["image"]["url"],
                task_input["target"]["label"],
                hit.target,
                lifetime,
            )
            self.hits.confirm(hit.task_id, hit_id, hit.target)
            return
        await self._call(
            self.requester.add_assignments, hit.hit_id, hit.assignments, hit.target, f"{hit.token}-{hit.target}"
        )
        self.hits.confirm(hit.task_id, hit.hit_id, hit.target)

    async def _read(self, hit: Hit) -> None:
        assert hit.hit_id is not None
        task = self.service.store.get_by_id(hit.task_id)
        if task is None:
            return
        task_input = json.loads(task.input)
        question = Assignment(task.id, task_input["image"]["url"], task_input["target"]["label"])
        for submitted in await self._call(self.requester.submitted_assignments, hit.hit_id):
            worker = WORKER_PREFIX + submitted["WorkerId"]
            if not self.hits.has_answer(task.id, worker):
                self.service.submit_answer(question, worker, _answer_of(submitted))
            self.hits.record_read(submitted["AssignmentId"], task.id)

    async def _approve(self, assignment_id: str) -> None:
        await self._call(self.requester.approve, assignment_id)
        self.hits.approved(assignment_id)

    async def _close(self, hit: Hit) -> None:
        """A finished task: take its HIT off the market if it still asks for answers."""
        assert hit.hit_id is not None
        if hit.closed:
            return
        if hit.outstanding > 0:
            await self._call(self.requester.expire, hit.hit_id)
        self.hits.close(hit.task_id)

    async def _dispose(self, hit: Hit) -> None:
        """A deleted task: expire its HIT, approve what was submitted, and delete the HIT once MTurk allows."""
        assert hit.hit_id is not None
        if time.monotonic() - self._delete_attempts.get(hit.task_id, -_DELETE_RETRY_SECONDS) < _DELETE_RETRY_SECONDS:
            return
        self._delete_attempts[hit.task_id] = time.monotonic()
        if not hit.closed:
            await self._call(self.requester.expire, hit.hit_id)
            self.hits.close(hit.task_id)
        for submitted in await self._call(self.requester.submitted_assignments, hit.hit_id):
            if submitted["AssignmentStatus"] == "Submitted":
                await self._call(self.requester.approve, submitted["AssignmentId"])
        if await self._call(self.requester.delete, hit.hit_id):
            self.hits.forget(hit.task_id)
            self._delete_attempts.pop(hit.task_id, None)

    # Calls

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(function, *args))

    async def _retrying(self, function: Callable[..., _T], *args: Any) -> _T:
        delay = self.config.mturk_poll_seconds
        while True:
            try:
                return await self._call(function, *args)
            except (ClientError, BotoCoreError) as err:
                if is_request_error(err):
                    raise
                log.warning("MTurk is not answering (%s); retrying in %.0f s", _describe(err), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_OUTAGE_BACKOFF_SECONDS)

    async def _each(self, step: Callable[[Any], Awaitable[None]], items: Iterable[Any]) -> list[Any]:
        """Run ``step`` for every item concurrently; failures are logged and left for the next cycle."""
        results = await asyncio.gather(*(step(item) for item in items), return_exceptions=True)
        for result in results:
            if isinstance(result, (ClientError, BotoCoreError)):
                log.warning("MTurk call failed (%s); retrying on the next cycle", _describe(result))
            elif isinstance(result, BaseException):
                log.error("MTurk workforce step failed", exc_info=result)
        return list(results)


def _answer_of(assignment: dict[str, Any]) -> bool | None:
    try:
        return parse_answer(assignment.get("Answer", ""))
    except ElementTree.ParseError:
        return None  # an unreadable answer is no vote (and is still paid: nothing is rejected automatically)


def _hit_token(account: str, function: str, name: str, task_id: int, created_at: float) -> str:
    """The task's ``UniqueRequestToken``: the same across restarts, different for a reused name or a new database."""
    digest = hashlib.sha256(f"{account}\0{function}\0{name}\0{task_id}\0{created_at!r}".encode()).hexdigest()
    return f"imagecontains-{digest[:40]}"


def _describe(err: BaseException) -> str:
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", "ClientError"))
    return type(err).__name__
