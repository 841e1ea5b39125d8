"""Hook for the MTurk Crowd API: create, read and delete tasks one at a time, in bulk or from a trigger."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextlib import aclosing
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError

from airflow_provider_imagecontains.exceptions import (
    BulkTaskError,
    CrowdApiError,
    InvalidTaskError,
    TaskNotFoundError,
)
from airflow_provider_imagecontains.hooks.base_crowd import SIGNING_SERVICE_NAME, CrowdBaseHook
from airflow_provider_imagecontains.hooks.connection_form import hook_field_behaviour, hook_form_widgets
from airflow_provider_imagecontains.validation import (
    IMAGE_CONTAINS_TEST,
    validate_function_name,
    validate_task_input,
    validate_task_name,
)

# Seconds the connection test may take in all: the API server's request waits for it.
TEST_CONNECTION_TIMEOUT = 10.0
# How long a presigned image URL lives by default, and at most (as S3's presigned URLs).
DEFAULT_IMAGE_URL_SECONDS = 3600
MAX_IMAGE_URL_SECONDS = 7 * 24 * 3600


class ImageContainsHook(CrowdBaseHook):
    """
    Call the MTurk Crowd API (``image-contains`` and any other function on the same REST shape).

    Single calls go over one pooled keep-alive ``requests`` session. The bulk and async methods run on
    one asyncio core over ``aiohttp`` with at most ``max_concurrency`` requests in flight (the sync
    bulk methods drive it with ``asyncio.run``), which on a busy client is several times faster than
    a thread pool over ``requests``. Task names and inputs are validated before any request.

    The constructor's parameters (``imagecontains_conn_id``, ``max_concurrency``, ``max_attempts``,
    ``retry_base_delay``, ``max_retry_delay``, ``timeout``) are those of
    :class:`~airflow_provider_imagecontains.hooks.base_crowd.CrowdBaseHook`.
    """

    conn_type = "imagecontains"
    hook_name = "MTurk Crowd Image Contains"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's standard fields on Airflow 3.0 and 3.1 (later releases read provider info)."""
        return hook_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields on Airflow 3.0 and 3.1 (later releases read provider info)."""
        return hook_form_widgets()

    def test_connection(self) -> tuple[bool, str]:
        """Check credentials and endpoint by reading a task that cannot exist (a 404 proves access; nothing is created).

        The UI waits for the answer, so the probe makes one attempt per call and gives up after
        ``TEST_CONNECTION_TIMEOUT`` seconds in all (STS calls included), whatever the hook's own budget.
        """
        probe = type(self)(self.imagecontains_conn_id, max_attempts=1, timeout=TEST_CONNECTION_TIMEOUT)
        probe._connection = self._connection
        probe_name = f"airflow-connection-test-{uuid.uuid4().hex}"
        # In a thread, so that the deadline holds even while the network stalls; the thread ends on its own
        # within one timeout.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagecontains-test-connection")
        try:
            pool.submit(probe.get_task, IMAGE_CONTAINS_TEST, probe_name).result(timeout=TEST_CONNECTION_TIMEOUT)
        except TaskNotFoundError:
            return (
                True,
                f"Connection works: {probe.config.endpoint_url} accepted the credentials of account {probe.account_id}.",
            )
        except FutureTimeoutError:
            return False, (
                f"No answer within {TEST_CONNECTION_TIMEOUT:g} s: check endpoint_url, the STS endpoint, the network "
                "and proxies."
            )
        except (CrowdApiError, ValueError, BotoCoreError) as err:
            return False, f"{type(err).__name__}: {err}"
        finally:
            pool.shutdown(wait=False)
        return True, f"Connection works: {probe.config.endpoint_url} answered for account {probe.account_id}."

    # ---- single calls (requests) ----

    def put_task(self, function_name: str, task_name: str, input: dict[str, Any]) -> dict[str, Any]:
        """
        Create a task, or confirm it if the same name already has the same input (PUT is idempotent).

        :param function_name: the API function, e.g. ``image-contains`` or ``image-contains-test``.
        :param task_name: 1 to 64 characters from ``[A-Za-z0-9._-]``, unique per function and account.
        :param input: the function's input, e.g. ``{"image": {"url": ...}, "target": {"label": ...}}``.
        :return: the task document.
        """
        body = self._put_body(function_name, task_name, input)
        answer = self._send("PUT", function_name, task_name, body)
        return self._task_document(answer, "PUT", function_name, task_name)

    def get_task(self, function_name: str, task_name: str) -> dict[str, Any]:
        """
        Read a task.

        :param function_name: the API function the task was created with.
        :param task_name: the task's name.
        :return: the task document (``state`` is ``processing``, ``completed`` or ``failed``).
        """
        validate_function_name(function_name)
        validate_task_name(task_name)
        return self._task_document(self._send("GET", function_name, task_name), "GET", function_name, task_name)

    def delete_task(self, function_name: str, task_name: str) -> None:
        """
        Delete a finished task, which frees its name for reuse.

        :param function_name: the API function the task was created with.
        :param task_name: the task's name.
        """
        validate_function_name(function_name)
        validate_task_name(task_name)
        answer = self._send("DELETE", function_name, task_name)
        if not 200 <= answer.status < 300:
            raise self._error_for(answer, "DELETE", function_name, task_name)

    def cancel_tasks(
        self, function_name: str, task_names: Iterable[str] | None = None, *, name_prefix: str | None = None
    ) -> list[str]:
        """
        Cancel processing tasks: they end ``failed`` with problem ``Cancelled`` at once, and no worker is asked
        (or paid for) them any more. For a run that was killed or failed, e.g. from a DAG's
        ``on_failure_callback`` with the run's namespace as ``name_prefix``.

        Finished and unknown tasks are left as they are, so cancelling again is safe. (The API's DELETE still
        refuses a processing task: cancelling is an operation of its own.)

        :param function_name: the API function the tasks were created with.
        :param task_names: the tasks to cancel; or
        :param name_prefix: cancel every processing task whose name starts with it (not empty).
        :return: the names of the tasks this call cancelled.
        """
        validate_function_name(function_name)
        if (task_names is None) == (name_prefix is None):
            raise ValueError("Give either task_names or name_prefix.")
        body: dict[str, Any]
        if name_prefix is not None:
            validate_task_name(name_prefix)  # the start of a task name obeys the same rules
            body = {"namePrefix": name_prefix}
        else:
            body = {"taskNames": self._validate_names(function_name, task_names or [])}
        url = f"{self._task_url_prefix}{quote(function_name, safe='')}/cancellations"
        described = name_prefix + "*" if name_prefix is not None else "(list)"
        self._prepare()
        answer = self._send("POST", function_name, described, json.dumps(body).encode(), url=url)
        if not 200 <= answer.status < 300:
            raise self._error_for(answer, "POST", function_name, described)
        cancelled = json.loads(answer.body)["cancelled"]
        self.log.info("Cancelled %d processing %s tasks.", len(cancelled), function_name)
        return cancelled

    def presign_image_url(self, url: str, expires_in: int = DEFAULT_IMAGE_URL_SECONDS) -> str:
        """
        A URL through which the requester's own tools read an image the crowd server serves (``--images-dir``).

        Those images answer only signed-in workers and dashboards; a URL signed with this connection's
        credentials (SigV4 query parameters, made by botocore) reads the images of the connection's account
        until it expires. Any other URL (another host, S3, not under ``/images/``) is returned as it is.

        :param url: an image URL, e.g. ``http://127.0.0.1:8787/images/cam1/frame_0001.png``.
        :param expires_in: seconds the URL stays valid (at most 7 days).
        :return: the presigned URL, or ``url`` itself.
        """
        if not 1 <= expires_in <= MAX_IMAGE_URL_SECONDS:
            raise ValueError(f"Invalid expires_in {expires_in!r}: expected 1 to {MAX_IMAGE_URL_SECONDS} seconds.")
        parts, endpoint = urlsplit(url), urlsplit(self.config.endpoint_url)
        served = (parts.scheme, parts.netloc.lower()) == (endpoint.scheme, endpoint.netloc.lower())
        if not served or not parts.path.startswith("/images/") or parts.query:
            return url
        request = AWSRequest(method="GET", url=url)
        credentials = self.credentials.get_frozen_credentials()
        SigV4QueryAuth(credentials, SIGNING_SERVICE_NAME, self.config.region_name, expires=expires_in).add_auth(request)
        return str(request.url)

    # ---- bulk calls (the asyncio core, driven from a worker's thread) ----

    def put_tasks(self, function_name: str, inputs: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """
        Create many tasks concurrently (at most ``max_concurrency`` requests in flight).

        Every name and input is validated before the first request. Blocks until every call is done;
        inside an event loop use :meth:`aput_tasks`.

        :param function_name: the API function, e.g. ``image-contains``.
        :param inputs: ``{task_name: input}``.
        :return: ``{task_name: task document}``.
        :raises BulkTaskError: some tasks failed; it carries the successes and the error of each failure.
        """
        _refuse_running_loop("put_tasks", "aput_tasks")
        bodies = {name: self._put_body(function_name, name, task_input) for name, task_input in inputs.items()}
        self._prepare()
        return _bulk_result(asyncio.run(self._acall_all("PUT", function_name, bodies)))

    def get_tasks(self, function_name: str, task_names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """
        Read many tasks concurrently (at most ``max_concurrency`` requests in flight).

        Blocks until every call is done; inside an event loop use :meth:`aget_tasks`.

        :param function_name: the API function the tasks were created with.
        :param task_names: the tasks' names (repeated names are read once).
        :return: ``{task_name: task document}``.
        :raises BulkTaskError: some reads failed; it carries the successes and the error of each failure.
        """
        _refuse_running_loop("get_tasks", "aget_tasks")
        names = self._validate_names(function_name, task_names)
        self._prepare()
        return _bulk_result(asyncio.run(self._acall_all("GET", function_name, dict.fromkeys(names))))

    # ---- async calls (triggers) ----

    async def aput_tasks(self, function_name: str, inputs: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """
        Async :meth:`put_tasks`: every name and input is validated before the first request.

        :param function_name: the API function, e.g. ``image-contains``.
        :param inputs: ``{task_name: input}``.
        :return: ``{task_name: task document}``.
        :raises BulkTaskError: some tasks failed; it carries the successes and the error of each failure.
        """
        bodies = {name: self._put_body(function_name, name, task_input) for name, task_input in inputs.items()}
        await self._aprepare()
        return _bulk_result(await self._acall_all("PUT", function_name, bodies))

    async def aget_task(self, function_name: str, task_name: str) -> dict[str, Any]:
        """Async :meth:`get_task`; raises the call's own error."""
        return (await self.aget_tasks(function_name, [task_name]))[task_name]

    async def aget_tasks(self, function_name: str, task_names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """
        Async :meth:`get_tasks` for triggers: never blocks the event loop.

        :param function_name: the API function the tasks were created with.
        :param task_names: the tasks' names (repeated names are read once).
        :return: ``{task_name: task document}``.
        :raises BulkTaskError: some reads failed (a single read re-raises its own error instead).
        """
        names = self._validate_names(function_name, task_names)
        await self._aprepare()
        outcomes = await self._acall_all("GET", function_name, dict.fromkeys(names))
        if len(outcomes) == 1:
            (outcome,) = outcomes.values()
            if isinstance(outcome, CrowdApiError):
                raise outcome
        return _bulk_result(outcomes)

    async def aiter_tasks(
        self, function_name: str, task_names: Iterable[str], *, shared_limit: asyncio.Semaphore | None = None
    ) -> AsyncGenerator[tuple[str, dict[str, Any] | CrowdApiError], None]:
        """
        Read many tasks concurrently and yield each read as it arrives, for triggers watching many tasks.

        Memory stays bounded by ``max_concurrency`` however many tasks are read, and each document can be
        dropped once handled. Close the iterator early (``contextlib.aclosing``) to stop: the reads left
        are cancelled.

        :param function_name: the API function the tasks were created with.
        :param task_names: the tasks' names (repeated names are read once), validated before any request.
        :param shared_limit: a semaphore shared with other calls on the same event loop: each of this call's
            workers (at most ``max_concurrency``, one request in flight each) holds a place in it while it
            works, so many callers together (all the triggers of a triggerer) keep no more requests in flight
            than its size. Without one, only ``max_concurrency`` bounds this call.
        :return: an async iterator of ``(task_name, task document or the error that read ended with)``.
        """
        names = self._validate_names(function_name, task_names)
        await self._aprepare()
        async with aclosing(self._aiter_calls("GET", function_name, dict.fromkeys(names), shared_limit)) as reads:
            async for read in reads:
                yield read

    # ---- internals: validation ----

    def _put_body(self, function_name: str, task_name: str, task_input: Any) -> bytes:
        """Validate a PUT and encode its body once (retries resend the same bytes)."""
        validate_function_name(function_name)
        validate_task_name(task_name)
        validate_task_input(function_name, task_input)
        try:
            return json.dumps({"input": task_input}, allow_nan=False).encode()
        except (TypeError, ValueError) as err:
            raise InvalidTaskError(f"Invalid input of task {task_name!r}: it is not JSON ({err}).") from None

    def _validate_names(self, function_name: str, task_names: Iterable[str]) -> list[str]:
        validate_function_name(function_name)
        if isinstance(task_names, str):
            raise InvalidTaskError(f"Invalid task names {task_names!r}: give a list of names, not one string.")
        return [validate_task_name(name) for name in dict.fromkeys(task_names)]


def _bulk_result(outcomes: Mapping[str, dict[str, Any] | CrowdApiError]) -> dict[str, dict[str, Any]]:
    """The task documents if every call succeeded, else BulkTaskError keeping successes and failures."""
    results = {name: outcome for name, outcome in outcomes.items() if not isinstance(outcome, CrowdApiError)}
    errors = {name: outcome for name, outcome in outcomes.items() if isinstance(outcome, CrowdApiError)}
    if errors:
        raise BulkTaskError(results, errors)
    return results


def _refuse_running_loop(method_name: str, async_method_name: str) -> None:
    """The sync bulk methods run their own event loop, so they cannot be called from inside one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"ImageContainsHook.{method_name} blocks until every call is done and cannot run inside a running event "
        f"loop; use 'await hook.{async_method_name}(...)' there instead."
    )
