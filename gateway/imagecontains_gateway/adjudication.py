"""Sequential Bayesian adjudication of yes/no answers with a two-coin model of each worker (docs/adjudication.md).

Each worker has two accuracies: on images that contain the target (how often it says "yes" then) and on
images that do not (how often it says "no" then), each a Beta posterior learned from gold questions (the
truth is known) and from finished tasks (the other workers' answers stand in for the truth). A worker who
says "yes" to everything is right on every "yes" image, wrong on every "no" image, and its "yes" carries no
evidence; a worker who clicks at random carries none either way. Answers are asked for one at a time; after
each one the likelihood ratio of the two answers, as a probability from even odds, is compared with the
required confidence: a test of the answers alone (Wald's sequential test), so the error rate on each kind of
image stays near ``1 - confidence`` whatever share of a requester's images contain the target.

Learning from a finished task does need that share (Dawid-Skene's class prior). When nearly all images are
empty, a task decided "yes" is often an empty image; counting its answers as if it surely contained the
target teaches the models that workers miss the target and rarely see it where it is not, which weakens
every "no" and strengthens every "yes": a drift that feeds itself. So each (account, function, label) has a
``ClassPrior`` learned from the tasks it finished, and the truth a task teaches is weighed with it.
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
    :param confidence: probability of the leading answer from the answers alone (even prior odds).
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


@dataclass(frozen=True)
class ClassPrior:
    """How often the images of one (account, function, label) contain the target: a Beta(1, 1) posterior from
    its finished tasks, each counted as the probability that it contains the target.

    :param yes: finished tasks that contain the target.
    :param no: finished tasks that do not.
    """

    yes: float = 0.0
    no: float = 0.0

    @property
    def share_yes(self) -> float:
        return (self.yes + 1.0) / (self.yes + self.no + 2.0)

    def learned(self, probability_yes: float) -> ClassPrior:
        return ClassPrior(self.yes + probability_yes, self.no + 1.0 - probability_yes)


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
    :param confidence: the probability the leading answer must reach from even prior odds (e.g. 0.95).
    :param max_answers: the cap on answers for one task.
    :param prior_accuracy: the accuracy assumed, for each kind of image, of a worker without a record.
    """
    probability_yes = _probability_yes(sum(evidence(models.get(w), yes, prior_accuracy) for w, yes in answers))
    leading = max(probability_yes, 1.0 - probability_yes)
    if leading >= confidence:
        return Verdict(probability_yes > 0.5, leading)
    return Verdict(None, leading, exhausted=len(answers) >= max_answers)


def learn_from_task(
    answers: Sequence[tuple[str, bool]],
    models: Mapping[str, WorkerModel],
    class_prior: ClassPrior,
    *,
    prior_accuracy: float,
) -> tuple[dict[str, WorkerModel], ClassPrior]:
    """Each worker's model, and the class prior, after a finished task: one online step of Dawid-Skene's EM.

    The truth stands in as the probability that the image contains the target given all the answers and the
    class prior; each answer counts on each side with that weight, and the task counts in the class prior.
    """
    share = class_prior.share_yes
    log_odds = math.log(share / (1.0 - share)) + sum(evidence(models.get(w), yes, prior_accuracy) for w, yes in answers)
    probability_yes = _probability_yes(log_odds)
    learned = {
        worker: (models.get(worker) or WorkerModel()).learned(probability_yes, says_yes) for worker, says_yes in answers
    }
    return learned, class_prior.learned(probability_yes)


def _posterior_mean(right: float, wrong: float, prior_accuracy: float) -> float:
    mean = (right + PRIOR_STRENGTH * prior_accuracy) / (right + wrong + PRIOR_STRENGTH)
    return min(max(mean, 1.0 - _MAX_ACCURACY), _MAX_ACCURACY)


def _probability_yes(log_odds_yes: float) -> float:
    return 1.0 / (1.0 + math.exp(-log_odds_yes))
