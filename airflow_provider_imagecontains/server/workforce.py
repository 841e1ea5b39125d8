"""The simulated workforce: workers that answer image-contains questions through the same
``next_assignment`` / ``submit_answer`` interface a human workforce will use."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from pathlib import Path
from urllib.parse import urlsplit

from airflow_provider_imagecontains.server.service import CrowdService

# How long an idle worker waits before looking again even when nobody signalled new work.
_IDLE_POLL_SECONDS = 0.2


class AnswerKey:
    """Which images truly contain which labels, read from ``{"images": {URL or file name: [labels]}}``.

    An image matches by its full URL, else by the last path segment of the URL; labels compare
    case-insensitively.

    :param images: image URL or file name -> labels it contains.
    """

    def __init__(self, images: dict[str, list[str]]) -> None:
        self._images = {image: {label.casefold() for label in labels} for image, labels in images.items()}

    @classmethod
    def load(cls, path: str | Path) -> AnswerKey:
        document = json.loads(Path(path).read_text())
        images = document.get("images") if isinstance(document, dict) else None
        if not isinstance(images, dict) or not all(isinstance(labels, list) for labels in images.values()):
            raise ValueError(f'Invalid answer key {str(path)!r}: expected {{"images": {{"<url or file>": [labels]}}}}.')
        return cls(images)

    def contains(self, image_url: str, label: str) -> bool | None:
        """The true answer, or None when the key does not know the image."""
        labels = self._images.get(image_url)
        if labels is None:
            labels = self._images.get(urlsplit(image_url).path.rsplit("/", 1)[-1])
        return None if labels is None else label.casefold() in labels


class SimulatedWorkforce:
    """``size`` workers of equal ``accuracy``, each taking ``delay`` seconds per answer.

    :param service: where the workers take questions from and give answers to.
    :param size: the number of workers.
    :param accuracy: the probability a worker answers correctly when the answer key knows the image.
    :param delay: seconds a worker spends on each answer.
    :param answer_key: the truth, or None to answer every question at random.
    :param seed: seed of the workers' random choices.
    """

    def __init__(
        self,
        service: CrowdService,
        *,
        size: int,
        accuracy: float,
        delay: float,
        answer_key: AnswerKey | None,
        seed: int | None,
    ) -> None:
        self._service = service
        self._size = size
        self._accuracy = accuracy
        self._delay = delay
        self._answer_key = answer_key
        self._seed = seed
        self._random = random.Random(seed)  # noqa: S311 -- simulation, not security
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(f"sim-worker-{n + 1}")) for n in range(self._size)]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def answer(self, image_url: str, label: str) -> bool:
        """What one simulated worker says about ``label`` in the image."""
        truth = self._answer_key.contains(image_url, label) if self._answer_key else None
        if truth is None:
            # An image the key does not know gets a random truth, fixed per (image, label) so that
            # workers still agree with each other and the adjudicator can complete the task.
            digest = hashlib.sha256(f"{self._seed}\0{image_url}\0{label.casefold()}".encode()).digest()
            truth = digest[0] % 2 == 1
        return truth if self._random.random() < self._accuracy else not truth

    async def _work(self, worker: str) -> None:
        while True:
            assignment = self._service.next_assignment(worker)
            if assignment is None:
                await self._service.wait_for_work(_IDLE_POLL_SECONDS)
                continue
            # Sleep even without a delay so one busy worker never starves the request handlers.
            await asyncio.sleep(self._delay)
            self._service.submit_answer(assignment, worker, self.answer(assignment.image_url, assignment.label))
