"""Trigger that waits in the triggerer until every crowd task of a submission has finished."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_imagecontains.exceptions import CrowdApiError
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.triggers._tracking import PollResult, TaskTracker


class ImageContainsTrigger(BaseTrigger):
    """
    Poll the unfinished tasks of one submission until all are completed or failed.

    One trigger watches all tasks (not one per image). Each cycle GETs only the tasks that have
    not finished yet, in batches through the hook's async client, so the triggerer's event loop
    never blocks. The interval doubles (up to ``max_poll_interval``) while nothing finishes and
    after transient failures, and resets once tasks finish. Progress counts are logged at most every
    ``log_interval`` seconds.

    Reads that fail after the hook's own retries on throttling, server errors or dropped
    connections are transient: their tasks are read again next cycle (a warning gives the counts)
    and the answers that did arrive are kept. Only ``max_consecutive_poll_failures`` cycles in a
    row without a single answer end the wait with an error; any other error (access denied,
    unknown function, a body that is not a task document) ends it at once. A task that no longer
    exists counts as failed. The trigger yields a single event: ``{"status": "success",
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
    :param max_consecutive_poll_failures: give up after this many poll cycles in a row in which no
        task could be read (each after the hook's retries, about 16 s). With the default intervals
        (60 s doubling to 600 s) 10 cycles ride out an outage of about 75 minutes; the sensor's
        ``timeout`` still bounds the whole wait.
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
        max_consecutive_poll_failures: int = 10,
    ) -> None:
        super().__init__()
        if max_consecutive_poll_failures < 1:
            raise ValueError(
                f"Invalid max_consecutive_poll_failures {max_consecutive_poll_failures!r}: expected at least 1."
            )
        self.task_names = task_names
        self.function_name = function_name
        self.imagecontains_conn_id = imagecontains_conn_id
        self.poll_interval = poll_interval
        self.max_poll_interval = max(max_poll_interval, poll_interval)
        self.log_interval = log_interval
        self.batch_size = batch_size
        self.max_consecutive_poll_failures = max_consecutive_poll_failures

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
                "max_consecutive_poll_failures": self.max_consecutive_poll_failures,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ImageContainsHook(imagecontains_conn_id=self.imagecontains_conn_id)
        tracker = TaskTracker(self.task_names)
        interval = self.poll_interval
        last_log = float("-inf")
        failed_cycles = 0
        try:
            while True:
                cycle_started = time.monotonic()
                found, polled = await self._poll(hook, tracker)
                if tracker.done or time.monotonic() - last_log >= self.log_interval:
                    self.log.info("Crowd tasks: %s", tracker.progress_message())
                    last_log = time.monotonic()
                if tracker.done:
                    yield TriggerEvent(tracker.to_event())
                    return
                if found.finished and not found.transient_errors:
                    interval = self.poll_interval
                else:
                    interval = min(interval * 2, self.max_poll_interval)
                # A cycle in which not one task could be read means the service is down or refusing us.
                failed_cycles = failed_cycles + 1 if len(found.transient_errors) == polled else 0
                if failed_cycles >= self.max_consecutive_poll_failures:
                    yield TriggerEvent({"status": "error", "message": self._outage_message(found.transient_errors)})
                    return
                if found.transient_errors:
                    self._warn_transient(found.transient_errors, polled, interval, failed_cycles)
                # Polls start every ``interval`` seconds: the time a cycle took counts towards the wait.
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - cycle_started)))
        except CrowdApiError as err:
            yield TriggerEvent({"status": "error", "message": f"{type(err).__name__}: {err.message}"})

    async def _poll(self, hook: ImageContainsHook, tracker: TaskTracker) -> tuple[PollResult, int]:
        """GET every unfinished task once; return what was found and how many tasks were polled."""
        unfinished = tracker.unfinished
        finished, transient_errors, polled = 0, {}, 0
        for start in range(0, len(unfinished), self.batch_size):
            batch = unfinished[start : start + self.batch_size]
            found = await tracker.apoll(partial(hook.aget_tasks, self.function_name), batch)
            finished += found.finished
            transient_errors.update(found.transient_errors)
            polled += len(batch)
            if found.transient_errors:
                # Later batches would likely fail too; leave them for the next, slower cycle.
                break
        return PollResult(finished, transient_errors), polled

    def _warn_transient(
        self, transient_errors: dict[str, CrowdApiError], polled: int, interval: float, failed_cycles: int
    ) -> None:
        kinds = Counter(type(error).__name__ for error in transient_errors.values())
        self.log.warning(
            "%d of %d crowd task reads failed after retries (%s); reading them again in %.0fs "
            "(%d of at most %d cycles in a row without an answer).",
            len(transient_errors),
            polled,
            ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())),
            interval,
            failed_cycles,
            self.max_consecutive_poll_failures,
        )

    def _outage_message(self, transient_errors: dict[str, CrowdApiError]) -> str:
        last_error = next(iter(transient_errors.values()))
        return (
            f"No crowd task could be read for {self.max_consecutive_poll_failures} poll cycles in a row "
            f"(max_consecutive_poll_failures); last error {type(last_error).__name__}: {last_error.message} "
            "The tasks are still on the service: retrying this Airflow task resumes the wait without resubmitting."
        )
