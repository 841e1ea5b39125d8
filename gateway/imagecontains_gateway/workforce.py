"""The simulated workforce: workers that answer image-contains questions through the same
``next_assignment`` / ``submit_answer`` interface a human workforce will use."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Sequence

from imagecontains_gateway.config import CrowdClass
from imagecontains_gateway.quality import AnswerKey
from imagecontains_gateway.service import CrowdService

# How long an idle worker waits before looking again even when nobody signalled new work.
_IDLE_POLL_SECONDS = 0.2


class SimulatedWorkforce:
    """Simulated workers of the given classes (``<class>-<n>``), each taking ``delay`` seconds per answer.

    :param service: where the workers take questions from and give answers to.
    :param crowd: the classes of workers: how many of each, how accurate, leaning which way.
    :param delay: seconds a worker spends on each answer.
    :param after: seconds a task must have been open before a simulated worker takes it (people answering
        next to them get first go at every task).
    :param answer_key: the truth, or None to answer every question at random.
    :param seed: seed of the workers' random choices.
    """

    def __init__(
        self,
        service: CrowdService,
        *,
        crowd: Sequence[CrowdClass],
        delay: float,
        answer_key: AnswerKey | None,
        seed: int | None,
        after: float = 0.0,
    ) -> None:
        self._service = service
        self._crowd = {f"{c.name}-{n + 1}": c for c in crowd for n in range(c.count)}
        self._delay = delay
        self._after = after
        self._answer_key = answer_key
        self._seed = seed
        self._random = random.Random(seed)  # noqa: S311 -- simulation, not security
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(worker)) for worker in self._crowd]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def answer(self, worker: str, image_url: str, label: str) -> bool:
        """What simulated ``worker`` says about ``label`` in the image."""
        truth = self._answer_key.contains(image_url, label) if self._answer_key else None
        if truth is None:
            # The simulation knows the world: the gold questions' answers too (the worker is not told which
            # questions are gold; it answers every question the same way).
            truth = self._service.store.gold_truth(image_url, label)
        if truth is None:
            # An image the key does not know gets a random truth, fixed per (image, label) so that
            # workers still agree with each other and the adjudicator can complete the task.
            digest = hashlib.sha256(f"{self._seed}\0{image_url}\0{label.casefold()}".encode()).digest()
            truth = digest[0] % 2 == 1
        return self._crowd[worker].says_yes(truth, self._random.random())

    async def _work(self, worker: str) -> None:
        while True:
            created_before = time.time() - self._after if self._after else None
            assignment = self._service.next_assignment(worker, created_before=created_before)
            if assignment is None:
                await self._service.wait_for_work(_IDLE_POLL_SECONDS)
                continue
            # Sleep even without a delay so one busy worker never starves the request handlers.
            await asyncio.sleep(self._delay)
            self._service.submit_answer(assignment, worker, self.answer(worker, assignment.image_url, assignment.label))
