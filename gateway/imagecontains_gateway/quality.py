"""Quality control of the workforce: gold questions, probation of new workers and blocking (docs/adjudication.md).

Gold questions are images whose answers are known, mixed unannounced into every worker's questions: a
worker sees them exactly like a paid task. New workers are on probation (most of their first questions
are gold), so a spammer is found before it has answered many paid questions; a worker whose measured
accuracy stays below a threshold after enough gold gets no more questions.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TextIO
from urllib.parse import quote, urlsplit

from imagecontains_gateway.adjudication import WorkerModel
from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.store import NonAnswers, TaskStore

DEFAULT_DB = "imagecontains-server.db"
# Answers to finished tasks worth one gold answer when judging a worker: the task's verdict stands in for the truth.
TASK_ANSWERS_PER_GOLD = 3
# Broken-image reports of one worker believed per hour; past them, a report is taken as "can't tell".
BROKEN_REPORTS_PER_HOUR = 5
# A worker trusted to confirm a broken image: this many gold questions right, or answers to finished tasks learned.
TRUSTED_GOLD_RIGHT = 3
TRUSTED_TASK_ANSWERS = 10
# A worker's share of "can't tell" and broken-image answers is judged after this many questions at least.
NON_ANSWERS_JUDGED_AFTER = 10


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


def block_reason(config: ServerConfig, model: WorkerModel) -> str | None:
    """Why the worker must get no more questions, or None while it may keep answering.

    Judged after ``block_after_gold`` gold answers, or after ``TASK_ANSWERS_PER_GOLD`` times as many answers to
    finished tasks for a worker who gets no gold (a paid crowd's worker answers only the tasks posted there).
    """
    measured = model.gold_answers >= config.block_after_gold
    if not measured and model.task_answers < TASK_ANSWERS_PER_GOLD * config.block_after_gold:
        return None
    accuracy = model.balanced_accuracy(config.prior_worker_accuracy)
    if accuracy >= config.block_below_accuracy:
        return None
    return (
        f"Estimated accuracy {accuracy:.3f} is below {config.block_below_accuracy} after {model.gold_answers} "
        f"gold questions ({model.gold_right} right) and {model.task_answers:.0f} answers to finished tasks."
    )


def broken_report_weight(config: ServerConfig, model: WorkerModel | None, non_answers: NonAnswers) -> float:
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
    good = model.balanced_accuracy(config.prior_worker_accuracy) >= config.block_below_accuracy
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
