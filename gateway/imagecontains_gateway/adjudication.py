"""Sequential Bayesian adjudication of yes/no answers: two-coin worker models and hard images (docs/adjudication.md).

Each worker has two accuracies: on images that contain the target (how often it says "yes" then) and on
images that do not (how often it says "no" then), each a Beta posterior learned from gold questions (the
truth is known) and from finished tasks (the other workers' answers stand in for the truth). Its prior is what
gold shows of the crowd as a whole (``CrowdPrior``): all workers' gold answers pooled, per kind of image, shrunk
toward the configured prior accuracy while they are few. A worker who
says "yes" to everything is right on every "yes" image, wrong on every "no" image, and its "yes" carries no
evidence; a worker who clicks at random carries none either way.

Real crowds are not independent coins: on some images most workers are unsure or misled together, so agreement
is weaker proof than the two-coin model says, and a confidence computed from it alone overstates itself (real
crowds replayed in bench/bench_real_crowds.py: 0.97 reported, 0.70 to 0.93 right). So a task's answers are
explained either by the workers' models (an easy image, whose answer they see) or by a hard image, on which the
answers are coin flips unrelated to the truth; the share of hard images is learned from the finished tasks.
Answers are asked for one at a time; after each one the posterior of the leading answer, from even odds, is
compared with the required confidence, and at least two answers must agree: one answer never settles a task.

Learning from a finished task needs the share of images with the target (Dawid-Skene's class prior): when
nearly all images are empty, a task decided "yes" is often an empty image, and counting its answers as if it
surely contained the target would teach the models a drift that feeds itself. So each (account, function,
label) has a ``ClassPrior`` learned from the tasks it finished (with that share and the share of hard images),
and the truth a task teaches is weighed with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

# How many answers the prior accuracy is worth, per coin: a worker's own record outweighs it within a few
# answers of each kind, so a spammer stops counting after a handful of gold questions.
PRIOR_STRENGTH = 4.0
# How many gold answers of each kind the configured prior accuracy is worth in the crowd's prior: a server without
# gold keeps it; a few dozen gold answers of the crowd outweigh it.
CROWD_PRIOR_STRENGTH = 20.0
# No worker is taken for a perfect oracle.
_MAX_ACCURACY = 0.99
# One answer never settles a task: the leading answer needs this many votes.
MIN_AGREEING_ANSWERS = 2
# Beta prior of the share of hard images (hard, easy): 10 %, worth 20 finished tasks.
HARD_PRIOR = (2.0, 18.0)


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

    def accuracy_on_yes(self, prior: CrowdPrior) -> float:
        """Posterior mean of P(says yes | image contains the target)."""
        return _posterior_mean(self.yes_said_yes, self.yes_said_no, prior.on_yes, PRIOR_STRENGTH)

    def accuracy_on_no(self, prior: CrowdPrior) -> float:
        """Posterior mean of P(says no | image does not contain the target)."""
        return _posterior_mean(self.no_said_no, self.no_said_yes, prior.on_no, PRIOR_STRENGTH)

    def balanced_accuracy(self, prior: CrowdPrior) -> float:
        """The mean of the two accuracies: 0.5 for a random clicker and for a yes-sayer alike."""
        return (self.accuracy_on_yes(prior) + self.accuracy_on_no(prior)) / 2.0

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
class CrowdPrior:
    """The prior means of every worker's two accuracies: what is expected of a worker before its own record.

    :param on_yes: accuracy expected on images that contain the target.
    :param on_no: accuracy expected on images that do not.
    """

    on_yes: float
    on_no: float

    @classmethod
    def from_gold(cls, gold: WorkerModel, configured: float) -> CrowdPrior:
        """The crowd's accuracy on each kind of image from ``gold``, all workers' gold answers pooled as one record
        (empirical Bayes), shrunk toward ``configured`` with the weight of ``CROWD_PRIOR_STRENGTH`` answers: exactly
        ``configured`` without gold.

        Pooled answers, not a mean over workers: a task's answer comes from a worker as often as that worker answers,
        and gold is drawn from the same questions, so the pool is the crowd an answer comes from.
        """
        return cls(
            _posterior_mean(gold.yes_said_yes, gold.yes_said_no, configured, CROWD_PRIOR_STRENGTH),
            _posterior_mean(gold.no_said_no, gold.no_said_yes, configured, CROWD_PRIOR_STRENGTH),
        )


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


@dataclass(frozen=True)
class ClassPrior:
    """What the finished tasks of one (account, function, label) teach about its images: how often they contain the
    target (Dawid-Skene's class prior) and how often they are hard (the workers' answers on them are coin flips that
    say nothing of the truth). Each a Beta posterior, every finished task counted as its probability of each.

    :param yes: finished tasks that contain the target.
    :param no: finished tasks that do not.
    :param hard: finished tasks that are hard.
    :param easy: finished tasks that are not.
    """

    yes: float = 0.0
    no: float = 0.0
    hard: float = 0.0
    easy: float = 0.0

    @property
    def share_yes(self) -> float:
        return (self.yes + 1.0) / (self.yes + self.no + 2.0)

    @property
    def share_hard(self) -> float:
        return (self.hard + HARD_PRIOR[0]) / (self.hard + self.easy + sum(HARD_PRIOR))

    def learned(self, probability_yes: float, probability_hard: float) -> ClassPrior:
        return ClassPrior(
            self.yes + probability_yes,
            self.no + 1.0 - probability_yes,
            self.hard + probability_hard,
            self.easy + 1.0 - probability_hard,
        )


@dataclass(frozen=True)
class Posterior:
    """How one task's answers split between the three explanations the adjudicator knows (they sum to 1).

    :param easy_yes: the image contains the target and the workers answered as their models say.
    :param easy_no: it does not, and the workers answered as their models say.
    :param hard: the image is hard: the answers are coin flips, whatever the truth.
    :param share_yes: the prior probability of the target on a hard image (how ``hard`` splits between answers).
    """

    easy_yes: float
    easy_no: float
    hard: float
    share_yes: float

    @property
    def probability_yes(self) -> float:
        return self.easy_yes + self.hard * self.share_yes


def posterior(
    answers: Sequence[tuple[str, bool]],
    models: Mapping[str, WorkerModel],
    *,
    prior: CrowdPrior,
    share_yes: float,
    share_hard: float,
) -> Posterior:
    """The posterior of a task's answers under the two-coin models of its workers, or a hard image.

    On a hard image every answer is a fair coin's flip, whatever the worker and the truth: what a crowd does when it
    cannot see the answer (blurry, ambiguous, a trick). Such images are why agreement is weaker proof than the
    workers' models say: a few agreeing answers are explained nearly as well by a coin as by an easy image, until
    more of them agree than coins would.
    """
    log_easy_yes, log_easy_no = math.log(share_yes), math.log(1.0 - share_yes)
    for worker, says_yes in answers:
        on_yes, on_no = _accuracies(models.get(worker), prior)
        log_easy_yes += math.log(on_yes if says_yes else 1.0 - on_yes)
        log_easy_no += math.log(1.0 - on_no if says_yes else on_no)
    logs = (
        math.log(1.0 - share_hard) + log_easy_yes,
        math.log(1.0 - share_hard) + log_easy_no,
        math.log(share_hard) + len(answers) * math.log(0.5),
    )
    top = max(logs)
    weights = [math.exp(value - top) for value in logs]
    total = sum(weights)
    return Posterior(weights[0] / total, weights[1] / total, weights[2] / total, share_yes)


def adjudicate(
    answers: Sequence[tuple[str, bool]],
    models: Mapping[str, WorkerModel],
    *,
    confidence: float,
    max_answers: int,
    prior: CrowdPrior,
    class_prior: ClassPrior,
) -> Verdict:
    """Decide a task from its ``answers`` [(worker, contains_target), ...].

    :param answers: the answers in the order they arrived.
    :param models: each worker's model; a missing worker is new (the prior alone).
    :param confidence: the probability the leading answer must reach from even prior odds (e.g. 0.95).
    :param max_answers: the cap on answers for one task.
    :param prior: the accuracies expected, on each kind of image, of a worker without a record.
    :param class_prior: what the finished tasks of the same kind taught; only its share of hard images is used
        (the odds of the two answers stay even).
    """
    probability_yes = posterior(
        answers, models, prior=prior, share_yes=0.5, share_hard=class_prior.share_hard
    ).probability_yes
    leading = max(probability_yes, 1.0 - probability_yes)
    said_yes = sum(says_yes for _, says_yes in answers)
    agreeing = said_yes if probability_yes > 0.5 else len(answers) - said_yes
    if leading >= confidence and agreeing >= MIN_AGREEING_ANSWERS:
        return Verdict(probability_yes > 0.5, leading)
    return Verdict(None, leading, exhausted=len(answers) >= max_answers)


def learn_from_task(
    answers: Sequence[tuple[str, bool]],
    models: Mapping[str, WorkerModel],
    class_prior: ClassPrior,
    *,
    prior: CrowdPrior,
) -> tuple[dict[str, WorkerModel], ClassPrior]:
    """Each worker's model, and the class prior, after a finished task: one online step of Dawid-Skene's EM.

    The truth stands in as the posterior given all the answers and the class prior. Each answer counts on each
    side with the weight of the easy explanations only: a hard image says nothing of its workers. The task counts
    in the class prior's shares of images with the target and of hard images.
    """
    split = posterior(
        answers,
        models,
        prior=prior,
        share_yes=class_prior.share_yes,
        share_hard=class_prior.share_hard,
    )
    easy = split.easy_yes + split.easy_no
    learned = {
        worker: (models.get(worker) or WorkerModel()).learned(split.easy_yes / easy, says_yes, weight=easy)
        for worker, says_yes in answers
    }
    return learned, class_prior.learned(split.probability_yes, split.hard)


def _accuracies(model: WorkerModel | None, prior: CrowdPrior) -> tuple[float, float]:
    """The worker's two accuracies; a coin's (0.5, 0.5) when its record is no better than chance."""
    model = model or WorkerModel()
    on_yes, on_no = model.accuracy_on_yes(prior), model.accuracy_on_no(prior)
    return (on_yes, on_no) if on_yes + on_no > 1.0 else (0.5, 0.5)


def _posterior_mean(right: float, wrong: float, prior_accuracy: float, strength: float) -> float:
    mean = (right + strength * prior_accuracy) / (right + wrong + strength)
    return min(max(mean, 1.0 - _MAX_ACCURACY), _MAX_ACCURACY)
