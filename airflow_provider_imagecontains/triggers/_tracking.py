"""Progress of a set of crowd tasks, shared by the trigger (async), the sensor's poke and the
operator's synchronous wait, so every waiting mode reaches the same results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from airflow_provider_imagecontains.exceptions import (
    BulkTaskError,
    CrowdApiError,
    ServiceError,
    TaskNotFoundError,
    ThrottledError,
)

# One character per task keeps the trigger event small (10,000 tasks -> 10 kB):
# "Y" completed and contains the target, "N" completed without it, "F" failed.
CONTAINS, NOT_CONTAINS, FAILED = "Y", "N", "F"
UNFINISHED = "."
_POLL_ERRORS = (BulkTaskError, TaskNotFoundError, ThrottledError, ServiceError)


def is_transient(error: CrowdApiError) -> bool:
    """Whether ``error`` may go away by itself: throttling, a server error or a dropped connection that
    outlived the hook's retries. A success status with a body that is not a task document is not."""
    if isinstance(error, ThrottledError):
        return True
    return isinstance(error, ServiceError) and (error.status_code is None or error.status_code >= 500)


class PollResult(NamedTuple):
    """What one poll of a batch of tasks found.

    :param finished: how many tasks newly finished.
    :param transient_errors: ``{task_name: error}`` of the reads that failed transiently (see
        :func:`is_transient`); those tasks are simply polled again.
    """

    finished: int
    transient_errors: dict[str, CrowdApiError]


class TaskTracker:
    """Finished outcomes of ``task_names``; only the unfinished ones need polling.

    :param task_names: the crowd task names to watch, in submission order.
    """

    def __init__(self, task_names: Iterable[str]) -> None:
        self.task_names = list(task_names)
        self.outcomes: dict[str, str] = {}
        self.problems: dict[str, dict[str, Any]] = {}
        # (confidence, answers) of completed tasks whose result gave them (the local server's does).
        self.consolidation: dict[str, tuple[float | None, int | None]] = {}

    @property
    def unfinished(self) -> list[str]:
        return [name for name in self.task_names if name not in self.outcomes]

    @property
    def done(self) -> bool:
        return len(self.outcomes) == len(self.task_names)

    def counts(self) -> dict[str, int]:
        failed = len(self.problems)
        completed = len(self.outcomes) - failed
        return {"completed": completed, "failed": failed, "processing": len(self.task_names) - completed - failed}

    def progress_message(self) -> str:
        counts = self.counts()
        total = len(self.task_names)
        percent = 100.0 * (counts["completed"] + counts["failed"]) / total if total else 100.0
        return (
            f"{counts['completed']} completed, {counts['failed']} failed, {counts['processing']} processing "
            f"of {total} tasks ({percent:.1f}% finished)"
        )

    def record(self, docs: Mapping[str, dict[str, Any]]) -> int:
        """Store the outcome of every finished document; return how many tasks newly finished."""
        before = len(self.outcomes)
        for name, doc in docs.items():
            self._record_document(name, doc)
        return len(self.outcomes) - before

    def record_read(self, name: str, outcome: dict[str, Any] | CrowdApiError) -> CrowdApiError | None:
        """Record one read of task ``name``: its document, or the error the read ended with.

        A task that vanished counts as failed. A transient error (see :func:`is_transient`) is returned
        and leaves the task to the next poll; any other error is raised, since reading again would not fix it.
        """
        if not isinstance(outcome, CrowdApiError):
            self._record_document(name, outcome)
        elif isinstance(outcome, TaskNotFoundError):
            self.outcomes[name] = FAILED
            self.problems[name] = {"code": "TaskNotFound", "message": "The task was deleted while waiting."}
        elif is_transient(outcome):
            return outcome
        else:
            raise outcome
        return None

    def poll(self, get_tasks: Callable[[list[str]], dict[str, dict[str, Any]]], task_names: list[str]) -> PollResult:
        """GET ``task_names`` (a batch of the unfinished tasks) once and record what finished; the answers
        that arrived are kept when some reads fail."""
        reads: Mapping[str, dict[str, Any] | CrowdApiError]
        try:
            reads = get_tasks(task_names)
        except _POLL_ERRORS as err:
            # A one-task read raises its own error rather than a BulkTaskError.
            reads = {**err.results, **err.errors} if isinstance(err, BulkTaskError) else dict.fromkeys(task_names, err)
        before = len(self.outcomes)
        transient_errors = {}
        for name, outcome in reads.items():
            if (error := self.record_read(name, outcome)) is not None:
                transient_errors[name] = error
        return PollResult(len(self.outcomes) - before, transient_errors)

    def _record_document(self, name: str, doc: dict[str, Any]) -> None:
        state = doc.get("state")
        if state == "completed":
            contains = (doc.get("result") or {}).get("containsTarget")
            # A result that is not a JSON boolean must not become a "yes" or a "no".
            if not isinstance(contains, bool):
                raise ServiceError(
                    f"Task {name!r} completed with result {str(doc.get('result'))[:120]!r}; "
                    "expected {'containsTarget': true or false}. The endpoint may not be the crowd API."
                )
            self.outcomes[name] = CONTAINS if contains else NOT_CONTAINS
            consolidation = _consolidation(doc["result"])
            if consolidation != (None, None):
                self.consolidation[name] = consolidation
        elif state == "failed":
            self.outcomes[name] = FAILED
            self.problems[name] = doc.get("problemDetails") or {"code": "Failed", "message": "No details given."}

    def to_event(self) -> dict[str, Any]:
        """The compact success payload: outcomes in task order plus problems of failed tasks, and where
        results carried them, each task's ``confidence`` and ``answers`` in task order (None where absent)."""
        event: dict[str, Any] = {
            "status": "success",
            "outcomes": "".join(self.outcomes.get(name, UNFINISHED) for name in self.task_names),
            "problems": self.problems,
        }
        if self.consolidation:
            details = [self.consolidation.get(name, (None, None)) for name in self.task_names]
            event["confidence"] = [confidence for confidence, _ in details]
            event["answers"] = [answers for _, answers in details]
        return event


def build_records(tasks: list[dict[str, Any]], event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Join the submission's tasks with a success event into the result records pushed to XCom.

    :param tasks: the submission handle's ``tasks`` (``task_name``, ``url``, ``label``), in order; with a
        pre-screen also ``model_score``, and ``model_contains_target`` where the model answered. An entry
        whose ``task_name`` is ``None`` was settled by the model and has no crowd task.
    :param event: a payload made by :meth:`TaskTracker.to_event` for the crowd tasks among ``tasks``.
    """
    problems = event["problems"]
    outcomes = iter(event["outcomes"])
    # Absent from events of results without them (e.g. the hosted service's) and of older triggers.
    confidences = iter(event.get("confidence") or [None] * len(event["outcomes"]))
    answer_counts = iter(event.get("answers") or [None] * len(event["outcomes"]))
    crowd_tasks = sum(1 for task in tasks if task["task_name"] is not None)
    if crowd_tasks != len(event["outcomes"]):
        raise ValueError(f"The event has {len(event['outcomes'])} outcomes for {crowd_tasks} crowd tasks.")
    records = []
    for task in tasks:
        model_answer = task.get("model_contains_target")
        confidence = answers = None
        if task["task_name"] is None:
            state, contains, source = "completed", model_answer, "model"
        else:
            outcome, confidence, answers = next(outcomes), next(confidences), next(answer_counts)
            state = "failed" if outcome == FAILED else "completed"
            contains, source = None if outcome == FAILED else outcome == CONTAINS, "crowd"
        records.append(
            {
                "url": task["url"],
                "label": task["label"],
                "task_name": task["task_name"],
                "state": state,
                "contains_target": contains,
                "confidence": confidence,
                "answers": answers,
                "problem": problems.get(task["task_name"]) if task["task_name"] is not None else None,
                "source": source,
                "model_score": task.get("model_score"),
                "model_contains_target": model_answer,
            }
        )
    return records


def _consolidation(result: dict[str, Any]) -> tuple[float | None, int | None]:
    """The result's ``confidence`` (a probability) and ``answers`` (votes used), each None when absent or malformed."""
    confidence, answers = result.get("confidence"), result.get("answers")
    if not (isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and 0 <= confidence <= 1):
        confidence = None
    if not (isinstance(answers, int) and not isinstance(answers, bool) and answers >= 0):
        answers = None
    return (None if confidence is None else float(confidence), answers)


def crowd_task_names(tasks: list[dict[str, Any]]) -> list[str]:
    """The names of the crowd tasks in a submission handle's ``tasks`` (model-settled images have none)."""
    return [task["task_name"] for task in tasks if task["task_name"] is not None]
