"""Settings of the local Crowd API server: accounts, workforce, adjudication, money, limits and faults."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from imagecontains_gateway.prolific_client import DEFAULT_API_URL

REGION_NAME = "us-east-1"
SERVICE_NAME = "crowd"
# Who answers production tasks: simulated workers, people on the worker page, both, or Prolific participants
# (beside the staff on the worker page).
WORKFORCES = ("simulated", "human", "mixed", "prolific")
# Prolific's lowest allowed pay per hour in any workspace currency (£6.00; $8.00 in USD workspaces).
PROLIFIC_MINIMUM_HOURLY_RATE = 6.0
# The refusal of the retired workforce (or of a config file still holding its settings), on one line.
MTURK_CLOSED = (
    "Amazon Mechanical Turk closed for good on 2026-09-30: the mturk workforce is gone; "
    "use --workforce prolific for paid participants (docs/changes.md)."
)
# Which way a simulated worker's mistakes go: either way, or all "yes" (a yes-sayer) or all "no".
BIASES = ("yes", "no")


@dataclass(frozen=True)
class CrowdClass:
    """A class of simulated workers: ``count`` workers named ``<name>-<n>`` who are right with ``accuracy``.

    :param name: the class name (workers are ``<name>-1``, ``<name>-2``, ...).
    :param count: how many workers the class has.
    :param accuracy: the share of questions a worker answers right (when the truth is as often yes as no).
    :param bias: None (mistakes go either way), ``yes`` (always right on images with the target, mistakes
        are all "yes": accuracy 0.5 says "yes" to everything) or ``no`` (the mirror image).
    """

    name: str
    count: int
    accuracy: float
    bias: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_.-" for c in self.name):
            raise ValueError(f"Invalid crowd class name {self.name!r}: use letters, digits, '-', '_' or '.'.")
        if self.count < 0:
            raise ValueError(f"Invalid worker count {self.count!r} of crowd class {self.name!r}: expected 0 or more.")
        if not 0.0 <= self.accuracy <= 1.0 or (self.bias is not None and self.accuracy < 0.5):
            floor = 0.5 if self.bias else 0.0
            raise ValueError(f"Invalid accuracy {self.accuracy!r} of crowd class {self.name!r}: expected {floor} to 1.")
        if self.bias not in (None, *BIASES):
            raise ValueError(f"Invalid bias {self.bias!r} of crowd class {self.name!r}: expected yes or no.")

    def says_yes(self, truth: bool, draw: float) -> bool:
        """What a worker of this class answers when the truth is ``truth``, given a uniform random ``draw``."""
        if self.bias is None:
            return truth if draw < self.accuracy else not truth
        # All mistakes go the bias's way: right on that side always, on the other side with 2 * accuracy - 1.
        leans_yes = self.bias == "yes"
        if truth == leans_yes:
            return truth
        return truth if draw < 2.0 * self.accuracy - 1.0 else leans_yes


def parse_crowd(text: str) -> tuple[CrowdClass, ...]:
    """Read ``NAME:COUNT:ACCURACY[:BIAS],...`` (the ``--crowd`` flag), e.g. ``expert:5:0.95,yes-sayer:3:0.5:yes``."""
    classes = []
    for part in text.split(","):
        fields = part.strip().split(":")
        if len(fields) not in (3, 4):
            raise ValueError(f"Invalid crowd class {part.strip()!r}: expected NAME:COUNT:ACCURACY[:BIAS].")
        try:
            count, accuracy = int(fields[1]), float(fields[2])
        except ValueError:
            raise ValueError(
                f"Invalid crowd class {part.strip()!r}: COUNT must be a whole number and ACCURACY a fraction."
            ) from None
        classes.append(CrowdClass(fields[0], count, accuracy, fields[3] if len(fields) == 4 else None))
    if len({crowd_class.name for crowd_class in classes}) != len(classes):
        raise ValueError(f"Invalid crowd {text!r}: each class needs a name of its own.")
    return tuple(classes)


@dataclass(frozen=True)
class Account:
    """One caller of the service: a 12-digit account id and its long-term access key.

    :param account_id: the 12-digit AWS-style account id that appears in task URLs.
    :param access_key_id: the access key id the caller signs with.
    :param secret_access_key: the secret the signature is checked against (never logged).
    """

    account_id: str
    access_key_id: str
    secret_access_key: str = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Account:
        """Read ``ACCOUNT_ID:ACCESS_KEY_ID:SECRET_ACCESS_KEY`` (the ``--account`` flag)."""
        parts = text.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError("Invalid account: expected ACCOUNT_ID:ACCESS_KEY_ID:SECRET_ACCESS_KEY.")
        account_id, access_key_id, secret_access_key = parts
        if not (len(account_id) == 12 and account_id.isdigit()):
            raise ValueError(f"Invalid account id {account_id!r}: expected 12 digits.")
        return cls(account_id, access_key_id, secret_access_key)


# The documented demo account, used when no --account is given. Its secret is public by design:
# the server binds to loopback and the demo account holds only play money.
DEMO_ACCOUNT = Account("123456789012", "AKIADEMOIMAGECONTAINS", "demo-secret-access-key-imagecontains")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server can be told; the CLI flags and ``LocalCrowdServer(**overrides)`` map to these fields.

    Defaults are fast (a test ``image-contains`` task finishes in well under a second); the CLI
    sets slower, realistic answer delays (see docs/server.md).

    :param accounts: the callers the server knows.
    :param workforce_size: number of simulated workers (0 leaves production tasks to a human workforce);
        the one-class shorthand of ``crowd``.
    :param worker_accuracy: probability that a simulated worker answers correctly, when the answer key knows the image.
    :param crowd: a mixed simulated crowd ``NAME:COUNT:ACCURACY[:BIAS],...`` (see :func:`parse_crowd`); when given,
        it replaces ``workforce_size`` workers of ``worker_accuracy``.
    :param answer_delay_seconds: time a simulated worker takes per answer.
    :param simulated_after_seconds: a simulated worker takes only tasks open at least this long, so that people
        answering next to them (``workforce="mixed"``) get first go at every task.
    :param answer_key_path: JSON ``{"images": {URL or file name: [labels]}}``; unknown images get random answers.
    :param confidence: posterior probability the adjudicated answer must reach before a task completes.
    :param max_answers_per_task: answers after which an unconfident task fails ``Inconclusive`` (at most
        ``workforce_size`` with a simulated workforce: each answer comes from another worker).
    :param prior_worker_accuracy: the adjudicator's belief about a worker it has not yet seen answer (on images
        with and on images without the target alike) while no gold has been answered; gold answers then move it
        toward what the crowd does on gold (``adjudication.CrowdPrior``).
    :param gold_share: the share of a worker's questions that are gold (once past probation), when gold
        questions are loaded (``imagecontains-server gold add``).
    :param gold_task_share: the share of gold questions asked as gold tasks: several workers answer the same gold
        question and the adjudicator decides it like a task, a running test of its confidence (docs/adjudication.md).
    :param probation_questions: a worker's first questions, of which ``probation_gold_share`` are gold.
    :param probation_gold_share: the share of gold among a new worker's first ``probation_questions``.
    :param block_below_accuracy: a worker whose accuracy (the mean of its accuracies on images with and without the
        target) is below this, by the one-sided 99 % bound of what gold and the other workers show, gets no more
        questions (``server/quality.py``).
    :param task_deadline_seconds: a task still processing after this long fails ``Expired``.
    :param reward_per_answer: dollars charged to the account for each worker answer.
    :param starting_balance: dollars every account starts with (once, when the database is new).
    :param max_tasks_in_progress: processing tasks allowed per account; further new PUTs get 429.
    :param account_requests_per_second: API and STS requests an account may make a second on average (429
        ``Throttled`` beyond); 0: no limit (``LocalCrowdServer``'s default, to measure the API itself).
    :param account_request_burst: requests an account may make at once after a quiet spell.
    :param throttle_rate: fraction of crowd requests answered 429 ``Throttled``.
    :param retry_after_seconds: value of the ``Retry-After`` header on 429 answers.
    :param error_rate: fraction of crowd requests answered 500 or 503 (half each) without effect.
    :param drop_rate: fraction of crowd requests whose connection is dropped after they took effect.
    :param latency_ms: delay added to every crowd request (a WAN round trip).
    :param max_body_bytes: larger request bodies get 413.
    :param clock_skew_seconds: largest accepted difference between ``x-amz-date`` and the server clock.
    :param session_duration_seconds: lifetime cap of AssumeRole credentials (short in tests).
    :param test_function_seconds: ``image-contains-test`` tasks complete on the first GET after the
        first one that comes at least this long after creation.
    :param seed: seed of every random choice (faults, simulated workers, mock results); None = random.
    :param images_dir: directory of local images, served to signed-in users at ``/images/<relative path>``.
    :param workforce: ``simulated`` (default), ``human`` (people answer on the worker page; no simulated
        workers) or ``mixed`` (both; see docs/workforce.md).
    :param human_claim_seconds: a question shown to a human worker is given back to the others after this long
        without an answer.
    :param broken_image_reports: broken-image reports, each weighed by its reporter's record (a new worker's
        counts half), after which a task nobody saw is reviewed: a local image is checked on disk, another host's
        goes to trusted workers only, and the task fails ``ImageUnavailable`` once confirmed (docs/workforce.md).
    :param max_non_answer_share: a worker whose "can't tell" answers and broken-image reports pass this share of
        the questions it was given (judged after 10, or ``probation_questions``) gets no more questions.
    :param charged_non_answers_per_task: "can't tell" answers and broken-image reports of one task the requester
        pays for; further ones are given back.
    :param expose_stats: serve ``GET /_local/request-counts`` (used by ``LocalCrowdServer``).
    :param web_session_seconds: lifetime of a session of the worker page or dashboard (ended sooner by signing
        out or by issuing the subject a new token).
    :param request_read_timeout_seconds: a request's head and body must arrive within this long of its first
        byte; slower clients get 408 and are disconnected.
    :param first_byte_timeout_seconds: a new connection must finish its TLS handshake, then send its first byte,
        within this long; else it is closed without an answer.
    :param max_connections: requests handled at once (a connection that is not sending or awaiting a request does
        not count); beyond, requests get 503.
    :param forwarded_allow_ips: addresses (or networks) of the reverse proxies whose ``X-Forwarded-For`` and
        ``X-Forwarded-Proto`` are believed (see docs/deployment.md); empty: nobody's, the connection's own
        address and scheme count.
    :param allowed_hosts: names (or addresses) clients may reach the server by, besides loopback names and the
        listening address: any other ``Host`` header is refused (DNS rebinding).
    :param prolific_accounts: with ``workforce="prolific"``, the accounts whose tasks Prolific participants see
        (public crowds see the images); every other account's tasks stay with the staff on the worker page.
    :param prolific_api_url: Prolific's API (the fake's address in tests).
    :param prolific_token: the Prolific API token (from ``$PROLIFIC_TOKEN`` or the ``--config`` file; never a flag,
        never logged).
    :param public_url: the HTTPS base URL participants reach this server at (``http://`` only for loopback hosts).
    :param prolific_batch_size: questions per participant place.
    :param prolific_hourly_rate: the pay per hour, in the workspace's currency, that rewards and top-up bonuses keep.
    :param prolific_project: the id of the Prolific project (inside a workspace) studies are created in; None:
        the token's default workspace and project.
    :param prolific_poll_seconds: how often submissions are read, places grown and studies paused or started.
    :param prolific_seconds_per_answer: seconds per answer assumed until participants' answers are measured.
    """

    accounts: tuple[Account, ...] = (DEMO_ACCOUNT,)
    workforce_size: int = 15
    worker_accuracy: float = 0.9
    crowd: str | None = None
    answer_delay_seconds: float = 0.0
    simulated_after_seconds: float = 0.0
    answer_key_path: str | None = None
    confidence: float = 0.95
    max_answers_per_task: int = 11
    prior_worker_accuracy: float = 0.8
    gold_share: float = 0.1
    gold_task_share: float = 0.3
    probation_questions: int = 10
    probation_gold_share: float = 0.8
    block_below_accuracy: float = 0.6
    task_deadline_seconds: float = 86400.0
    reward_per_answer: float = 0.01
    starting_balance: float = 1000.0
    max_tasks_in_progress: int = 50_000
    account_requests_per_second: float = 500.0
    account_request_burst: int = 5_000
    throttle_rate: float = 0.0
    retry_after_seconds: int = 1
    error_rate: float = 0.0
    drop_rate: float = 0.0
    latency_ms: float = 0.0
    max_body_bytes: int = 16 * 1024
    clock_skew_seconds: int = 15 * 60
    session_duration_seconds: int = 3600
    test_function_seconds: float = 0.0
    seed: int | None = None
    images_dir: str | None = None
    workforce: str = "simulated"
    human_claim_seconds: float = 300.0
    broken_image_reports: int = 2
    max_non_answer_share: float = 0.5
    charged_non_answers_per_task: int = 2
    expose_stats: bool = False
    prolific_accounts: tuple[str, ...] = ()
    prolific_api_url: str = DEFAULT_API_URL
    prolific_token: str | None = field(default=None, repr=False)
    public_url: str | None = None
    prolific_batch_size: int = 20
    prolific_hourly_rate: float = 12.0
    prolific_project: str | None = None
    prolific_poll_seconds: float = 30.0
    prolific_seconds_per_answer: float = 10.0
    allowed_hosts: tuple[str, ...] = ()
    forwarded_allow_ips: tuple[str, ...] = ()
    request_read_timeout_seconds: float = 30.0
    first_byte_timeout_seconds: float = 10.0
    max_connections: int = 1000
    web_session_seconds: float = 12 * 3600.0

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ValueError("Invalid accounts: give at least one account.")
        for name in (
            "throttle_rate",
            "error_rate",
            "drop_rate",
            "worker_accuracy",
            "gold_share",
            "gold_task_share",
            "probation_gold_share",
            "block_below_accuracy",
            "max_non_answer_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Invalid {name} {value!r}: expected a fraction between 0 and 1.")
        if self.simulated_after_seconds < 0:
            raise ValueError(f"Invalid simulated_after_seconds {self.simulated_after_seconds!r}: expected 0 or more.")
        if self.account_requests_per_second < 0:
            raise ValueError(
                f"Invalid account_requests_per_second {self.account_requests_per_second!r}: expected >= 0."
            )
        if self.broken_image_reports < 1:
            raise ValueError(f"Invalid broken_image_reports {self.broken_image_reports!r}: expected at least 1.")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"Invalid confidence {self.confidence!r}: expected a probability between 0.5 and 1.")
        if not 0.5 < self.prior_worker_accuracy < 1.0:
            raise ValueError(f"Invalid prior_worker_accuracy {self.prior_worker_accuracy!r}: expected 0.5 < p < 1.")
        if self.workforce == "mturk":
            raise ValueError(MTURK_CLOSED)
        if self.workforce not in WORKFORCES:
            raise ValueError(f"Invalid workforce {self.workforce!r}: expected one of {', '.join(WORKFORCES)}.")
        if self.crowd is not None:
            parse_crowd(self.crowd)
        if self.workforce == "prolific":
            check_prolific_settings(self)
        for name in (
            "workforce_size",
            "max_answers_per_task",
            "max_tasks_in_progress",
            "max_body_bytes",
            "probation_questions",
            "max_connections",
            "charged_non_answers_per_task",
            "account_request_burst",
        ):
            at_least_one = ("max_answers_per_task", "max_tasks_in_progress", "max_body_bytes", "max_connections")
            if getattr(self, name) < (1 if name in at_least_one else 0):
                raise ValueError(f"Invalid {name} {getattr(self, name)!r}: expected a positive number.")

    @property
    def crowd_classes(self) -> tuple[CrowdClass, ...]:
        """The simulated crowd: ``crowd``, else ``workforce_size`` workers of ``worker_accuracy``."""
        if self.crowd is not None:
            return parse_crowd(self.crowd)
        return (CrowdClass("sim-worker", self.workforce_size, self.worker_accuracy),)

    @property
    def simulated_workers(self) -> int:
        return sum(crowd_class.count for crowd_class in self.crowd_classes)

    def replace(self, **overrides: Any) -> ServerConfig:
        """Return a copy with ``overrides`` applied; accounts may be given as Account, dict or text."""
        if "accounts" in overrides:
            overrides["accounts"] = tuple(_as_account(a) for a in overrides["accounts"])
        if "prolific_accounts" in overrides:
            overrides["prolific_accounts"] = tuple(overrides["prolific_accounts"])
        for name in ("allowed_hosts", "forwarded_allow_ips"):
            if name in overrides:
                overrides[name] = tuple(overrides[name])
        if any(name.startswith("mturk_") for name in overrides):
            raise ValueError(MTURK_CLOSED)
        return dataclasses.replace(self, **overrides)

    def to_json(self) -> str:
        """Serialise (secrets included) for a child server process; write it only to private files."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json_file(cls, path: str | Path) -> ServerConfig:
        """Read a config written by :meth:`to_json` (the ``--config`` flag)."""
        return cls().replace(**json.loads(Path(path).read_text()))


def check_prolific_settings(config: ServerConfig) -> None:
    """Refuse Prolific settings that would spend money wrongly or send participants nowhere."""
    known = {account.account_id for account in config.accounts}
    if not config.prolific_accounts:
        raise ValueError("Invalid prolific_accounts: list the accounts whose tasks Prolific participants may see.")
    if unknown := sorted(set(config.prolific_accounts) - known):
        raise ValueError(f"Invalid prolific_accounts {unknown!r}: not accounts of this server.")
    public = urlsplit(config.public_url or "")
    loopback = public.hostname in ("localhost", "127.0.0.1", "::1")
    if public.scheme != "https" and not (public.scheme == "http" and loopback):
        raise ValueError(
            f"Invalid public_url {config.public_url!r}: give the https:// address participants reach this server at "
            "(http:// only for a loopback host, in tests)."
        )
    if public.query or public.fragment:
        raise ValueError(f"Invalid public_url {config.public_url!r}: no query or fragment.")
    if config.prolific_batch_size < 1:
        raise ValueError(f"Invalid prolific_batch_size {config.prolific_batch_size!r}: expected at least 1.")
    if config.prolific_hourly_rate < PROLIFIC_MINIMUM_HOURLY_RATE:
        raise ValueError(
            f"Invalid prolific_hourly_rate {config.prolific_hourly_rate!r}: Prolific's minimum pay is £6.00 or $8.00 "
            "an hour (researcher-help.prolific.com, read 2026-12-03)."
        )
    if config.prolific_poll_seconds <= 0 or config.prolific_seconds_per_answer <= 0:
        raise ValueError("Invalid prolific_poll_seconds or prolific_seconds_per_answer: expected positive seconds.")


def _as_account(value: Account | dict[str, str] | str) -> Account:
    if isinstance(value, Account):
        return value
    if isinstance(value, dict):
        return Account(**value)
    return Account.parse(value)
