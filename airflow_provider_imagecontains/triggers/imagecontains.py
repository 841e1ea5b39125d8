"""Trigger that waits in the triggerer until every crowd task of a submission has finished."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_imagecontains.exceptions import CrowdApiError
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.triggers._tracking import TaskTracker, crowd_task_names

# All triggers of a triggerer share its event loop: together they keep at most one hook's worth of reads in
# flight (64 by default), or 50 mapped sensors would start 3,200 requests at once and starve the loop.
_loop_read_limits: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()


def _reads_in_flight(limit: int) -> asyncio.Semaphore:
    """The read limit shared by every trigger on the running event loop."""
    loop = asyncio.get_running_loop()
    if loop not in _loop_read_limits:
        _loop_read_limits[loop] = asyncio.Semaphore(limit)
    return _loop_read_limits[loop]


class _Cycle(NamedTuple):
    """What one poll cycle found: how many tasks newly finished, how many answers arrived, and the
    transient error that ended the cycle early, if any."""

    finished: int
    answers: int
    error: CrowdApiError | None


class ImageContainsTrigger(BaseTrigger):
    """
    Poll the unfinished tasks of one submission until all are completed or failed.

    One trigger watches all tasks (not one per image). Each cycle GETs only the tasks that have
    not finished yet through the hook's streamed reads and records each answer as it arrives, so
    the triggerer's event loop never blocks and memory does not grow with the number of tasks. All
    triggers on one event loop share one limit of reads in flight (the hook's ``max_concurrency``).
    The first wait is ``poll_interval``; each further one doubles (up to ``max_poll_interval``) while
    nothing finishes and after transient failures, and it resets once tasks finish. Progress counts are logged at most every
    ``log_interval`` seconds.

    A read that fails after the hook's own retries on throttling, server errors or dropped
    connections is transient: the cycle stops there, the answers that did arrive are kept, and
    the tasks not read yet are read next cycle (a warning says how far the cycle got). Only
    ``max_consecutive_poll_failures`` cycles in a row without a single answer end the wait with an
    error; any other error (access denied, unknown function, a body that is not a task document)
    ends it at once. A task that no longer exists counts as failed. The trigger yields a single
    event: ``{"status": "success", "outcomes": ..., "problems": ...}`` (see
    ``TaskTracker.to_event``) or ``{"status": "error", "message": ...}``. It keeps no state beyond
    its kwargs: after a triggerer restart it polls all tasks once more and carries on; nothing is
    resubmitted.

    :param task_names: the crowd task names to watch, in submission order.
    :param tasks_uri: instead of ``task_names``, where a stored submission handle's tasks are (see
        ``records_path`` on the operator): the trigger reads the names there, so its kwargs stay small.
    :param tasks_conn_id: the Airflow connection of ``tasks_uri``'s storage.
    :param function_name: the crowd function the tasks belong to.
    :param imagecontains_conn_id: the Airflow connection of the crowd API.
    :param hook_params: keyword arguments of the :class:`~airflow_provider_imagecontains.hooks.imagecontains.ImageContainsHook`
        the trigger polls with (``max_concurrency``, ``max_attempts``, ``timeout``, ...), as the operator's.
    :param poll_interval: seconds from the start of one poll to the next while tasks keep finishing.
    :param max_poll_interval: the longest wait between polls when nothing changes.
    :param log_interval: the shortest time in seconds between two progress log lines.
    :param max_consecutive_poll_failures: give up after this many poll cycles in a row in which no
        task could be read (each after the hook's retries, about 16 s). With the default intervals
        (60 s doubling to 600 s) 10 cycles ride out an outage of about 70 minutes; the sensor's
        ``timeout`` still bounds the whole wait.
    """

    def __init__(
        self,
        *,
        task_names: list[str] | None = None,
        tasks_uri: str | None = None,
        tasks_conn_id: str | None = None,
        function_name: str,
        imagecontains_conn_id: str,
        hook_params: dict[str, Any] | None = None,
        poll_interval: float = 60,
        max_poll_interval: float = 600,
        log_interval: float = 60,
        max_consecutive_poll_failures: int = 10,
    ) -> None:
        super().__init__()
        if max_consecutive_poll_failures < 1:
            raise ValueError(
                f"Invalid max_consecutive_poll_failures {max_consecutive_poll_failures!r}: expected at least 1."
            )
        if (task_names is None) == (tasks_uri is None):
            raise ValueError("Invalid trigger: give either task_names or tasks_uri.")
        self.task_names = task_names
        self.tasks_uri = tasks_uri
        self.tasks_conn_id = tasks_conn_id
        self.function_name = function_name
        self.imagecontains_conn_id = imagecontains_conn_id
        self.hook_params = hook_params or {}
        self.poll_interval = poll_interval
        self.max_poll_interval = max(max_poll_interval, poll_interval)
        self.log_interval = log_interval
        self.max_consecutive_poll_failures = max_consecutive_poll_failures

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__qualname__}",
            {
                "task_names": self.task_names,
                "tasks_uri": self.tasks_uri,
                "tasks_conn_id": self.tasks_conn_id,
                "function_name": self.function_name,
                "imagecontains_conn_id": self.imagecontains_conn_id,
                "hook_params": self.hook_params,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "log_interval": self.log_interval,
                "max_consecutive_poll_failures": self.max_consecutive_poll_failures,
            },
        )

    def hook(self) -> ImageContainsHook:
        """The hook of the operator or sensor that deferred: its connection and settings."""
        return ImageContainsHook(imagecontains_conn_id=self.imagecontains_conn_id, **self.hook_params)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self.hook()
        tracker = TaskTracker(self.task_names if self.task_names is not None else await self._stored_task_names())
        interval = self.poll_interval
        last_log = float("-inf")
        failed_cycles = 0
        try:
            # One aiohttp session for all cycles, shared with the other triggers on this event loop.
            async with hook.reusing_connections():
                while True:
                    cycle_started = time.monotonic()
                    cycle = await self._poll(hook, tracker)
                    if tracker.done or time.monotonic() - last_log >= self.log_interval:
                        self.log.info("Crowd tasks: %s", tracker.progress_message())
                        last_log = time.monotonic()
                    if tracker.done:
                        yield TriggerEvent(tracker.to_event())
                        return
                    if cycle.finished and cycle.error is None:
                        interval = self.poll_interval
                    # A cycle in which not one task could be read means the service is down or refusing us.
                    failed_cycles = failed_cycles + 1 if cycle.error is not None and not cycle.answers else 0
                    if cycle.error is not None:
                        if failed_cycles >= self.max_consecutive_poll_failures:
                            yield TriggerEvent({"status": "error", "message": self._outage_message(cycle.error)})
                            return
                        self._warn_transient(cycle, len(tracker.unfinished), interval, failed_cycles)
                    # Polls start every ``interval`` seconds: the time a cycle took counts towards the wait.
                    await asyncio.sleep(max(0.0, interval - (time.monotonic() - cycle_started)))
                    # The first wait is poll_interval; each one after doubles until a cycle sees tasks finish.
                    interval = min(interval * 2, self.max_poll_interval)
        except CrowdApiError as err:
            yield TriggerEvent({"status": "error", "message": f"{type(err).__name__}: {err.message}"})

    async def _stored_task_names(self) -> list[str]:
        """The crowd task names of the stored handle at ``tasks_uri``, read off the event loop."""
        from airflow_provider_imagecontains.storage import read_lines

        tasks = await asyncio.to_thread(read_lines, str(self.tasks_uri), self.tasks_conn_id)
        return crowd_task_names(tasks)

    async def _poll(self, hook: ImageContainsHook, tracker: TaskTracker) -> _Cycle:
        """GET the unfinished tasks once, recording each answer as it arrives."""
        finished_before = len(tracker.outcomes)
        answers = 0
        reads_in_flight = _reads_in_flight(hook.max_concurrency)
        async with aclosing(
            hook.aiter_tasks(self.function_name, tracker.unfinished, shared_limit=reads_in_flight)
        ) as reads:
            async for task_name, outcome in reads:
                error = tracker.record_read(task_name, outcome)
                if error is not None:
                    # The reads still to come would likely fail too: leave them to the next, slower cycle.
                    return _Cycle(len(tracker.outcomes) - finished_before, answers, error)
                answers += 1
        return _Cycle(len(tracker.outcomes) - finished_before, answers, None)

    def _warn_transient(self, cycle: _Cycle, unfinished: int, interval: float, failed_cycles: int) -> None:
        self.log.warning(
            "A crowd task read failed after retries (%s: %s) after %d answers this cycle; the %d unfinished "
            "tasks are read again in %.0fs (%d of at most %d cycles in a row without an answer).",
            type(cycle.error).__name__,
            cycle.error.message if cycle.error else "",
            cycle.answers,
            unfinished,
            interval,
            failed_cycles,
            self.max_consecutive_poll_failures,
        )

    def _outage_message(self, error: CrowdApiError) -> str:
        return (
            f"No crowd task could be read for {self.max_consecutive_poll_failures} poll cycles in a row "
            f"(max_consecutive_poll_failures); last error {type(error).__name__}: {error.message} "
            "The tasks are still on the service: retrying this Airflow task resumes the wait without resubmitting."
        )
