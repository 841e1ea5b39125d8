"""Quality control of the workforce: gold questions, probation of new workers and blocking (docs/adjudication.md).

Gold questions are images whose answers are known, mixed unannounced into every worker's questions: a
worker sees them exactly like a paid task. New workers are on probation (most of their first questions
are gold), so a spammer is found before it has answered many paid questions. A worker is blocked on evidence it
cannot hide (``WorkerRecord``): gold answers, and answers to tasks whose earlier answers alone were sure of the
truth; never on the adjudicator's verdicts that its own answer helped reach.

Gold questions also test the adjudicator: a share of them become gold tasks, answered by several workers one at
a time and decided by the same sequential rule as a requester's task, so that how often its confident verdicts
are right can be compared with the confidence it reports (``Calibration``).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TextIO
from urllib.parse import quote, urlsplit

from imagecontains_gateway.adjudication import CrowdPrior, WorkerModel, posterior
from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.store import NonAnswers, TaskStore

DEFAULT_DB = "imagecontains-server.db"
# Broken-image reports of one worker believed per hour; past them, a report is taken as "can't tell".
BROKEN_REPORTS_PER_HOUR = 5
# A worker trusted to confirm a broken image: this many gold questions right, or answers to finished tasks learned.
TRUSTED_GOLD_RIGHT = 3
TRUSTED_TASK_ANSWERS = 10
# A worker's share of "can't tell" and broken-image answers is judged after this many questions at least.
NON_ANSWERS_JUDGED_AFTER = 10
# An answer to a task is judged against the answers before it only when they alone are this sure of the truth.
PEER_CONFIDENCE = 0.9
# A worker is blocked once the one-sided 99 % upper bound of its balanced accuracy is below the bar.
BLOCK_Z = 2.326
# Observed accuracy is below the confidence target beyond chance when a one-sided exact binomial test at this
# level says so: at most a 1 % chance that a calibrated adjudicator would do as badly.
CALIBRATION_ALPHA = 0.01

_GOLD_TASK_SCHEMA = """
CREATE TABLE IF NOT EXISTS gold_tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gold_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    claimed_by TEXT,
    contains_target INTEGER,
    confidence REAL,
    right INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS gold_tasks_open ON gold_tasks (id) WHERE state = 'processing';
CREATE TABLE IF NOT EXISTS gold_task_answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gold_task_id INTEGER NOT NULL,
    worker TEXT NOT NULL,
    answer INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gold_task_answers_by_task ON gold_task_answers (gold_task_id);
"""


class AnswerKey:
    """Which images truly contain which labels, read from ``{"images": {URL or file name: [labels]}}``.

    An image matches by its full URL, else by the last path segment of the URL; labels compare
    case-insensitively.

    :param images: image URL or file name -> labels it contains.
    """

    def __init__(self, images: dict[str, list[str]]) -> None:
        self._images = {image: {label.casefold() for label in labels} for image, labels in images.items()}
        # Each label as the key first spells it: gold questions ask with the label's own text, as tasks do.
        self._spellings: dict[str, str] = {}
        for labels in images.values():
            for label in labels:
                self._spellings.setdefault(label.casefold(), label)

    @classmethod
    def load(cls, path: str | Path) -> AnswerKey:
        document = json.loads(Path(path).read_text())
        images = document.get("images") if isinstance(document, dict) else None
        if not isinstance(images, dict) or not all(isinstance(labels, list) for labels in images.values()):
            raise ValueError(f'Invalid answer key {str(path)!r}: expected {{"images": {{"<url or file>": [labels]}}}}.')
        return cls(images)

    @property
    def images(self) -> dict[str, set[str]]:
        """Image URL or file name -> the labels it contains (casefolded)."""
        return self._images

    @property
    def labels(self) -> list[str]:
        """Every label of the key once, as it is first spelled there."""
        return sorted(self._spellings.values())

    def contains(self, image_url: str, label: str) -> bool | None:
        """The true answer, or None when the key does not know the image."""
        labels = self._images.get(image_url)
        if labels is None:
            labels = self._images.get(urlsplit(image_url).path.rsplit("/", 1)[-1])
        return None if labels is None else label.casefold() in labels


class GoldQuestion(NamedTuple):
    """A question whose answer is known: does the image at ``image_url`` contain ``label``?"""

    image_url: str
    label: str
    contains_target: bool


def gold_due(config: ServerConfig, questions_answered: int, draw: float) -> bool:
    """Whether a worker's next question should be gold, given a uniform random ``draw`` in [0, 1)."""
    share = config.probation_gold_share if questions_answered < config.probation_questions else config.gold_share
    return draw < share


@dataclass(frozen=True)
class WorkerRecord:
    """What gold and the other workers show of one worker, per kind of image: answers right and wrong, each
    weighed by the probability of the truth it is judged against (1 for gold).

    :param yes_right: "yes" to images that contain the target.
    :param yes_wrong: "no" to images that contain the target.
    :param no_right: "no" to images that do not.
    :param no_wrong: "yes" to images that do not.
    :param gold: gold answers among them.
    """

    yes_right: float = 0.0
    yes_wrong: float = 0.0
    no_right: float = 0.0
    no_wrong: float = 0.0
    gold: int = 0

    def learned(self, truth_yes: float, says_yes: bool, *, gold: bool, weight: float = 1.0) -> WorkerRecord:
        """The record after one more answer judged against ``truth_yes`` (``weight=-1`` takes one back)."""
        on_yes, on_no = weight * truth_yes, weight * (1.0 - truth_yes)
        return WorkerRecord(
            self.yes_right + (on_yes if says_yes else 0.0),
            self.yes_wrong + (0.0 if says_yes else on_yes),
            self.no_right + (0.0 if says_yes else on_no),
            self.no_wrong + (on_no if says_yes else 0.0),
            self.gold + round(weight) * int(gold),
        )

    @property
    def answers(self) -> float:
        return self.yes_right + self.yes_wrong + self.no_right + self.no_wrong

    def balanced_accuracy(self) -> tuple[float, float]:
        """Mean and standard deviation of the balanced accuracy (the mean of the two accuracies), each accuracy a
        Beta(1, 1) posterior: a worker without a record is 0.5 +- 0.2, and nothing is assumed of it."""
        moments = [
            _beta_moments(right, wrong)
            for right, wrong in ((self.yes_right, self.yes_wrong), (self.no_right, self.no_wrong))
        ]
        mean = (moments[0][0] + moments[1][0]) / 2.0
        return mean, math.sqrt(moments[0][1] + moments[1][1]) / 2.0


def _beta_moments(right: float, wrong: float) -> tuple[float, float]:
    a, b = right + 1.0, wrong + 1.0
    return a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1.0))


def block_reason(config: ServerConfig, record: WorkerRecord) -> str | None:
    """Why the worker must get no more questions, or None while it may keep answering.

    Blocked once the one-sided 99 % upper bound of its balanced accuracy is below ``block_below_accuracy``: as
    soon as the evidence says so, whatever the number of answers (a worker wrong on every gold question goes
    within a few), and a good worker's record keeps the bound above the bar.
    """
    mean, deviation = record.balanced_accuracy()
    upper = mean + BLOCK_Z * deviation
    if upper >= config.block_below_accuracy:
        return None
    return (
        f"Estimated accuracy {mean:.3f} (at most {upper:.3f} at 99 %) is below {config.block_below_accuracy}, from "
        f"{record.gold} gold answers and {record.answers - record.gold:.1f} answers judged by other workers' answers."
    )


def peer_truths(
    answers: Sequence[tuple[str, bool]], models: Mapping[str, WorkerModel], prior: CrowdPrior, share_hard: float
) -> dict[str, float]:
    """For each answer of a finished task that came after answers already ``PEER_CONFIDENCE`` sure: the probability
    that the image contains the target from those earlier answers alone (the adjudicator's posterior at even prior
    odds, hard images included), to judge it by.

    Only earlier answers: whether a task asks for more answers after this one depends on what this one said (a
    dissent is always outvoted by the answers it brings, an agreement often ends the task), so judging it by the
    later ones too would count every dissent and few agreements. Its own answer never stands in for the truth.
    """
    truths = {}
    for position, (worker, _) in enumerate(answers):
        probability_yes = posterior(
            answers[:position], models, prior=prior, share_yes=0.5, share_hard=share_hard
        ).probability_yes
        if max(probability_yes, 1.0 - probability_yes) >= PEER_CONFIDENCE:
            truths[worker] = probability_yes
    return truths


class WorkerRecords:
    """Each worker's ``WorkerRecord``, in a table of its own in the server's SQLite file.

    :param connection: the server's database connection (``TaskStore.connection``).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS worker_records (worker TEXT PRIMARY KEY, yes_right REAL NOT NULL, "
            "yes_wrong REAL NOT NULL, no_right REAL NOT NULL, no_wrong REAL NOT NULL, gold INTEGER NOT NULL)"
        )

    def get(self, workers: Iterable[str]) -> dict[str, WorkerRecord]:
        workers = list(workers)
        rows = self._db.execute(
            "SELECT worker, yes_right, yes_wrong, no_right, no_wrong, gold FROM worker_records "  # noqa: S608
            f"WHERE worker IN ({','.join('?' * len(workers))})",
            workers,
        )
        return {row[0]: WorkerRecord(*row[1:]) for row in rows}

    def save(self, records: Mapping[str, WorkerRecord]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO worker_records (worker, yes_right, yes_wrong, no_right, no_wrong, gold) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(worker, r.yes_right, r.yes_wrong, r.no_right, r.no_wrong, r.gold) for worker, r in records.items()],
        )


def binomial_at_most(successes: int, trials: int, probability: float) -> float:
    """P(X <= ``successes``) for X ~ Binomial(``trials``, ``probability``), summed exactly in log space."""
    log_p, log_q = math.log(probability), math.log1p(-probability)
    total = 0.0
    for k in range(successes + 1):
        log_term = (
            math.lgamma(trials + 1)
            - math.lgamma(k + 1)
            - math.lgamma(trials - k + 1)
            + k * log_p
            + (trials - k) * log_q
        )
        total += math.exp(log_term)
    return min(total, 1.0)


@dataclass(frozen=True)
class Calibration:
    """How the adjudicator did on gold tasks: its verdicts against the known answers.

    :param completed: gold tasks it completed (a verdict with the confidence target reached).
    :param right: of those, how many verdicts were the known answer.
    :param confidence_sum: the sum of the confidences it reported on them.
    :param inconclusive: gold tasks that reached the answer cap without a verdict.
    :param waiting: gold tasks still waiting for answers.
    """

    completed: int = 0
    right: int = 0
    confidence_sum: float = 0.0
    inconclusive: int = 0
    waiting: int = 0

    @property
    def predicted(self) -> float | None:
        """The mean reported confidence: the share of verdicts the adjudicator expects to be right."""
        return self.confidence_sum / self.completed if self.completed else None

    @property
    def observed(self) -> float | None:
        """The share of verdicts that were right."""
        return self.right / self.completed if self.completed else None

    def p_value(self, target: float) -> float:
        """How likely a result this bad or worse is if each verdict were right with probability ``target``."""
        return binomial_at_most(self.right, self.completed, target) if self.completed else 1.0

    def below_target(self, target: float) -> bool:
        """Whether observed accuracy is below ``target`` by more than chance (the binomial test)."""
        return self.p_value(target) < CALIBRATION_ALPHA

    def report(self, target: float) -> dict[str, object]:
        """The dashboard's figures."""
        return {
            "completed": self.completed,
            "right": self.right,
            "predicted": None if self.predicted is None else round(self.predicted, 4),
            "observed": None if self.observed is None else round(self.observed, 4),
            "inconclusive": self.inconclusive,
            "waiting": self.waiting,
            "target": target,
            "p_value": round(self.p_value(target), 6),
            "alpha": CALIBRATION_ALPHA,
            "below_target": self.below_target(target),
        }

    def warning(self, target: float) -> str:
        return (
            f"Calibration: {self.right} of {self.completed} gold tasks decided right ({self.observed:.3f}, mean "
            f"reported confidence {self.predicted:.3f}), below the confidence target {target} beyond chance "
            f"(one-sided exact binomial test, p = {self.p_value(target):.2g} < {CALIBRATION_ALPHA}): results claim "
            "more confidence than the answers support; see docs/adjudication.md."
        )


def crowd_gold_record(connection: sqlite3.Connection) -> WorkerModel:
    """Every gold answer that taught its worker's model, all workers pooled as one record: what gold shows of the
    crowd as a whole (``CrowdPrior.from_gold``). A gold task's votes teach once it is decided (never while it waits,
    nor when it was dropped undecided), so they count from then on too."""
    rows = connection.execute(
        "SELECT q.contains_target, a.answer, COUNT(*) FROM gold_answers a JOIN gold_questions q ON q.id = a.gold_id "
        "WHERE a.answer >= 0 AND NOT EXISTS (SELECT 1 FROM gold_task_answers v JOIN gold_tasks t "
        "ON t.id = v.gold_task_id WHERE t.gold_id = a.gold_id AND v.worker = a.worker AND t.confidence IS NULL) "
        "GROUP BY q.contains_target, a.answer"
    )
    counts = {(bool(truth), bool(answer)): count for truth, answer, count in rows}
    return WorkerModel(
        yes_said_yes=counts.get((True, True), 0),
        yes_said_no=counts.get((True, False), 0),
        no_said_no=counts.get((False, False), 0),
        no_said_yes=counts.get((False, True), 0),
        gold_right=counts.get((True, True), 0) + counts.get((False, False), 0),
        gold_wrong=counts.get((True, False), 0) + counts.get((False, True), 0),
    )


class GoldTasks:
    """Gold tasks, in tables of their own in the server's SQLite file (see the module docstring).

    A gold task is one gold question asked of several workers, each a gold question to them (unannounced, never
    billed, not asked again): one worker at a time, like a task, until the adjudicator decides or gives up.

    :param connection: the server's database connection (``TaskStore.connection``).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._db.executescript(_GOLD_TASK_SCHEMA)

    def claim(self, worker: str, gold_id: int, now: float, deadline_seconds: float) -> tuple[int, int]:
        """(gold task id, gold question id) for ``worker``: the oldest waiting gold task nobody holds on a gold
        question it has not answered, else a new one on ``gold_id``.

        A gold task waiting longer than ``deadline_seconds`` (like a task's deadline) is dropped, not counted.
        """
        self._db.execute(
            "UPDATE gold_tasks SET state = 'failed', claimed_by = NULL WHERE state = 'processing' AND created_at <= ?",
            (now - deadline_seconds,),
        )
        row = self._db.execute(
            "SELECT t.id, t.gold_id FROM gold_tasks t WHERE t.state = 'processing' AND t.claimed_by IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM gold_answers a WHERE a.gold_id = t.gold_id AND a.worker = ?) "
            "ORDER BY t.id LIMIT 1",
            (worker,),
        ).fetchone()
        if row is not None:
            self._db.execute("UPDATE gold_tasks SET claimed_by = ? WHERE id = ?", (worker, row[0]))
            return row[0], row[1]
        cursor = self._db.execute(
            "INSERT INTO gold_tasks (gold_id, state, claimed_by, created_at) VALUES (?, 'processing', ?, ?)",
            (gold_id, worker, now),
        )
        return cursor.lastrowid or 0, gold_id

    def waiting_gold(self) -> list[int]:
        """The gold questions of the gold tasks waiting for answers (a worker's plain gold leaves them alone)."""
        return [row[0] for row in self._db.execute("SELECT gold_id FROM gold_tasks WHERE state = 'processing'")]

    def unclaim(self, gold_task_id: int) -> None:
        self._db.execute("UPDATE gold_tasks SET claimed_by = NULL WHERE id = ?", (gold_task_id,))

    def is_open(self, gold_task_id: int) -> bool:
        row = self._db.execute("SELECT state FROM gold_tasks WHERE id = ?", (gold_task_id,)).fetchone()
        return row is not None and row[0] == "processing"

    def add_vote(self, gold_task_id: int, worker: str, says_yes: bool) -> list[tuple[str, bool]]:
        """Record a vote; return the task's votes in the order given."""
        self._db.execute(
            "INSERT INTO gold_task_answers (gold_task_id, worker, answer) VALUES (?, ?, ?)",
            (gold_task_id, worker, int(says_yes)),
        )
        rows = self._db.execute(
            "SELECT worker, answer FROM gold_task_answers WHERE gold_task_id = ? ORDER BY id", (gold_task_id,)
        )
        return [(who, bool(answer)) for who, answer in rows]

    def delete_vote(self, gold_task_id: int, worker: str) -> bool:
        """Take back ``worker``'s vote while the gold task waits; False once it was decided."""
        if not self.is_open(gold_task_id):
            return False
        self._db.execute("DELETE FROM gold_task_answers WHERE gold_task_id = ? AND worker = ?", (gold_task_id, worker))
        return True

    def finish(self, gold_task_id: int, contains_target: bool | None, confidence: float, truth: bool) -> None:
        """Record the adjudicator's verdict (None: the cap was reached without one) against the known answer."""
        self._db.execute(
            "UPDATE gold_tasks SET state = ?, claimed_by = NULL, contains_target = ?, confidence = ?, right = ? "
            "WHERE id = ?",
            (
                "failed" if contains_target is None else "completed",
                None if contains_target is None else int(contains_target),
                confidence,
                None if contains_target is None else int(contains_target == truth),
                gold_task_id,
            ),
        )

    def calibration(self) -> Calibration:
        completed, right, confidence_sum = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(right), 0), COALESCE(SUM(confidence), 0) FROM gold_tasks "
            "WHERE state = 'completed'"
        ).fetchone()
        inconclusive = self._db.execute(
            "SELECT COUNT(*) FROM gold_tasks WHERE state = 'failed' AND confidence IS NOT NULL"
        ).fetchone()[0]
        waiting = self._db.execute("SELECT COUNT(*) FROM gold_tasks WHERE state = 'processing'").fetchone()[0]
        return Calibration(completed, right, confidence_sum, inconclusive, waiting)


def broken_report_weight(
    config: ServerConfig, prior: CrowdPrior, model: WorkerModel | None, non_answers: NonAnswers
) -> float:
    """How much a worker's broken-image report counts toward failing a task ``ImageUnavailable`` (issue 24).

    Nothing from a worker who reported a gold image broken (gold images are known to load); a whole report from a
    worker whose record is known and good (``TRUSTED_GOLD_RIGHT`` gold questions right, or
    ``TRUSTED_TASK_ANSWERS`` answers to finished tasks, and an accuracy not under ``block_below_accuracy``); half
    a report from anyone else, so that a few new accounts cannot fail tasks at will.
    """
    if non_answers.broken_gold:
        return 0.0
    if model is None:
        return 0.5
    known = model.gold_right >= TRUSTED_GOLD_RIGHT or model.task_answers >= TRUSTED_TASK_ANSWERS
    good = model.balanced_accuracy(prior) >= config.block_below_accuracy
    return 1.0 if known and good else 0.5


def non_answer_block_reason(config: ServerConfig, non_answers: NonAnswers, questions: int) -> str | None:
    """Why a worker who answers "can't tell" or reports broken images too often must get no more questions, or
    None (judged after ``NON_ANSWERS_JUDGED_AFTER`` questions, or the probation's, whichever is more)."""
    if questions < max(config.probation_questions, NON_ANSWERS_JUDGED_AFTER):
        return None
    if non_answers.total <= config.max_non_answer_share * questions:
        return None
    return (
        f'Answered "can\'t tell" or reported a broken image to {non_answers.total} of {questions} questions '
        f"(more than {config.max_non_answer_share:.0%})."
    )


def gold_from_answer_key(key: AnswerKey) -> list[GoldQuestion]:
    """Every (image, label) question an answer key settles: each image against every label the key names.

    The key lists the labels each image contains, so an image does not contain the key's other labels. Labels keep
    the key's spelling, as a requester's tasks keep theirs: a gold question must look exactly like a task.
    """
    return [
        GoldQuestion(_image_url(image), label, label.casefold() in image_labels)
        for image, image_labels in sorted(key.images.items())
        for label in key.labels
    ]


def _image_url(image: str) -> str:
    """A key's full URL as it is; a file name as the server's own ``/images/<name>`` (from ``--images-dir``)."""
    return image if urlsplit(image).scheme in ("http", "https") else "/images/" + quote(image)


def gold_main(argv: Sequence[str]) -> None:
    """``imagecontains-server gold add FILE [--db DB]``: load gold questions from an answer key."""
    parser = argparse.ArgumentParser(
        prog="imagecontains-server gold",
        description='Load gold questions from an answer key {"images": {"<url or file>": [labels]}}: each image '
        "against every label of the key (an image contains the labels listed for it, and no other).",
    )
    parser.add_argument("action", choices=["add"])
    parser.add_argument("file", help="the answer key (JSON)")
    parser.add_argument("--db", default=DEFAULT_DB, help="the server's SQLite file")
    args = parser.parse_args(argv)
    try:
        questions = gold_from_answer_key(AnswerKey.load(args.file))
    except (OSError, ValueError) as err:
        raise SystemExit(f"imagecontains-server gold: {err}") from None
    if not any(question.contains_target for question in questions) or all(q.contains_target for q in questions):
        raise SystemExit(
            "imagecontains-server gold: the key must give both answers (images with and without a label), "
            "or gold cannot catch a worker who always says the same."
        )
    store = TaskStore(args.db)
    try:
        added = store.add_gold(questions)
    finally:
        store.close()
    print(f"{added} gold questions added ({len(questions) - added} already known).")


def export_answers_main(argv: Sequence[str]) -> None:
    """``imagecontains-server export-answers [--db DB] [--output FILE]``: every answer as JSON Lines."""
    parser = argparse.ArgumentParser(
        prog="imagecontains-server export-answers",
        description="Write every yes/no answer as JSON Lines: task_name, worker, contains_target, gold, answered_at "
        "(the input of crowd-kit and similar aggregation libraries).",
    )
    parser.add_argument("--db", default=DEFAULT_DB, help="the server's SQLite file")
    parser.add_argument("--output", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    store = TaskStore(args.db)
    try:
        output = _private_output(args.output) if args.output else sys.stdout
        try:
            for answer in store.export_answers():
                output.write(json.dumps(answer) + "\n")
        finally:
            if output is not sys.stdout:
                output.close()
    finally:
        store.close()


def _private_output(path: str) -> TextIO:
    """``path`` opened for writing, readable by its owner only; never through a symlink (another user's link
    could point the answers, workers' names included, at a file of its choosing)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as err:
        reason = "it is a symbolic link" if err.errno == errno.ELOOP else err.strerror
        raise SystemExit(f"imagecontains-server export-answers: cannot write {path!r}: {reason}.") from None
    os.fchmod(descriptor, 0o600)  # a file that existed keeps no wider mode
    return os.fdopen(descriptor, "w")
