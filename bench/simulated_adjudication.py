"""The server's adjudication run in-process for the benchmarks that simulate a crowd."""

from __future__ import annotations

from imagecontains_gateway.adjudication import (
    ClassPrior,
    CrowdPrior,
    Verdict,
    WorkerModel,
    adjudicate,
    learn_from_task,
)
from imagecontains_gateway.config import ServerConfig


class SequentialAdjudicator:
    """Reads a task's answers one at a time until the adjudicator decides or gives up, then lets each worker's
    model and the class prior learn from the finished task, as the server does.

    :param config: the server settings used: ``confidence``, ``max_answers_per_task``, ``prior_worker_accuracy``.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.models: dict[str, WorkerModel] = {}
        self.class_prior = ClassPrior()
        # No gold: every worker starts from the configured prior accuracy, as on a server without gold.
        self.prior = CrowdPrior.from_gold(WorkerModel(), config.prior_worker_accuracy)

    def decide(self, answers: list[tuple[str, bool]]) -> tuple[Verdict, int]:
        """The verdict on ``answers`` (``(worker, says_yes)`` in the order they arrive) and how many it read."""
        for used in range(1, len(answers) + 1):
            verdict = adjudicate(
                answers[:used],
                self.models,
                confidence=self.config.confidence,
                max_answers=self.config.max_answers_per_task,
                prior=self.prior,
                class_prior=self.class_prior,
            )
            if not verdict.needs_more_answers:
                break
        if not verdict.needs_more_answers:
            learned, self.class_prior = learn_from_task(answers[:used], self.models, self.class_prior, prior=self.prior)
            self.models.update(learned)
        return verdict, used
