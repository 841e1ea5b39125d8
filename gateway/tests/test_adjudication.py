"""The adjudicator's learning from finished tasks, driven as the server drives it: one answer at a time, then
``learn_from_task`` on every finished task."""

from __future__ import annotations

import random

from imagecontains_gateway.adjudication import HARD_PRIOR, ClassPrior, WorkerModel, adjudicate, learn_from_task
from imagecontains_gateway.config import ServerConfig

TASKS = 400


def test_a_crowd_without_hard_images_is_not_read_as_one_with_many():
    """30 workers right 70 % of the time on every image, none hard, the server's defaults (confidence 0.95, at most
    11 answers). Answers alone barely tell hard images from workers poorer than their models say: the share of hard
    images learned from the tasks rose to about 0.3 within 100 tasks (the models, starting at 0.8, read the split
    votes as coin flips) and kept 70 % of the tasks Inconclusive. It may fall below its prior, never rise above it."""
    config = ServerConfig()
    rng = random.Random(3)
    models: dict[str, WorkerModel] = {}
    class_prior = ClassPrior()
    completed = 0
    for _ in range(TASKS):
        truth = rng.random() < 0.5
        pending = [(f"w{w}", truth if rng.random() < 0.7 else not truth) for w in rng.sample(range(30), 11)]
        for used in range(1, len(pending) + 1):
            verdict = adjudicate(
                pending[:used],
                models,
                confidence=config.confidence,
                max_answers=config.max_answers_per_task,
                prior_accuracy=config.prior_worker_accuracy,
                class_prior=class_prior,
            )
            if not verdict.needs_more_answers:
                break
        completed += verdict.contains_target is not None
        learned, class_prior = learn_from_task(
            pending[:used], models, class_prior, prior_accuracy=config.prior_worker_accuracy
        )
        models.update(learned)
    assert class_prior.share_hard <= HARD_PRIOR[0] / sum(HARD_PRIOR)
    assert completed / TASKS > 0.5
