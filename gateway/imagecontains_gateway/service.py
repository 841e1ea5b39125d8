"""The Crowd API's behaviour, independent of HTTP: tasks, test mock results, answers, money and deadlines."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from imagecontains_gateway.adjudication import (
    ClassPrior,
    CrowdPrior,
    Verdict,
    WorkerModel,
    adjudicate,
    learn_from_task,
)
from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.images import LocalImages
from imagecontains_gateway.quality import (
    BROKEN_REPORTS_PER_HOUR,
    GoldTasks,
    WorkerRecord,
    WorkerRecords,
    block_reason,
    broken_report_weight,
    crowd_gold_record,
    gold_due,
    non_answer_block_reason,
    peer_truths,
)
from imagecontains_gateway.store import (
    PROCESSING,
    StoredTask,
    TaskStore,
    canonical_json,
    to_microdollars,
)
from imagecontains_gateway.validation import (
    IMAGE_CONTAINS,
    IMAGE_CONTAINS_TEST,
    InvalidTaskError,
    validate_task_input,
    validate_task_name,
)

log = logging.getLogger(__name__)

FUNCTIONS = frozenset({IMAGE_CONTAINS, IMAGE_CONTAINS_TEST})
EXPIRED = {"code": "Expired", "message": "Not enough Workers provided answers for your task within the allotted time."}
INSUFFICIENT_FUNDS = {
    "code": "InsufficientFunds",
    "message": "Your account does not have enough prepaid funds to pay Workers for this task.",
}
IMAGE_UNAVAILABLE = {
    "code": "ImageUnavailable",
    "message": "The image did not load for the workers it was shown to; check that its URL works from their browsers.",
}
CANCELLED = {"code": "Cancelled", "message": "The requester cancelled this task; nobody is asked it any more."}
INCONCLUSIVE = {
    "code": "Inconclusive",
    "message": "Workers did not agree with the required confidence within the maximum number of answers.",
}


def parse_cancellation(body: bytes) -> tuple[list[str], str]:
    """The task names, or the name prefix, of a cancellation ``{"taskNames": [...]}`` / ``{"namePrefix": "..."}``."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise CrowdError(400, "InvalidInput", f"The body is not valid JSON: {err}.") from None
    if not isinstance(document, dict) or len(document) != 1 or not {"taskNames", "namePrefix"} >= set(document):
        raise CrowdError(400, "InvalidInput", 'The body must be {"taskNames": [...]} or {"namePrefix": "..."}.')
    names, prefix = document.get("taskNames", []), document.get("namePrefix", "")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise CrowdError(400, "InvalidInput", "taskNames must be a list of task names.")
    # A prefix is the start of a task name, checked as one (an empty prefix would cancel everything).
    for name in [*names, *([prefix] if "namePrefix" in document else [])]:
        if not isinstance(name, str):
            raise CrowdError(400, "InvalidInput", "namePrefix must be the non-empty start of task names.")
        try:
            validate_task_name(name)
        except InvalidTaskError as err:
            raise CrowdError(400, "InvalidInput", err.message) from None
    return names, prefix


def cancel_main(argv: Sequence[str]) -> None:
    """``imagecontains-server cancel ACCOUNT_ID (--task NAME ... | --prefix PREFIX) [--function F] [--db FILE]``."""
    parser = argparse.ArgumentParser(
        prog="imagecontains-server cancel",
        description="Cancel an account's processing tasks: they fail Cancelled at once and nobody is asked them "
        "any more (a running server sees it on its next question).",
    )
    parser.add_argument("account", help="the 12-digit account id")
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--task", action="append", help="a task name (repeatable)")
    chosen.add_argument("--prefix", help="cancel every processing task whose name starts with this")
    parser.add_argument("--function", default=IMAGE_CONTAINS, choices=sorted(FUNCTIONS))
    parser.add_argument("--db", default="imagecontains-server.db", help="the server's SQLite file")
    args = parser.parse_args(argv)
    request = {"namePrefix": args.prefix} if args.prefix is not None else {"taskNames": args.task}
    try:
        names, prefix = parse_cancellation(json.dumps(request).encode())
    except CrowdError as err:
        raise SystemExit(f"imagecontains-server cancel: {err.message}") from None
    store = TaskStore(args.db)
    try:
        cancelled = store.cancel(args.account, args.function, CANCELLED, names=names, prefix=prefix)
    finally:
        store.close()
    print(f"Cancelled {len(cancelled)} processing tasks" + "".join(f"\n  {name}" for name in cancelled))


@dataclass
class CrowdError(Exception):
    """An error answer of the API: HTTP status, AWS-style code, message, extra headers."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Assignment:
    """A question for one worker: does the image at ``image_url`` contain ``label``?

    :param task_id: the task's id, or the gold question's id when ``gold``.
    :param image_url: the image to look at.
    :param label: what to look for.
    :param gold: a gold question (known answer, never billed); the server's secret, never shown to the worker.
    :param charged: the account was charged the reward when the question was given (not for a Prolific place,
        paid by the place): only such a question can be given back (``charged_non_answers_per_task``).
    :param gold_task_id: the gold task this gold question is asked for (several workers, adjudicated), if any.
    :param question_id: what the worker's answer names the question by: random per question, so that it
        tells nothing (gold questions and tasks have ids of their own, in ranges a worker could learn).
    """

    task_id: int
    image_url: str
    label: str
    gold: bool = False
    charged: bool = False
    gold_task_id: int | None = None
    question_id: int = field(default_factory=lambda: secrets.randbits(53))


class CrowdService:
    """Creates, reads and deletes tasks and takes worker answers.

    :param store: the persistence.
    :param config: the server settings.
    :param check_image: returns why the workforce could not load an image URL (the PUT is then refused
        with 400 ``InvalidInput``), or None when it can.
    :param check_task: given an account and an image URL, the error to refuse a new task with, or None.
    :param local_images: the images this server serves (``--images-dir``), and which task URLs name them.
    """

    def __init__(
        self,
        store: TaskStore,
        config: ServerConfig,
        check_image: Callable[[str], str | None] | None = None,
        check_task: Callable[[str, str], CrowdError | None] | None = None,
        local_images: LocalImages | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.check_image = check_image
        self.check_task = check_task
        self.local_images = local_images or LocalImages(None, ())
        self._random = random.Random(config.seed)  # noqa: S311 -- simulation, not security
        # Each answer to a task comes from a different worker, so a small simulated workforce lowers the cap.
        self._max_answers = min(config.max_answers_per_task, config.simulated_workers or config.max_answers_per_task)
        if config.workforce != "simulated":  # people add workers of their own: only the configured cap applies
            self._max_answers = config.max_answers_per_task
        # One event per idle worker, set when a task may need an answer (a new task, or an answer that
        # did not decide one). Registered before the worker awaits, so no wake-up is lost.
        self._idle_workers: set[asyncio.Event] = set()
        # Called with (worker, reason) when a worker is blocked, e.g. to block it on the crowd platform too.
        self.block_listeners: list[Callable[[str, str], None]] = []
        self.gold_tasks = GoldTasks(store.connection)
        self.worker_records = WorkerRecords(store.connection)
        # All workers' gold answers pooled, kept up to date as gold teaches the models: the crowd prior.
        self._crowd_gold = crowd_gold_record(store.connection)
        self._calibration_below = False
        self._watch_calibration()

    # The three REST operations

    def put_task(self, account: str, function: str, name: str, body: bytes) -> tuple[int, StoredTask]:
        """Create the task (201) or confirm an identical one (200)."""
        self._check_function(function)
        self._check_name(name)
        task_input = self._parse_input(function, body)
        input_json = canonical_json(task_input)
        existing = self.store.get(account, function, name)
        if existing is not None:
            if existing.input != input_json:
                raise CrowdError(
                    400,
                    "TaskAlreadyExists",
                    f"Task {name!r} already exists with a different input; use another name or delete it when finished.",
                )
            return 200, existing
        if function == IMAGE_CONTAINS:
            self._check_local_image(account, task_input["image"]["url"])  # type: ignore[index]
        if function == IMAGE_CONTAINS and self.check_image is not None:
            problem = self.check_image(task_input["image"]["url"])  # type: ignore[index]
            if problem is not None:
                raise CrowdError(400, "InvalidInput", problem)
        if function == IMAGE_CONTAINS and self.check_task is not None:
            refusal = self.check_task(account, task_input["image"]["url"])  # type: ignore[index]
            if refusal is not None:
                raise refusal
        if self.store.count_processing(account) >= self.config.max_tasks_in_progress:
            raise CrowdError(
                429,
                "LimitExceeded",
                f"Account has {self.config.max_tasks_in_progress} tasks in progress, the most allowed; retry later.",
                {"Retry-After": str(self.config.retry_after_seconds)},
            )
        now = time.time()
        task = self.store.insert(account, function, name, input_json, now, now + self.config.task_deadline_seconds)
        if function == IMAGE_CONTAINS:
            self._wake_workers()
        return 201, task

    def _check_local_image(self, account: str, url: str) -> None:
        """Refuse a task naming a local image that is not one of its account's (issue 24: another account's image
        would be shown on this account's dashboard); a missing image gets the same answer."""
        sole_account = len({known.account_id for known in self.config.accounts}) == 1
        if self.local_images.account_image(url, account, sole_account=sole_account) is False:
            folder = "the server's images folder" if sole_account else f"the folder {account}/ of the server's images"
            raise CrowdError(400, "InvalidInput", f"Invalid image URL {url!r}: it names no image in {folder}.")

    def get_task(self, account: str, function: str, name: str) -> StoredTask:
        """Read a task, first expiring it or completing a test task when it is due."""
        task = self._existing(account, function, name)
        if task.state != PROCESSING:
            return task
        now = time.time()
        if now >= task.deadline_at:
            self.store.finish(task.id, problem=EXPIRED)
        elif function == IMAGE_CONTAINS_TEST:
            # Documented: the first GET shows processing, later GETs a random mock result.
            if task.get_count >= 1 and now - task.created_at >= self.config.test_function_seconds:
                self.store.finish(task.id, result={"containsTarget": self._random.random() < 0.5})
            else:
                self.store.count_get(task.id)
                return task
        else:
            return task
        return self.store.get_by_id(task.id) or task

    def delete_task(self, account: str, function: str, name: str) -> None:
        """Delete a finished task, freeing its name; a processing task is refused with 409."""
        task = self._existing(account, function, name)
        if task.state == PROCESSING and time.time() < task.deadline_at:
            raise CrowdError(
                409, "TaskInProgress", f"Task {name!r} is still processing; delete it once it is completed or failed."
            )
        self.store.delete(task.id)

    def cancel_tasks(self, account: str, function: str, body: bytes) -> list[str]:
        """Fail processing tasks ``Cancelled`` at once, so that no worker is asked (and no answer paid) any more.

        ``body`` is ``{"taskNames": [...]}`` or ``{"namePrefix": "..."}`` (e.g. one DAG run's namespace). Finished
        and unknown tasks are left as they are: cancelling twice cancels nothing more. Returns the names cancelled.
        """
        self._check_function(function)
        names, prefix = parse_cancellation(body)
        cancelled = self.store.cancel(account, function, CANCELLED, names=names, prefix=prefix)
        if cancelled:
            log.info("Account %s cancelled %d %s tasks", account, len(cancelled), function)
        return cancelled

    # The workforce side: one answer at a time, the adjudicator decides after each

    def next_assignment(
        self,
        worker: str,
        accounts: Collection[str] | None = None,
        *,
        charge: bool = True,
        created_before: float | None = None,
    ) -> Assignment | None:
        """The next question for ``worker``: a gold question when the quality policy draws one, else the oldest
        open image-contains task it has not answered, of one of ``accounts`` when given (its account is charged
        the reward unless ``charge`` is False: Prolific places are paid by the place). None when there is no
        open task, or when the worker is blocked.

        :param created_before: only tasks created before this time (``time.time()``), e.g. those people left.
        """
        if self.store.is_blocked(worker):
            return None
        reviewer = self._trusted_reviewer(worker)
        while (
            task := self.store.claim_next(
                worker, IMAGE_CONTAINS, accounts, reviewer=reviewer, created_before=created_before
            )
        ) is not None:
            if time.time() >= task.deadline_at:
                self.store.finish(task.id, problem=EXPIRED)
                continue
            # Gold only stands in for a real question, so a worker is never paid for gold while nothing waits.
            questions_before = self.store.count_question(worker)
            if gold_due(self.config, questions_before, self._random.random()):
                gold = self._gold_question(worker, on_probation=questions_before < self.config.probation_questions)
                if gold is not None:
                    self.store.unclaim(task.id)
                    return gold
            if charge and not self.store.charge(task.account, to_microdollars(self.config.reward_per_answer)):
                self.store.finish(task.id, problem=INSUFFICIENT_FUNDS)
                continue
            task_input = json.loads(task.input)
            return Assignment(task.id, task_input["image"]["url"], task_input["target"]["label"], charged=charge)
        return None

    def _gold_question(self, worker: str, *, on_probation: bool) -> Assignment | None:
        """A gold question ``worker`` has not answered: past probation, a share of them asked for a gold task (on
        probation every gold answer teaches at once, so that a spammer is stopped soon). A worker who answers a
        gold question alone cannot answer it for a gold task: plain gold leaves the waiting gold tasks' questions."""
        gold = self.store.next_gold(worker, self._random.random(), avoid=self.gold_tasks.waiting_gold())
        if gold is None:
            return None
        gold_id, image_url, label, _ = gold
        if not on_probation and self._random.random() < self.config.gold_task_share:
            gold_task_id, gold_id = self.gold_tasks.claim(
                worker, gold_id, time.time(), self.config.task_deadline_seconds
            )
            image_url, label = self.store.gold_question(gold_id)
            return Assignment(gold_id, image_url, label, gold=True, gold_task_id=gold_task_id)
        return Assignment(gold_id, image_url, label, gold=True)

    def gold_assignment(self, worker: str) -> Assignment | None:
        """A gold question ``worker`` has not answered (for a paid batch with no task left), else None."""
        gold = self.store.next_gold(worker, self._random.random())
        if gold is None:
            return None
        self.store.count_question(worker)
        gold_id, image_url, label, _ = gold
        return Assignment(gold_id, image_url, label, gold=True)

    def give_back(self, assignment: Assignment) -> None:
        """Let other workers take a question its worker left unanswered."""
        if assignment.gold_task_id is not None:
            self.gold_tasks.unclaim(assignment.gold_task_id)
        elif not assignment.gold:
            self.store.unclaim(assignment.task_id)

    def is_open(self, assignment: Assignment) -> bool:
        """True while the question may still be answered: its task (or gold task) waits; a gold question always."""
        if assignment.gold_task_id is not None:
            return self.gold_tasks.is_open(assignment.gold_task_id)
        if assignment.gold:
            return True
        task = self.store.get_by_id(assignment.task_id)
        return task is not None and task.state == PROCESSING and time.time() < task.deadline_at

    def submit_answer(self, assignment: Assignment, worker: str, contains_target: bool | None) -> None:
        """Store ``worker``'s answer and let the adjudicator complete, fail or reopen the task.

        ``None`` is a human worker's "can't tell": stored so the worker is not asked again, but no vote.
        A gold answer updates the worker's model (and may block it) and nothing else.
        """
        if assignment.gold:
            self._submit_gold(assignment, worker, contains_target)
            return
        task = self.store.get_by_id(assignment.task_id)
        if task is None or task.state != PROCESSING:
            return
        blocked: dict[str, str] = {}
        if contains_target is None:
            with self.store.transaction():
                self._refund_non_answer_past_cap(task, assignment)
                self.store.add_answer(task.id, worker, None, time.time())
                blocked = self._count_non_answer(worker, "cant_tell")
                self.store.unclaim(task.id)
            self._announce_blocked(blocked)
            self._wake_workers()
            return
        prior = self.crowd_prior
        label = json.loads(task.input)["target"]["label"]
        with self.store.transaction():
            self.store.add_answer(task.id, worker, contains_target, time.time())
            answers = [(who, bool(answer)) for who, answer in self.store.answers(task.id)]
            models = self.store.worker_models({who for who, _ in answers})
            class_prior = self.store.class_prior(task.account, task.function, label)
            verdict = self._verdict(answers, models, class_prior)
            if verdict.contains_target is not None:
                result = {
                    "containsTarget": verdict.contains_target,
                    "confidence": round(verdict.confidence, 4),
                    "answers": len(answers),
                }
                self.store.finish(task.id, result=result)
            elif verdict.exhausted:
                self.store.finish(task.id, problem=INCONCLUSIVE)
            else:
                self.store.unclaim(task.id)
            if not verdict.needs_more_answers:
                # An Inconclusive task teaches too: leaving out the hard ones would hide how many there are.
                judged = peer_truths(answers, models, prior, class_prior.share_hard)
                learned, class_prior = learn_from_task(answers, models, class_prior, prior=prior)
                self.store.save_models(learned)
                self.store.save_class_prior(task.account, task.function, label, class_prior)
                blocked = self._judge([(who, judged[who], yes, False) for who, yes in answers if who in judged])
        self._announce_blocked(blocked)
        if verdict.needs_more_answers:
            self._wake_workers()

    def retract_answer(self, assignment: Assignment, worker: str) -> bool:
        """Take back ``worker``'s answer to a task still processing (its answer did not decide it), or to a gold
        question (what it taught the worker's model goes too, unless it got the worker blocked); False otherwise."""
        if assignment.gold:
            return self._retract_gold(assignment, worker)
        task = self.store.get_by_id(assignment.task_id)
        if task is None or task.state != PROCESSING or time.time() >= task.deadline_at:
            return False
        self.store.delete_answers(assignment.task_id, worker)
        return True

    def report_broken_image(self, assignment: Assignment, worker: str) -> None:
        """Store that the image did not load for ``worker`` (no vote), and weigh the task's reports (issue 24).

        A report on a gold question (its image is known to load) counts against the reporter; a report of a
        reporter who made one, or past ``BROKEN_REPORTS_PER_HOUR``, is taken as "can't tell". Once the reports,
        each weighed by its reporter's record (:func:`broken_report_weight`), reach ``broken_image_reports`` and
        nobody saw the image (no votes), the image is reviewed: a local image is checked on disk (missing: the task
        fails ``ImageUnavailable``), another host's goes to trusted reviewers only, and fails when one of them
        reports it too.
        """
        if assignment.gold:  # no vote, as "can't tell": the worker is not asked that gold question again
            self._submit_gold(assignment, worker, None, non_answer="broken_gold")
            return
        task = self.store.get_by_id(assignment.task_id)
        if task is None or task.state != PROCESSING:
            return
        now = time.time()
        with self.store.transaction():
            self._refund_non_answer_past_cap(task, assignment)
            believed = self._broken_report_believed(worker, now)
            if believed:
                self.store.add_broken_image_report(task.id, worker, now)
            else:
                self.store.add_answer(task.id, worker, None, now)
            blocked = self._count_non_answer(worker, "broken_image")
            unavailable = believed and self._broken_image_confirmed(task, worker)
            if unavailable:
                self.store.finish(task.id, problem=IMAGE_UNAVAILABLE)
            else:
                self.store.unclaim(task.id)
        self._announce_blocked(blocked)
        if not unavailable:
            self._wake_workers()

    @property
    def crowd_prior(self) -> CrowdPrior:
        """What is expected of a worker before its own record: the crowd's accuracies on gold, per kind of image,
        shrunk toward ``prior_worker_accuracy`` while gold is scarce (exactly that without gold)."""
        return CrowdPrior.from_gold(self._crowd_gold, self.config.prior_worker_accuracy)

    def _verdict(
        self, answers: list[tuple[str, bool]], models: dict[str, WorkerModel], class_prior: ClassPrior
    ) -> Verdict:
        """The adjudicator's decision on a task's (or a gold task's) answers so far. Gold tasks and the workforce's
        reach have no account's images: they take the prior of a new (account, function, label)."""
        return adjudicate(
            answers,
            models,
            confidence=self.config.confidence,
            max_answers=self._max_answers,
            prior=self.crowd_prior,
            class_prior=class_prior,
        )

    def reach(self, workers: Collection[str]) -> Verdict:
        """What the adjudicator decides when the strongest ``max_answers`` of ``workers`` all give the same answer,
        on the kind of image where that weighs less: whether these workers can complete a task at all (a verdict
        without ``contains_target`` says they cannot, and ``confidence`` how far they get)."""
        models = self.store.worker_models(workers)
        prior = self.crowd_prior

        def odds(worker: str, says_yes: bool) -> float:  # how strongly the worker's answer says what it says
            model = models.get(worker) or WorkerModel()
            on_yes, on_no = model.accuracy_on_yes(prior), model.accuracy_on_no(prior)
            return on_yes / (1.0 - on_no) if says_yes else on_no / (1.0 - on_yes)

        verdicts = []
        for says_yes in (True, False):
            strongest = sorted(workers, key=lambda w: odds(w, says_yes), reverse=True)
            verdicts.append(
                self._verdict([(w, says_yes) for w in strongest[: self._max_answers]], models, ClassPrior())
            )
        return min(verdicts, key=lambda verdict: (verdict.contains_target is not None, verdict.confidence))

    # Non-answers ("can't tell", broken-image reports): the worker's record, the requester's bill (issue 24)

    def _broken_report_believed(self, worker: str, now: float) -> bool:
        """Whether ``worker``'s report now counts as one: never after it called a gold image broken, nor past its
        hourly allowance."""
        if self.store.non_answers(worker).broken_gold:
            return False
        return self.store.broken_image_reports_since(worker, now - 3600.0) < BROKEN_REPORTS_PER_HOUR

    def _broken_image_confirmed(self, task: StoredTask, reporter: str) -> bool:
        """Whether the task's image is confirmed broken after ``reporter``'s report; starts its review when due."""
        if self.store.answers(task.id):
            return False  # somebody saw the image
        reporters = self.store.broken_image_reporters(task.id)
        models = self.store.worker_models(reporters)
        weight = sum(
            broken_report_weight(self.config, self.crowd_prior, models.get(worker), self.store.non_answers(worker))
            for worker in reporters
        )
        if weight < self.config.broken_image_reports:
            return False
        loads = self.local_images.loads(json.loads(task.input)["image"]["url"])
        if loads is not None:
            return not loads
        if self.store.in_broken_image_review(task.id):
            return self._trusted_reviewer(reporter)
        self.store.start_broken_image_review(task.id)
        return False

    def _trusted_reviewer(self, worker: str) -> bool:
        model = self.store.worker_models([worker]).get(worker)
        return broken_report_weight(self.config, self.crowd_prior, model, self.store.non_answers(worker)) == 1.0

    def _count_non_answer(self, worker: str, kind: str) -> dict[str, str]:
        """Count a non-answer in the worker's record and block the worker when they are too many (in the caller's
        transaction); return the newly blocked worker and why."""
        record = self.store.count_non_answer(worker, kind)
        reason = non_answer_block_reason(self.config, record, self.store.questions_given(worker))
        if reason is None or self.store.is_blocked(worker):
            return {}
        self.store.block(worker, reason, time.time())
        return {worker: reason}

    def _refund_non_answer_past_cap(self, task: StoredTask, assignment: Assignment) -> None:
        """Give the requester back a question it was charged for once the task had its share of non-answers."""
        if assignment.charged and self.store.non_answers_of_task(task.id) >= self.config.charged_non_answers_per_task:
            self.store.refund(task.account, to_microdollars(self.config.reward_per_answer))

    def _submit_gold(
        self, assignment: Assignment, worker: str, contains_target: bool | None, non_answer: str = "cant_tell"
    ) -> None:
        truth = self.store.gold_truth(assignment.image_url, assignment.label)
        blocked: dict[str, str] = {}
        decided = False
        with self.store.transaction():
            self.store.add_gold_answer(assignment.task_id, worker, contains_target, time.time())
            if contains_target is None or truth is None:
                votes: list[tuple[str, bool]] = []
                if assignment.gold_task_id is not None:
                    self.gold_tasks.unclaim(assignment.gold_task_id)
                if contains_target is None:
                    blocked = self._count_non_answer(worker, non_answer)
            elif assignment.gold_task_id is not None:
                votes = self._vote_on_gold_task(assignment.gold_task_id, worker, contains_target, truth)
                decided = bool(votes)
            else:
                votes = [(worker, contains_target)]
            if votes and truth is not None:
                models = self.store.worker_models({who for who, _ in votes})
                self.store.save_models(
                    {
                        who: (models.get(who) or WorkerModel()).learned(float(truth), yes, gold=True)
                        for who, yes in votes
                    }
                )
                blocked = self._judge([(who, float(truth), yes, True) for who, yes in votes])
        if votes and truth is not None:
            for _, yes in votes:
                self._crowd_gold = self._crowd_gold.learned(float(truth), yes, gold=True)
        self._announce_blocked(blocked)
        if decided:
            self._watch_calibration()

    def _vote_on_gold_task(self, gold_task_id: int, worker: str, says_yes: bool, truth: bool) -> list[tuple[str, bool]]:
        """Adjudicate a gold task after one more vote, as a task; once it ends, return its votes, which then teach
        their workers' models as gold answers (not before: a verdict must not be weighed with what its own answers
        taught). An empty list while it waits for more."""
        votes = self.gold_tasks.add_vote(gold_task_id, worker, says_yes)
        verdict = self._verdict(votes, self.store.worker_models({who for who, _ in votes}), ClassPrior())
        if verdict.needs_more_answers:
            self.gold_tasks.unclaim(gold_task_id)
            self._wake_workers()
            return []
        self.gold_tasks.finish(gold_task_id, verdict.contains_target, verdict.confidence, truth)
        return votes

    def _watch_calibration(self) -> None:
        """Warn, once each time it happens, when gold tasks show results right less often than the target."""
        calibration = self.gold_tasks.calibration()
        below = calibration.below_target(self.config.confidence)
        if below and not self._calibration_below:
            log.warning(calibration.warning(self.config.confidence))
        self._calibration_below = below

    def calibration_report(self) -> dict[str, object]:
        """Predicted against observed accuracy on gold tasks (the dashboard's calibration panel)."""
        return self.gold_tasks.calibration().report(self.config.confidence)

    def _retract_gold(self, assignment: Assignment, worker: str) -> bool:
        if self.store.is_blocked(worker):
            return False
        if assignment.gold_task_id is not None:  # nothing learned yet: the vote goes, while the gold task waits
            with self.store.transaction():
                if not self.gold_tasks.delete_vote(assignment.gold_task_id, worker):
                    return False
                self.store.delete_gold_answer(assignment.task_id, worker)
            return True
        truth = self.store.gold_truth(assignment.image_url, assignment.label)
        with self.store.transaction():
            answer = self.store.delete_gold_answer(assignment.task_id, worker)
            if answer is not None and truth is not None:
                model = self.store.worker_models([worker]).get(worker, WorkerModel())
                self.store.save_models({worker: model.learned(float(truth), answer, gold=True, weight=-1.0)})
                record = self.worker_records.get([worker]).get(worker, WorkerRecord())
                self.worker_records.save({worker: record.learned(float(truth), answer, gold=True, weight=-1.0)})
        if answer is not None and truth is not None:
            self._crowd_gold = self._crowd_gold.learned(float(truth), answer, gold=True, weight=-1.0)
        return True

    def _judge(self, answers: list[tuple[str, float, bool, bool]]) -> dict[str, str]:
        """Add answers (worker, probability the image contains the target, says yes, gold) to their workers'
        records and block those now below the bar (inside the caller's transaction); return who was blocked."""
        records = self.worker_records.get({worker for worker, *_ in answers})
        for worker, truth_yes, says_yes, gold in answers:
            records[worker] = records.get(worker, WorkerRecord()).learned(truth_yes, says_yes, gold=gold)
        self.worker_records.save(records)
        blocked = {}
        for worker, record in records.items():
            reason = block_reason(self.config, record)
            if reason is not None and not self.store.is_blocked(worker):
                self.store.block(worker, reason, time.time())
                blocked[worker] = reason
        return blocked

    def _announce_blocked(self, blocked: dict[str, str]) -> None:
        for worker, reason in blocked.items():
            log.warning("Blocked worker %s: %s", worker, reason)
            for listener in self.block_listeners:
                listener(worker, reason)

    async def wait_for_work(self, timeout: float) -> None:
        """Return when a task may need an answer, or after ``timeout`` seconds."""
        wake = asyncio.Event()
        self._idle_workers.add(wake)
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._idle_workers.discard(wake)

    def _wake_workers(self) -> None:
        for wake in self._idle_workers:
            wake.set()

    def expire_due(self) -> int:
        """Fail every task past its deadline (run periodically)."""
        return self.store.expire_due(time.time(), EXPIRED)

    # Input checks (the rules themselves live in validation.py)

    @staticmethod
    def _check_function(function: str) -> None:
        if function not in FUNCTIONS:
            raise CrowdError(
                404, "FunctionNotFound", f"Function {function!r} does not exist; use one of {sorted(FUNCTIONS)}."
            )

    @staticmethod
    def _check_name(name: str) -> None:
        try:
            validate_task_name(name)
        except InvalidTaskError as err:
            raise CrowdError(400, "InvalidInput", err.message) from None

    @staticmethod
    def _parse_input(function: str, body: bytes) -> object:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise CrowdError(400, "InvalidInput", f"The body is not valid JSON: {err}.") from None
        if not isinstance(document, dict) or set(document) != {"input"}:
            shown = sorted(document) if isinstance(document, dict) else type(document).__name__
            raise CrowdError(400, "InvalidInput", f'The body must be {{"input": {{...}}}}, got {shown}.')
        try:
            return validate_task_input(function, document["input"])
        except InvalidTaskError as err:
            raise CrowdError(400, "InvalidInput", err.message) from None

    def _existing(self, account: str, function: str, name: str) -> StoredTask:
        self._check_function(function)
        self._check_name(name)
        task = self.store.get(account, function, name)
        if task is None:
            raise CrowdError(404, "TaskNotFound", f"Task {name!r} of function {function!r} does not exist.")
        return task
