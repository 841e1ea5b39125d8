"""Trigger that waits in the triggerer until every crowd task of a submission has finished."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_imagecontains.exceptions import CrowdApiError
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.triggers._tracking import TaskTracker


class ImageContainsTrigger(BaseTrigger):
    """
    Poll the unfinished tasks of one submission until all are completed or failed.

    One trigger watches all tasks (not one per image). Each cycle GETs only the tasks that have
    not finished yet, in batches through the hook's async client, so the triggerer's event loop
    never blocks. The interval doubles (up to ``max_poll_interval``) while nothing finishes and
    after throttling, and resets once tasks finish. Progress counts are logged at most every
    ``log_interval`` seconds. The trigger yields a single event: ``{"status": "success",
    "outcomes": ..., "problems": ...}`` (see ``TaskTracker.to_event``) or ``{"status": "error",
    "message": ...}``. It keeps no state beyond its kwargs: after a triggerer restart it polls
    all tasks once more and carries on; nothing is resubmitted.

    :param task_names: the crowd task names to watch, in submission order.
    :param function_name: the crowd function the tasks belong to.
    :param imagecontains_conn_id: the Airflow connection of the crowd API.
    :param poll_interval: seconds from the start of one poll to the next while tasks keep finishing.
    :param max_poll_interval: the longest wait between polls when nothing changes.
    :param log_interval: the shortest time in seconds between two progress log lines.
    :param batch_size: how many GETs one batch hands to the hook (bounds memory and in-flight work;
        the hook bounds concurrency within a batch).
    """

    def __init__(
        self,
        *,
        task_names: list[str],
        function_name: str,
        imagecontains_conn_id: str,
        poll_interval: float = 60,
        max_poll_interval: float = 600,
        log_interval: float = 60,
        batch_size: int = 1000,
    ) -> None:
        super().__init__()
        self.task_names = task_names
        self.function_name = function_name
        self.imagecontains_conn_id = imagecontains_conn_id
        self.poll_interval = poll_interval
        self.max_poll_interval = max(max_poll_interval, poll_interval)
        self.log_interval = log_interval
        self.batch_size = batch_size

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__qualname__}",
            {
                "task_names": self.task_names,
                "function_name": self.function_name,
                "imagecontains_conn_id": self.imagecontains_conn_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "log_interval": self.log_interval,
                "batch_size": self.batch_size,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ImageContainsHook(imagecontains_conn_id=self.imagecontains_conn_id)
        tracker = TaskTracker(self.task_names)
        interval = self.poll_interval
        last_log = float("-inf")
        try:
            while True:
                cycle_started = time.monotonic()
                finished, throttled = await self._poll(hook, tracker)
                if tracker.done or time.monotonic() - last_log >= self.log_interval:
                    self.log.info("Crowd tasks: %s", tracker.progress_message())
                    last_log = time.monotonic()
                if tracker.done:
                    yield TriggerEvent(tracker.to_event())
                    return
                if throttled:
                    self.log.info("The crowd API is throttling; polling less often.")
                if finished and not throttled:
                    interval = self.poll_interval
                else:
                    interval = min(interval * 2, self.max_poll_interval)
                # Polls start every ``interval`` seconds: the time a cycle took counts towards the wait.
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - cycle_started)))
        except CrowdApiError as err:
            yield TriggerEvent({"status": "error", "message": f"{type(err).__name__}: {err.message}"})

    async def _poll(self, hook: ImageContainsHook, tracker: TaskTracker) -> tuple[int, bool]:
        """GET every unfinished task once; return (newly finished, whether throttled)."""
        unfinished = tracker.unfinished
        finished, throttled = 0, False
        for start in range(0, len(unfinished), self.batch_size):
            batch_finished, throttled = await tracker.apoll(
                partial(hook.aget_tasks, self.function_name), unfinished[start : start + self.batch_size]
            )
            finished += batch_finished
            if throttled:
                # Later batches would be throttled too; leave them for the next, slower cycle.
                break
        return finished, throttled
