"""A fake Amazon Mechanical Turk requester service on loopback, for the MTurk workforce's tests and benchmark.

It speaks MTurk's wire protocol: ``POST /`` with AWS JSON 1.1 bodies, the operation in
``X-Amz-Target: MTurkRequesterServiceV20170117.<Operation>``, AWS Signature Version 4 (service
``mturk-requester``) checked with botocore's signer, and errors as ``{"__type": ..., "Message": ...}``.
It keeps MTurk's rules where the workforce depends on them: ``UniqueRequestToken`` (a resent CreateHIT is
refused with ``HitAlreadyExists`` naming the HIT), the 10-assignment rule of CreateAdditionalAssignmentsForHIT,
prepaid funds reserved for every assignment (reward plus 20% / 40% fee), paginated lists, approval only of
submitted assignments, auto-approval, expiry and when a HIT may be deleted.

Simulated workers read the image URL and the label from the HIT's HTMLQuestion, as a browser shows it, and
answer through the form's ``containsTarget`` buttons; MTurk turns the form into ``QuestionFormAnswers`` XML.
"""

from __future__ import annotations

import datetime
import json
import random
import string
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from loopback import LoopbackServer

from imagecontains_gateway.mturk import fee_per_assignment
from imagecontains_gateway.sigv4 import SignatureError, SigningKey, verify_signature

TARGET_PREFIX = "MTurkRequesterServiceV20170117."
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "AKIDFAKEMTURKREQUESTER", "fake-mturk-requester-secret"
_ANSWERS_XMLNS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"
_TICK_SECONDS = 0.01


class FakeError(Exception):
    def __init__(self, status: int, kind: str, message: str, turk_code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.turk_code = status, kind, message, turk_code


def request_error(message: str, turk_code: str) -> FakeError:
    return FakeError(400, "RequestError", message, f"AWS.MechanicalTurk.{turk_code}")


class HitPage(HTMLParser):
    """What a worker's browser reads on the HIT page: images, the question's label, the buttons, and the form
    (where it posts, its hidden fields)."""

    def __init__(self, question_xml: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.label = ""
        self.buttons: list[tuple[str, str]] = []
        self.form_action = ""
        self.hidden: dict[str, str] = {}
        self._in_label = False
        start, end = question_xml.index("<![CDATA[") + len("<![CDATA["), question_xml.rindex("]]>")
        self.feed(question_xml[start:end])

    @property
    def image_url(self) -> str | None:
        return self.images[0] if self.images else None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "img":
            self.images.append(attributes["src"])
        elif tag == "button":
            self.buttons.append((attributes["name"], attributes["value"]))
        elif tag == "form":
            self.form_action = attributes["action"]
        elif tag == "input" and attributes.get("type") == "hidden":
            self.hidden[attributes["name"]] = attributes["value"]
        elif tag == "span" and "label" in attributes.get("class", "").split():
            self._in_label = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._in_label = False

    def handle_data(self, data: str) -> None:
        if self._in_label:
            self.label += data


@dataclass
class FakeAssignment:
    id: str
    hit_id: str
    worker: str
    accepted_at: float
    submit_at: float
    answer: dict[str, str]
    status: str = "Accepted"  # Accepted (being worked on, not listed), Submitted, Approved
    submitted_at: float | None = None
    approved_at: float | None = None


@dataclass
class FakeHit:
    id: str
    token: str | None
    annotation: str | None
    max_assignments: int
    reward: float
    created_at: float
    expires_at: float
    auto_approval_delay: int
    page: HitPage
    request: dict[str, Any]
    assignments: list[FakeAssignment] = field(default_factory=list)
    extension_tokens: set[str] = field(default_factory=set)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def reviewable(self, now: float) -> bool:
        done = all(a.status != "Accepted" for a in self.assignments)
        return done and (self.expired(now) or len(self.assignments) >= self.max_assignments)


class FakeMTurk:
    """MTurk's requester API and a crowd of simulated workers, on a free loopback port.

    :param truth: whether the image at a URL contains a label (what a careful worker would answer).
    :param worker_accuracy: the probability each simulated worker answers correctly.
    :param workers: the number of simulated workers (each answers a HIT at most once).
    :param work_seconds: how long a worker takes from accepting an assignment to submitting it.
    :param balance: the prepaid balance in dollars.
    :param cant_tell_rate: the fraction of answers that are "cant-tell".
    :param seed: seed of the workers' choices.
    """

    def __init__(
        self,
        truth: Callable[[str, str], bool],
        *,
        worker_accuracy: float = 0.9,
        workers: int = 40,
        work_seconds: float = 0.0,
        balance: float = 10_000.0,
        cant_tell_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.truth = truth
        self.worker_accuracy = worker_accuracy
        self.workers = [f"A{n:013d}FAKE" for n in range(1, workers + 1)]
        self.work_seconds = work_seconds
        self.balance = balance
        self.cant_tell_rate = cant_tell_rate
        self.hits: dict[str, FakeHit] = {}
        self.blocked: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.paid = 0.0  # rewards plus fees of approved assignments
        # Faults: the next N calls are throttled / answered 503; until `down_until` every call is 503.
        self.throttle_next = 0
        self.unavailable_next = 0
        self.down_until = 0.0
        self.delay_seconds = 0.0
        # Called with the operation's name after it took effect and before the response is sent.
        self.after_call: Callable[[str, dict[str, Any]], None] | None = None
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._ids = 0
        self._stop = threading.Event()
        self._server = LoopbackServer(self._answer)
        self.endpoint_url = self._server.endpoint_url
        self._crowd = threading.Thread(target=self._work, name="fake-mturk-workers", daemon=True)
        self._crowd.start()

    def close(self) -> None:
        self._stop.set()
        self._crowd.join(timeout=5)
        self._server.close()

    def __enter__(self) -> FakeMTurk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def environment() -> dict[str, str]:
        """The environment variables that give boto3 the fake's credentials."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}

    # What tests look at

    def writes(self) -> int:
        """Calls that change something at MTurk (create, extend, approve, expire, delete, block)."""
        reads = {"GetAccountBalance", "ListAssignmentsForHIT", "ListHITs", "GetHIT", "GetAssignment"}
        return sum(n for op, n in self.calls.items() if op not in reads)

    def assignments(self) -> list[FakeAssignment]:
        with self._lock:
            return [a for hit in self.hits.values() for a in hit.assignments]

    # The wire protocol

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {name.lower(): value for name, value in headers.items()}
        operation = headers.get("x-amz-target", "").removeprefix(TARGET_PREFIX)
        try:
            if method != "POST" or path != "/":
                raise FakeError(404, "UnknownOperationException", "POST / only.")
            try:
                verify_signature(
                    method=method,
                    raw_path=path,
                    query_string="",
                    headers=headers,
                    body=body,
                    service="mturk-requester",
                    region="us-east-1",
                    lookup=lambda key: SigningKey("000000000000", SECRET_ACCESS_KEY) if key == ACCESS_KEY_ID else None,
                    now=datetime.datetime.now(datetime.timezone.utc),
                    max_skew_seconds=900,
                )
            except SignatureError as err:
                raise FakeError(403, "InvalidSignatureException", err.message) from None
            if headers.get("content-type") != "application/x-amz-json-1.1":
                raise FakeError(400, "SerializationException", "Expected application/x-amz-json-1.1.")
            handler = getattr(self, "_op_" + operation, None)
            if handler is None:
                raise FakeError(400, "UnknownOperationException", f"Unknown operation {operation!r}.")
            params = json.loads(body or b"{}")
            time.sleep(self.delay_seconds)
            with self._lock:
                self._injected_fault()
                self.calls[operation] += 1
                result = handler(params)
            if self.after_call is not None:
                self.after_call(operation, params)
            return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(result).encode()
        except FakeError as err:
            error: dict[str, Any] = {"__type": err.kind, "Message": err.message}
            if err.turk_code:
                error["TurkErrorCode"] = err.turk_code
            return err.status, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(error).encode()

    def _injected_fault(self) -> None:
        if self.throttle_next > 0:
            self.throttle_next -= 1
            self.calls["throttled"] += 1
            raise FakeError(400, "ThrottlingException", "Rate exceeded")
        if self.unavailable_next > 0 or time.time() < self.down_until:
            self.unavailable_next = max(self.unavailable_next - 1, 0)
            self.calls["unavailable"] += 1
            raise FakeError(503, "ServiceUnavailable", "Service is unavailable, please try again later.")

    # Operations

    def _op_GetAccountBalance(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"AvailableBalance": f"{self.balance:.2f}", "OnHoldBalance": "0.00"}

    def _op_CreateHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        for required in ("LifetimeInSeconds", "AssignmentDurationInSeconds", "Reward", "Title", "Description"):
            if required not in params:
                raise request_error(f"Missing {required}.", "ParameterValidationError")
        token = params.get("UniqueRequestToken")
        for hit in self.hits.values():
            if token is not None and hit.token == token:
                raise request_error(
                    f"There is already a HIT which exists with the same Unique Request Token (HITId: {hit.id}).",
                    "HitAlreadyExists",
                )
        assignments = int(params.get("MaxAssignments", 1))
        reward = float(params["Reward"])
        self._reserve(assignments, reward, assignments)
        now = time.time()
        hit = FakeHit(
            id=self._new_id(),
            token=token,
            annotation=params.get("RequesterAnnotation"),
            max_assignments=assignments,
            reward=reward,
            created_at=now,
            expires_at=now + int(params["LifetimeInSeconds"]),
            auto_approval_delay=int(params.get("AutoApprovalDelayInSeconds", 2592000)),
            page=HitPage(params["Question"]),
            request=params,
        )
        self.hits[hit.id] = hit
        return {"HIT": self._describe(hit)}

    def _op_CreateAdditionalAssignmentsForHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        hit = self._hit(params["HITId"])
        token = params.get("UniqueRequestToken")
        if token is not None and token in hit.extension_tokens:
            raise request_error("The request token has already been used (RequestId: fake).", "DuplicateRequest")
        added = int(params["NumberOfAdditionalAssignments"])
        if hit.max_assignments < 10 <= hit.max_assignments + added:
            raise request_error(
                "HITs created with fewer than 10 assignments cannot be extended to 10 or more.",
                "InvalidMaximumAssignmentsIncrease",
            )
        self._reserve(added, hit.reward, hit.max_assignments + added)
        hit.max_assignments += added
        if token is not None:
            hit.extension_tokens.add(token)
        return {}

    def _op_ListAssignmentsForHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        hit = self._hit(params["HITId"])
        statuses = set(params.get("AssignmentStatuses", ["Submitted", "Approved", "Rejected"]))
        found = [a for a in hit.assignments if a.status in statuses]
        return self._page(params, "Assignments", [self._describe_assignment(a) for a in found])

    def _op_ListHITs(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._page(params, "HITs", [self._describe(hit) for hit in self.hits.values()])

    def _op_GetHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"HIT": self._describe(self._hit(params["HITId"]))}

    def _op_GetAssignment(self, params: dict[str, Any]) -> dict[str, Any]:
        assignment = self._assignment(params["AssignmentId"])
        return {"Assignment": self._describe_assignment(assignment)}

    def _op_ApproveAssignment(self, params: dict[str, Any]) -> dict[str, Any]:
        assignment = self._assignment(params["AssignmentId"])
        if assignment.status != "Submitted":
            raise request_error("This operation can be called with a status of: Submitted", "InvalidAssignmentState")
        self._approve(assignment)
        return {}

    def _op_UpdateExpirationForHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        hit = self._hit(params["HITId"])
        hit.expires_at = float(params["ExpireAt"])
        return {}

    def _op_DeleteHIT(self, params: dict[str, Any]) -> dict[str, Any]:
        hit = self._hit(params["HITId"])
        if not hit.reviewable(time.time()) or any(a.status == "Submitted" for a in hit.assignments):
            raise request_error("This HIT is currently in the state 'Assignable'.", "InvalidHITState")
        del self.hits[hit.id]
        return {}

    def _op_CreateWorkerBlock(self, params: dict[str, Any]) -> dict[str, Any]:
        self.blocked[params["WorkerId"]] = params["Reason"]
        return {}

    # Helpers

    def _reserve(self, assignments: int, reward: float, hit_size: int) -> None:
        cost = assignments * (reward + fee_per_assignment(reward, hit_size))
        if cost > self.balance + 1e-9:
            raise request_error("You do not have enough funds to pay for this HIT.", "InsufficientFunds")
        self.balance -= cost

    def _approve(self, assignment: FakeAssignment) -> None:
        hit = self.hits[assignment.hit_id]
        assignment.status, assignment.approved_at = "Approved", time.time()
        self.paid += hit.reward + fee_per_assignment(hit.reward, hit.max_assignments)

    def _new_id(self) -> str:
        self._ids += 1
        return "".join(self._random.choices(string.ascii_uppercase + string.digits, k=26)) + f"{self._ids:04d}"

    def _hit(self, hit_id: str) -> FakeHit:
        hit = self.hits.get(hit_id)
        if hit is None:
            raise request_error(f"Hit {hit_id} does not exist.", "HITDoesNotExist")
        return hit

    def _assignment(self, assignment_id: str) -> FakeAssignment:
        for hit in self.hits.values():
            for assignment in hit.assignments:
                if assignment.id == assignment_id:
                    return assignment
        raise request_error(f"Assignment {assignment_id} does not exist.", "AssignmentDoesNotExist")

    @staticmethod
    def _page(params: dict[str, Any], key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        size = int(params.get("MaxResults", 10))
        start = int(params.get("NextToken", "0"))
        result: dict[str, Any] = {key: items[start : start + size], "NumResults": len(items[start : start + size])}
        if start + size < len(items):
            result["NextToken"] = str(start + size)
        return result

    def _describe(self, hit: FakeHit) -> dict[str, Any]:
        now = time.time()
        pending = sum(a.status == "Accepted" for a in hit.assignments)
        completed = sum(a.status != "Accepted" for a in hit.assignments)
        status = "Reviewable" if hit.reviewable(now) else "Unassignable" if hit.expired(now) else "Assignable"
        description: dict[str, Any] = {
            "HITId": hit.id,
            "HITTypeId": "FAKEHITTYPE",
            "CreationTime": hit.created_at,
            "Title": hit.request["Title"],
            "Description": hit.request["Description"],
            "Question": hit.request["Question"],
            "HITStatus": status,
            "MaxAssignments": hit.max_assignments,
            "Reward": hit.request["Reward"],
            "Expiration": hit.expires_at,
            "NumberOfAssignmentsPending": pending,
            "NumberOfAssignmentsAvailable": max(hit.max_assignments - len(hit.assignments), 0),
            "NumberOfAssignmentsCompleted": completed,
        }
        if hit.annotation is not None:
            description["RequesterAnnotation"] = hit.annotation
        return description

    @staticmethod
    def _describe_assignment(assignment: FakeAssignment) -> dict[str, Any]:
        fields = "".join(
            f"<Answer><QuestionIdentifier>{name}</QuestionIdentifier><FreeText>{value}</FreeText></Answer>"
            for name, value in assignment.answer.items()
        )
        description: dict[str, Any] = {
            "AssignmentId": assignment.id,
            "WorkerId": assignment.worker,
            "HITId": assignment.hit_id,
            "AssignmentStatus": assignment.status,
            "AcceptTime": assignment.accepted_at,
            "Answer": f'<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="{_ANSWERS_XMLNS}">'
            f"{fields}</QuestionFormAnswers>",
        }
        if assignment.submitted_at is not None:
            description["SubmitTime"] = assignment.submitted_at
        if assignment.approved_at is not None:
            description["ApprovalTime"] = assignment.approved_at
        return description

    # The crowd

    def _work(self) -> None:
        while not self._stop.wait(_TICK_SECONDS):
            with self._lock:
                now = time.time()
                for hit in list(self.hits.values()):
                    self._take_open_assignments(hit, now)
                    for assignment in hit.assignments:
                        if assignment.status == "Accepted" and now >= assignment.submit_at:
                            assignment.status, assignment.submitted_at = "Submitted", now
                        elif (
                            assignment.status == "Submitted"
                            and assignment.submitted_at is not None
                            and now >= assignment.submitted_at + hit.auto_approval_delay
                        ):
                            self._approve(assignment)

    def _take_open_assignments(self, hit: FakeHit, now: float) -> None:
        while len(hit.assignments) < hit.max_assignments and not hit.expired(now):
            answered = {a.worker for a in hit.assignments}
            free = [w for w in self.workers if w not in answered and w not in self.blocked]
            if not free:
                return
            worker = self._random.choice(free)
            hit.assignments.append(
                FakeAssignment(
                    id=self._new_id(),
                    hit_id=hit.id,
                    worker=worker,
                    accepted_at=now,
                    submit_at=now + self.work_seconds,
                    answer=self._answer_of(hit.page),
                )
            )

    def _answer_of(self, page: HitPage) -> dict[str, str]:
        """One worker's form: the ``containsTarget`` button they press, as the page offers it."""
        choices = dict((value, name) for name, value in page.buttons)
        assert page.image_url is not None and {"yes", "no", "cant-tell"} <= set(choices), "not an image-contains HIT"
        if self._random.random() < self.cant_tell_rate:
            value = "cant-tell"
        else:
            truth = self.truth(page.image_url, page.label)
            right = self._random.random() < self.worker_accuracy
            value = "yes" if truth == right else "no"
        return {choices[value]: value}
