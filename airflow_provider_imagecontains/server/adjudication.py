"""Sequential Bayesian adjudication of yes/no worker answers (explained in docs/adjudication.md).

Each worker's accuracy is estimated from how often it agreed with earlier adjudicated results,
starting from a prior belief. Answers are asked for one at a time; after each one the posterior
probability of the leading answer is compared with the required confidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# How many earlier answers the prior accuracy is worth: a worker's own record outweighs it after ~10 tasks.
PRIOR_STRENGTH = 10.0


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


def estimated_accuracy(record: tuple[int, int] | None, prior_accuracy: float) -> float:
    """A cautious estimate of a worker's accuracy from ``record`` = (agreed, disagreed) under a Beta prior.

    The Beta posterior mean minus half a standard deviation: agreement with adjudicated results flatters
    workers (tasks stop when answers agree), and a cautious weight keeps the confidence honest.
    Half a deviation still lets three agreeing new workers (~0.74 each) complete a task at 0.95.
    """
    agreed, disagreed = record or (0, 0)
    alpha = agreed + PRIOR_STRENGTH * prior_accuracy
    beta = disagreed + PRIOR_STRENGTH * (1.0 - prior_accuracy)
    mean = alpha / (alpha + beta)
    estimate = mean - 0.5 * math.sqrt(mean * (1.0 - mean) / (alpha + beta + 1.0))
    # A worker is never trusted as a perfect oracle nor read as a systematic liar.
    return min(max(estimate, 0.51), 0.99)


def adjudicate(
    answers: Sequence[tuple[str, bool]],
    records: Mapping[str, tuple[int, int]],
    *,
    confidence: float,
    max_answers: int,
    prior_accuracy: float,
) -> Verdict:
    """Decide a task from its ``answers`` [(worker, contains_target), ...].

    :param answers: the answers in the order they arrived.
    :param records: (agreed, disagreed) of each worker with earlier results; missing = new worker.
    :param confidence: the posterior probability the leading answer must reach (e.g. 0.95).
    :param max_answers: the cap on answers for one task.
    :param prior_accuracy: the accuracy assumed for a worker without a record.
    """
    log_odds_yes = sum(_evidence(records, prior_accuracy, worker, says_yes) for worker, says_yes in answers)
    probability_yes = 1.0 / (1.0 + math.exp(-log_odds_yes))
    leading = max(probability_yes, 1.0 - probability_yes)
    if leading >= confidence:
        return Verdict(probability_yes > 0.5, leading)
    return Verdict(None, leading, exhausted=len(answers) >= max_answers)


def agreements(
    answers: Sequence[tuple[str, bool]], records: Mapping[str, tuple[int, int]], *, prior_accuracy: float
) -> list[tuple[str, bool]]:
    """Whether each worker agreed with what the *other* answers of the task say (ties left out).

    Judging a worker against a verdict its own answer helped reach would flatter every worker; leaving
    its answer out keeps the accuracy estimates honest.
    """
    evidence = [_evidence(records, prior_accuracy, worker, says_yes) for worker, says_yes in answers]
    total = sum(evidence)
    outcomes = []
    for (worker, says_yes), own in zip(answers, evidence, strict=True):
        others = total - own
        if others != 0:
            outcomes.append((worker, (others > 0) == says_yes))
    return outcomes


def _evidence(records: Mapping[str, tuple[int, int]], prior_accuracy: float, worker: str, says_yes: bool) -> float:
    """The log-odds for "yes" that one answer adds (even prior: an image is as likely to contain the target as not)."""
    accuracy = estimated_accuracy(records.get(worker), prior_accuracy)
    weight = math.log(accuracy / (1.0 - accuracy))
    return weight if says_yes else -weight
