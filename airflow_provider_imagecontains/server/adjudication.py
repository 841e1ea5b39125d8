"""Sequential Bayesian adjudication of yes/no answers with a two-coin model of each worker (docs/adjudication.md).

Each worker has two accuracies: on images that contain the target (how often it says "yes" then) and on
images that do not (how often it says "no" then), each a Beta posterior learned from gold questions (the
truth is known) and from finished tasks (the other workers' answers stand in for the truth). A worker who
says "yes" to everything is right on every "yes" image, wrong on every "no" image, and its "yes" carries no
evidence; a worker who clicks at random carries none either way. Answers are asked for one at a time; after
each one the posterior probability of the leading answer is compared with the required confidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

# How many answers the prior accuracy is worth, per coin: a worker's own record outweighs it within a few
# answers of each kind, so a spammer stops counting after a handful of gold questions.
PRIOR_STRENGTH = 4.0
# No worker is taken for a perfect oracle: one answer never settles a task on its own.
_MAX_ACCURACY = 0.99


@dataclass(frozen=True)
class WorkerModel:
    """What is known of one worker: answers by (true answer, given answer), weighted by how sure the truth is.

    :param yes_said_yes: answers "yes" to images that contain the target.
    :param yes_said_no: answers "no" to images that contain the target.
    :param no_said_no: answers "no" to images that do not.
    :param no_said_yes: answers "yes" to images that do not.
    :param gold_right: gold questions answered right.
    :param gold_wrong: gold questions answered wrong.
    """

    yes_said_yes: float = 0.0
    yes_said_no: float = 0.0
    no_said_no: float = 0.0
    no_said_yes: float = 0.0
    gold_right: int = 0
    gold_wrong: int = 0

    def accuracy_on_yes(self, prior_accuracy: float) -> float:
        """Posterior mean of P(says yes | image contains the target)."""
        return _posterior_mean(self.yes_said_yes, self.yes_said_no, prior_accuracy)

    def accuracy_on_no(self, prior_accuracy: float) -> float:
        """Posterior mean of P(says no | image does not contain the target)."""
        return _posterior_mean(self.no_said_no, self.no_said_yes, prior_accuracy)

    def balanced_accuracy(self, prior_accuracy: float) -> float:
        """The mean of the two accuracies: 0.5 for a random clicker and for a yes-sayer alike."""
        return (self.accuracy_on_yes(prior_accuracy) + self.accuracy_on_no(prior_accuracy)) / 2.0

    @property
    def gold_answers(self) -> int:
        return self.gold_right + self.gold_wrong

    @property
    def task_answers(self) -> float:
        """Answers to finished tasks (not gold) the model has learned from."""
        return self.yes_said_yes + self.yes_said_no + self.no_said_no + self.no_said_yes - self.gold_answers

    def learned(self, truth_yes: float, says_yes: bool, *, gold: bool = False, weight: float = 1.0) -> WorkerModel:
        """The model after one more answer, given the probability ``truth_yes`` that the image contains the target.

        ``weight=-1`` takes back an answer learned before (a worker's undo).
        """
        right = (truth_yes >= 0.5) == says_yes
        truth_yes, truth_no = weight * truth_yes, weight * (1.0 - truth_yes)
        return WorkerModel(
            self.yes_said_yes + (truth_yes if says_yes else 0.0),
            self.yes_said_no + (0.0 if says_yes else truth_yes),
            self.no_said_no + (0.0 if says_yes else truth_no),
            self.no_said_yes + (truth_no if says_yes else 0.0),
            self.gold_right + round(weight) * int(gold and right),
            self.gold_wrong + round(weight) * int(gold and not right),
        )


# The model's fields, in order: the columns it is stored in.
MODEL_FIELDS = tuple(field.name for field in fields(WorkerModel))


@dataclass(frozen=True)
class Verdict:
    """The adjudicator's decision after the answers so far.

    :param contains_target: the adjudicated answer once confident, else None.
    :param confidence: posterior probability of the leading answer.
    :param exhausted: True when the answer cap is reached without confidence (the task fails).
    """

    contains_target: bool | None
    confidence: float
    exhausted: bool = False

    @property
    def needs_more_answers(self) -> bool:
        return self.contains_target is None and not self.exhausted


def evidence(model: WorkerModel | None, says_yes: bool, prior_accuracy: float) -> float:
    """The log-odds for "yes" that one answer adds: log P(answer | yes) / P(answer | no).

    An answer never counts against what it says: a worker whose record looks worse than chance weighs nothing.
    """
    model = model or WorkerModel()
    on_yes, on_no = model.accuracy_on_yes(prior_accuracy), model.accuracy_on_no(prior_accuracy)
    if says_yes:
        return max(math.log(on_yes / (1.0 - on_no)), 0.0)
    return min(math.log((1.0 - on_yes) / on_no), 0.0)


def adjudicate(
    answers: Sequence[tuple[str, bool]],
    models: Mapping[str, WorkerModel],
    *,
    confidence: float,
    max_answers: int,
    prior_accuracy: float,
) -> Verdict:
    """Decide a task from its ``answers`` [(worker, contains_target), ...].

    :param answers: the answers in the order they arrived.
    :param models: each worker's model; a missing worker is new (the prior alone).
    :param confidence: the posterior probability the leading answer must reach (e.g. 0.95).
    :param max_answers: the cap on answers for one task.
    :param prior_accuracy: the accuracy assumed, for each kind of image, of a worker without a record.
    """
    probability_yes = _probability_yes(sum(evidence(models.get(w), yes, prior_accuracy) for w, yes in answers))
    leading = max(probability_yes, 1.0 - probability_yes)
    if leading >= confidence:
        return Verdict(probability_yes > 0.5, leading)
    return Verdict(None, leading, exhausted=len(answers) >= max_answers)


def learn_from_task(
    answers: Sequence[tuple[str, bool]], models: Mapping[str, WorkerModel], *, prior_accuracy: float
) -> dict[str, WorkerModel]:
    """Each worker's model after a finished task: its answer counted against the task's posterior.

    One online step of Dawid-Skene's EM: the truth stands in as the probability all the answers give
    "yes", which is near 0 or 1 for a decided task.
    """
    probability_yes = _probability_yes(sum(evidence(models.get(w), yes, prior_accuracy) for w, yes in answers))
    return {
        worker: (models.get(worker) or WorkerModel()).learned(probability_yes, says_yes) for worker, says_yes in answers
    }


def _posterior_mean(right: float, wrong: float, prior_accuracy: float) -> float:
    mean = (right + PRIOR_STRENGTH * prior_accuracy) / (right + wrong + PRIOR_STRENGTH)
    return min(max(mean, 1.0 - _MAX_ACCURACY), _MAX_ACCURACY)


def _probability_yes(log_odds_yes: float) -> float:
    """Even prior odds: an image is as likely to contain the target as not."""
    return 1.0 / (1.0 + math.exp(-log_odds_yes))
