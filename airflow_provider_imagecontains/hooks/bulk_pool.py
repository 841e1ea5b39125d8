"""The bulk pool: one call per task name from at most ``max_concurrency`` asyncio workers, outcomes as they arrive.

:class:`~airflow_provider_imagecontains.hooks.base_crowd.CrowdBaseHook` gives it the call (signed, retried, its
answer checked); the sync bulk methods drive it with ``asyncio.run`` from the worker's thread, the triggers on
the triggerer's loop. Nothing here makes a request of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from airflow_provider_imagecontains.exceptions import CrowdApiError

# One worker's call: the task document of a task name, or a CrowdApiError raised as that task's outcome.
Call = Callable[[str], Awaitable[dict[str, Any]]]


async def iter_outcomes(
    names: Sequence[str],
    new_call: Callable[[], Call],
    *,
    max_concurrency: int,
    shared_limit: asyncio.Semaphore | None = None,
) -> AsyncGenerator[tuple[str, dict[str, Any] | CrowdApiError], None]:
    """Call once per name from at most ``max_concurrency`` workers, each holding a place in ``shared_limit`` if
    given; yield each ``(name, document or CrowdApiError)`` as it arrives. Any other exception is raised.
    Closing the generator early cancels the calls left.

    :param new_call: makes one worker's call; each worker makes its own once, so it can keep state from call to
        call (the hook's retrying object).
    """
    next_name = 0  # shared by the workers: each name is taken once
    held = 0  # places in shared_limit taken for workers and not given back yet
    arrived: asyncio.Queue[tuple[str, dict[str, Any] | Exception]] = asyncio.Queue()

    async def worker() -> None:
        nonlocal next_name, held
        try:
            call = new_call()
            while next_name < len(names):
                name = names[next_name]
                next_name += 1
                outcome: dict[str, Any] | Exception
                try:
                    outcome = await call(name)
                except Exception as err:  # a crowd error is this task's outcome; any other is raised below
                    outcome = err
                arrived.put_nowait((name, outcome))
        finally:
            if shared_limit is not None:
                held -= 1
                shared_limit.release()

    workers: list[asyncio.Task[None]] = []

    async def start_workers() -> None:
        # With a shared limit, a worker is started only once it has its place, so the callers waiting
        # for places (all the triggers of a triggerer) keep one waiting task each, not one per worker:
        # thousands of waiting workers made each poll cycle's start stall the loop.
        nonlocal held
        for _ in range(min(max_concurrency, len(names))):
            if shared_limit is not None:
                await shared_limit.acquire()
                held += 1
                if next_name >= len(names):  # the workers running took every name meanwhile
                    held -= 1
                    shared_limit.release()
                    return
            workers.append(asyncio.create_task(worker()))

    starter = asyncio.create_task(start_workers())
    try:
        for _ in range(len(names)):
            name, outcome = await arrived.get()
            if isinstance(outcome, Exception) and not isinstance(outcome, CrowdApiError):
                raise outcome
            yield name, outcome
    finally:
        # Cancel everything before the first await, so that no worker sends another request meanwhile.
        starter.cancel()
        for running in workers:
            running.cancel()
        await asyncio.gather(starter, *workers, return_exceptions=True)
        if shared_limit is not None:  # workers cancelled before they ran never gave their place back
            for _ in range(held):
                shared_limit.release()
            held = 0
