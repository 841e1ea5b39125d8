"""The crowd API's transport, shared by every hook method: signing, one retry policy, a sync and an async client.

As the Amazon provider keeps ``base_aws.py`` apart from its service hooks, :class:`CrowdBaseHook` holds what
any call to the crowd API needs (connection, credentials, sessions, signing, retries) and
``hooks/imagecontains.py`` the public methods built on it. The bulk pool that runs many calls at once is
``hooks/bulk_pool.py``; reading answers (errors mapped to exceptions, task documents checked) is
``hooks/crowd_errors.py``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import ssl
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlsplit
from weakref import WeakKeyDictionary

import requests
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook
from botocore.config import Config
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from requests.adapters import HTTPAdapter
from requests_aws4auth import AWS4Auth
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base

from airflow_provider_imagecontains.exceptions import (
    CrowdApiError,
    EndpointUnreachableError,
    ServiceError,
)
from airflow_provider_imagecontains.hooks.bulk_pool import Call, iter_outcomes
from airflow_provider_imagecontains.hooks.credentials import (
    CrowdConnectionConfig,
    caller_account_id,
    resolve_credentials,
)
from airflow_provider_imagecontains.hooks.crowd_errors import (
    body_excerpt,
    connect_failure,
    error_for,
    parse_retry_after,
    task_document_problem,
)

if TYPE_CHECKING:
    import aiohttp
    from airflow.providers.common.compat.sdk import Connection

SIGNING_SERVICE_NAME = "crowd"
RETRYABLE_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
# Lower case: requests-aws4auth looks header names up in lower case when it signs a plain dict.
JSON_HEADERS = {"content-type": "application/json"}
# Connection-level failures after which the request may or may not have taken effect; retrying is
# safe because PUT is idempotent by task name and GET/DELETE do not create anything.
RETRYABLE_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def retryable_async_transport_errors() -> tuple[type[Exception], ...]:
    """The async client's counterpart of :data:`RETRYABLE_TRANSPORT_ERRORS`.

    aiohttp is imported only where the async path runs (bulk calls, triggers), never when a DAG file that
    imports the operator or sensor is parsed (docs/benchmarks.md, section ``import``).
    """
    import aiohttp

    return (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


class _TransientError(Exception):
    """A retryable failure; ``error`` is what the caller gets once the retry budget is spent."""

    def __init__(self, error: CrowdApiError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class WaitFullJitterOrRetryAfter(wait_base):
    """Exponential backoff with full jitter, never shorter than the service's ``Retry-After``.

    :param base_delay: cap of the first wait in seconds; the cap doubles with each attempt.
    :param max_delay: no single wait is longer than this (also bounds ``Retry-After``).
    """

    def __init__(self, base_delay: float, max_delay: float) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay

    def __call__(self, retry_state: RetryCallState) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry_state.attempt_number - 1))
        delay = random.uniform(0, ceiling)  # noqa: S311
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_delay)


@dataclass
class _RetryTally:
    """The retries of one bulk request, summed up in its one INFO line (each retry is logged at DEBUG)."""

    calls: int = 0
    retries: int = 0
    longest_retry_after: float | None = None


class _Answer(NamedTuple):
    """The part of an HTTP response the hook reads, whichever client received it."""

    status: int
    body: bytes


@dataclass
class _SigningRequest:
    """What AWS4Auth reads and writes when it signs; lighter than a requests.PreparedRequest.

    Header names are lower case, as AWS4Auth looks them up.
    """

    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]


# Idle connections stay open a little longer than the trigger's default poll interval (60 s), so that
# cycles reuse them when the service keeps them open too.
ASYNC_KEEPALIVE_SECONDS = 75.0


@functools.cache
def ssl_context_for(ca_bundle: str) -> ssl.SSLContext:
    """The TLS context verifying against ``ca_bundle`` (a file or directory), built once per process."""
    if os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    return ssl.create_default_context(cafile=ca_bundle)


@dataclass
class _SharedSession:
    """An aiohttp session shared by the hooks on one event loop, and how many are using it."""

    session: aiohttp.ClientSession
    users: int = 0


# The sessions of :meth:`CrowdBaseHook.reusing_connections`, per event loop and transport settings.
_loop_sessions: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _SharedSession]] = (
    WeakKeyDictionary()
)


class CrowdBaseHook(BaseHook):
    """
    What every call to the crowd API needs: the connection, credentials, sessions, signing and retries.

    Single calls go over one pooled keep-alive ``requests`` session. Bulk and async calls run on one
    asyncio core over ``aiohttp`` with at most ``max_concurrency`` requests in flight. Both paths sign
    with AWS Signature Version 4 (requests-aws4auth) from refreshable credentials and share one retry
    policy, one error mapping and one task-document check: throttling (429), server errors (5xx) and
    dropped connections are retried with exponential backoff and full jitter.

    :param imagecontains_conn_id: the ``imagecontains`` connection: login = AWS access key id,
        password = secret access key, extras ``region_name``, ``aws_session_token``, ``profile_name``,
        ``role_arn``, ``endpoint_url``, ``account_id`` and ``service_config.sts.endpoint_url``.
    :param max_concurrency: requests in flight at once in the bulk and async methods.
    :param max_attempts: attempts per request, the first included, before giving up.
    :param retry_base_delay: cap in seconds of the first backoff; it doubles with each attempt.
    :param max_retry_delay: longest single wait in seconds between attempts.
    :param timeout: seconds to wait for the service to connect or answer.
    """

    conn_name_attr = "imagecontains_conn_id"
    default_conn_name = "imagecontains_default"

    def __init__(
        self,
        imagecontains_conn_id: str = default_conn_name,
        *,
        max_concurrency: int = 64,
        max_attempts: int = 8,
        retry_base_delay: float = 0.25,
        max_retry_delay: float = 20.0,
        timeout: float = 60.0,
    ) -> None:
        super().__init__()
        if max_concurrency < 1:
            raise ValueError(f"Invalid max_concurrency {max_concurrency!r}: expected at least 1.")
        if max_attempts < 1:
            raise ValueError(f"Invalid max_attempts {max_attempts!r}: expected at least 1.")
        self.imagecontains_conn_id = imagecontains_conn_id
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.retry_base_delay = retry_base_delay
        self.max_retry_delay = max_retry_delay
        self.timeout = timeout
        self._connection: Connection | None = None
        self._shared_session: aiohttp.ClientSession | None = None
        # AWS4Auth rewrites its signing key when the date changes, so each thread signs with its own.
        self._thread_local = threading.local()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(imagecontains_conn_id={self.imagecontains_conn_id!r})"

    @cached_property
    def config(self) -> CrowdConnectionConfig:
        """The connection's settings (fetched from Airflow on first use)."""
        if self._connection is None:
            self._connection = self.get_connection(self.imagecontains_conn_id)
        return CrowdConnectionConfig.from_connection(self._connection)

    @cached_property
    def credentials(self) -> Credentials:
        """Credentials the requests are signed with; refreshed by botocore before they expire."""
        return resolve_credentials(self.config, self.imagecontains_conn_id, self._sts_config)

    @cached_property
    def account_id(self) -> str:
        """The account id of the task URLs: from the connection, else STS GetCallerIdentity (once)."""
        return caller_account_id(self.config, self.credentials, self.imagecontains_conn_id, self._sts_config)

    @cached_property
    def _sts_config(self) -> Config:
        """STS calls keep the hook's timeout and attempts, like its own calls."""
        return Config(
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
        )

    @cached_property
    def _proxies(self) -> dict[str, str]:
        """Proxies of both clients: the connection's ``proxies``, else with ``trust_env`` the environment's.

        Read once, not on every request (requests re-reads the environment per call otherwise, which costs
        more CPU than signing).
        """
        if self.config.proxies is not None:
            return dict(self.config.proxies)
        if self.config.trust_env:
            return requests.utils.get_environ_proxies(self.config.endpoint_url)
        return {}

    @cached_property
    def _verify(self) -> bool | str:
        """``False`` (no certificate check) or the CA bundle (file or directory) both clients verify against."""
        verify = self.config.verify
        if verify is True:
            environ = (
                (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"))
                if self.config.trust_env
                else None
            )
            return environ or requests.utils.DEFAULT_CA_BUNDLE_PATH
        return verify

    @cached_property
    def _session(self) -> requests.Session:
        session = requests.Session()
        session.proxies = self._proxies
        session.verify = self._verify
        session.trust_env = False  # the environment was read once above
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.max_concurrency, pool_block=True, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    @cached_property
    def _aiohttp_ssl(self) -> ssl.SSLContext | bool:
        """TLS settings of the aiohttp path, the same as the requests session's.

        Loading a CA bundle takes tens of ms of CPU: :meth:`_aprepare` resolves this in a thread, never on
        the event loop, and the context is built once per process and bundle.
        """
        if not self.config.endpoint_url.startswith("https://"):
            return True
        if self._verify is False:
            return False
        return ssl_context_for(str(self._verify))

    @cached_property
    def _proxy(self) -> str | None:
        """The proxy of the aiohttp path for the endpoint's scheme."""
        return self._proxies.get(urlsplit(self.config.endpoint_url).scheme) or self._proxies.get("all")

    @cached_property
    def _task_url_prefix(self) -> str:
        return f"{self.config.endpoint_url}/{self.account_id}/functions/"

    def get_conn(self) -> requests.Session:
        """Return the pooled session of the single calls, with credentials and account id resolved."""
        self._prepare()
        return self._session

    def close(self) -> None:
        """Close the pooled connections of the single calls (the hook reopens them if used again)."""
        if "_session" in self.__dict__:
            self.__dict__.pop("_session").close()

    def _prepare(self) -> None:
        """Do the blocking set-up once, before requests fan out: credentials, account id (STS calls) and TLS."""
        _ = self.credentials, self.account_id, self._aiohttp_ssl

    async def _aprepare(self) -> None:
        """:meth:`_prepare` off the event loop."""
        if self._connection is None:
            # The triggerer forbids sync connection lookups from its event loop, and before Airflow 3.3.2
            # aget_connection can raise DeadlockImminentError there; the compat helper avoids both.
            self._connection = await get_async_connection(self.imagecontains_conn_id, self)
        if "_aiohttp_ssl" not in self.__dict__ or "account_id" not in self.__dict__:
            await asyncio.to_thread(self._prepare)

    @asynccontextmanager
    async def reusing_connections(self) -> AsyncIterator[None]:
        """Make the async calls inside share one aiohttp session with the other hooks on this event loop.

        Its pooled keep-alive (TLS) connections then carry over from one call to the next (a trigger's poll
        cycles) and are shared by all triggers of a triggerer, instead of one session, pool and TLS handshake
        per call. The session closes when the last hook using it leaves. Without this, each bulk or async
        call opens and closes its own session.
        """
        await self._aprepare()
        key = (self._aiohttp_ssl, self._proxy, self.max_concurrency, self.timeout)
        sessions = _loop_sessions.setdefault(asyncio.get_running_loop(), {})
        shared = sessions.get(key)
        if shared is None:
            shared = sessions[key] = _SharedSession(self._new_client_session())
        shared.users += 1
        previous, self._shared_session = self._shared_session, shared.session
        try:
            yield
        finally:
            self._shared_session = previous
            shared.users -= 1
            if shared.users == 0:
                if sessions.get(key) is shared:
                    del sessions[key]
                await shared.session.close()

    def _new_client_session(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self.max_concurrency, ssl=self._aiohttp_ssl, keepalive_timeout=ASYNC_KEEPALIVE_SECONDS
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def _afrozen_credentials(self) -> ReadOnlyCredentials:
        """The credentials to sign with now; a due refresh (an STS call) runs off the event loop."""
        credentials = self.credentials
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            return await asyncio.to_thread(credentials.get_frozen_credentials)
        return credentials.get_frozen_credentials()

    def _signer(self, credentials: ReadOnlyCredentials) -> AWS4Auth:
        """This thread's AWS4Auth for ``credentials``, kept while they last so its signing key is derived once."""
        cached = getattr(self._thread_local, "signer", None)
        if cached is None or cached[0] != credentials:
            signer = AWS4Auth(
                credentials.access_key,
                credentials.secret_key,
                self.config.region_name,
                SIGNING_SERVICE_NAME,
                session_token=credentials.token,
            )
            cached = self._thread_local.signer = (credentials, signer)
        return cached[1]

    def _task_url(self, function_name: str, task_name: str) -> str:
        return f"{self._task_url_prefix}{quote(function_name, safe='')}/tasks/{quote(task_name, safe='')}"

    # ---- internals: sending, one retry policy for both clients ----

    def _retry_policy(self, tally: _RetryTally | None = None) -> dict[str, Any]:
        """Tenacity settings shared by the sync (``Retrying``) and async (``AsyncRetrying``) paths.

        :param tally: where a bulk request counts its retries; without one, each retry is logged at INFO.
        """
        return {
            "retry": retry_if_exception_type(_TransientError),
            "stop": stop_after_attempt(self.max_attempts),
            "wait": WaitFullJitterOrRetryAfter(self.retry_base_delay, self.max_retry_delay),
            "before_sleep": partial(self._log_retry, tally),
            "reraise": True,
        }

    def _send(
        self, method: str, function_name: str, task_name: str, body: bytes | None = None, url: str | None = None
    ) -> _Answer:
        """Send one signed request over the requests session, retrying transient failures.

        :param url: where to send it, when not to the task's own URL (``task_name`` then only names it in errors).
        """
        url = url or self._task_url(function_name, task_name)
        headers = JSON_HEADERS if body is not None else None

        def send_once() -> _Answer:
            signer = self._signer(self.credentials.get_frozen_credentials())
            try:
                response = self._session.request(
                    method, url, data=body, headers=headers, auth=signer, timeout=self.timeout
                )
            except RETRYABLE_TRANSPORT_ERRORS as err:
                raise self._transport_error(err, method, function_name, task_name) from None
            return self._answer(
                response.status_code,
                response.headers.get("Retry-After"),
                response.content,
                method,
                function_name,
                task_name,
            )

        try:
            return Retrying(**self._retry_policy())(send_once)
        except _TransientError as transient:
            raise transient.error from None

    async def _acall_all(
        self, method: str, function_name: str, bodies: Mapping[str, bytes | None]
    ) -> dict[str, dict[str, Any] | CrowdApiError]:
        """Call once per task; return each outcome, in the order of ``bodies``."""
        outcomes = {name: outcome async for name, outcome in self._aiter_calls(method, function_name, bodies)}
        return {name: outcomes[name] for name in bodies}

    async def _aiter_calls(
        self,
        method: str,
        function_name: str,
        bodies: Mapping[str, bytes | None],
        shared_limit: asyncio.Semaphore | None = None,
    ) -> AsyncGenerator[tuple[str, dict[str, Any] | CrowdApiError], None]:
        """Call once per task over one aiohttp session through the bulk pool (``max_concurrency`` workers, each
        holding a place in ``shared_limit`` if given); yield each ``(task_name, document or error)`` as it
        arrives. Closing the generator early cancels the calls left."""
        # One call is one line per retry; a bulk request logs its retries at DEBUG and one INFO summary.
        tally = _RetryTally() if len(bodies) > 1 else None
        retry_policy = self._retry_policy(tally)
        proxy = self._proxy
        shared = self._shared_session
        async with self._new_client_session() if shared is None else nullcontext(shared) as session:

            def new_call() -> Call:
                # A worker reuses one retrying object call after call: a new one per call leaves reference cycles
                # behind (about 18 objects) that only the garbage collector frees, and the full collections they
                # bring on stall the event loop (bench/bench_trigger.py).
                retrying = AsyncRetrying(**retry_policy)

                async def call(task_name: str) -> dict[str, Any]:
                    answer = await self._asend(
                        session, proxy, retrying, method, function_name, task_name, bodies[task_name]
                    )
                    return self._task_document(answer, method, function_name, task_name)

                return call

            pool = iter_outcomes(
                list(bodies), new_call, max_concurrency=self.max_concurrency, shared_limit=shared_limit
            )
            async with aclosing(pool) as outcomes:
                async for outcome in outcomes:
                    yield outcome
        if tally is not None and tally.retries:
            self._log_retry_summary(tally, method, function_name, len(bodies))

    async def _asend(
        self,
        session: aiohttp.ClientSession,
        proxy: str | None,
        retrying: AsyncRetrying,
        method: str,
        function_name: str,
        task_name: str,
        body: bytes | None,
    ) -> _Answer:
        """Send one signed request over the aiohttp session, retrying transient failures."""
        url = self._task_url(function_name, task_name)

        async def send_once() -> _Answer:
            headers = self._signed_headers(method, url, body, await self._afrozen_credentials())
            try:
                async with session.request(method, url, data=body, headers=headers, proxy=proxy) as response:
                    content = await response.read()
            except retryable_async_transport_errors() as err:
                raise self._transport_error(err, method, function_name, task_name) from None
            return self._answer(
                response.status, response.headers.get("Retry-After"), content, method, function_name, task_name
            )

        try:
            return await retrying(send_once)
        except _TransientError as transient:
            raise transient.error from None

    def _signed_headers(
        self, method: str, url: str, body: bytes | None, credentials: ReadOnlyCredentials
    ) -> dict[str, str]:
        """The headers of a request aiohttp sends, signed by the same requests-aws4auth signer as the sync path."""
        request = _SigningRequest(method, url, body, dict(JSON_HEADERS) if body is not None else {})
        self._signer(credentials)(request)
        return request.headers

    def _answer(
        self, status: int, retry_after: str | None, body: bytes, method: str, function_name: str, task_name: str
    ) -> _Answer:
        """The response as an :class:`_Answer`, or a :class:`_TransientError` if it is worth retrying."""
        answer = _Answer(status, body)
        if status in RETRYABLE_STATUS_CODES:
            raise _TransientError(
                self._error_for(answer, method, function_name, task_name), retry_after=parse_retry_after(retry_after)
            )
        return answer

    def _transport_error(self, err: Exception, method: str, function_name: str, task_name: str) -> _TransientError:
        failed = f"{method} of task {task_name!r} ({function_name}) failed after {self.max_attempts} attempt(s)"
        cause = connect_failure(err)
        if cause is not None:
            return _TransientError(
                EndpointUnreachableError(
                    f"{failed}: {cause} by {self.config.endpoint_url} ({type(err).__name__}). Is the crowd server "
                    "running, and is the connection's endpoint_url right? Run again once it is (task names make "
                    "this safe)."
                )
            )
        return _TransientError(
            ServiceError(
                f"{failed}: {type(err).__name__} talking to {self.config.endpoint_url}. Check the endpoint and "
                "network, then run again (task names make this safe)."
            )
        )

    def _log_retry(self, tally: _RetryTally | None, retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        if tally is not None:
            if retry_state.attempt_number == 1:  # this call's first retry
                tally.calls += 1
            tally.retries += 1
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                honoured = min(retry_after, self.max_retry_delay)
                tally.longest_retry_after = max(honoured, tally.longest_retry_after or 0.0)
        (self.log.info if tally is None else self.log.debug)(
            "Crowd API call failed (%s), attempt %d of %d; retrying in %.2fs.",
            type(error.error).__name__ if isinstance(error, _TransientError) else error,
            retry_state.attempt_number,
            self.max_attempts,
            sleep,
        )

    def _log_retry_summary(self, tally: _RetryTally, method: str, function_name: str, calls: int) -> None:
        self.log.info(
            "Crowd API %s of %d tasks (%s): %d calls were retried, %d retries in all; longest Retry-After "
            "honoured: %s.",
            method,
            calls,
            function_name,
            tally.calls,
            tally.retries,
            "none" if tally.longest_retry_after is None else f"{tally.longest_retry_after:.2f}s",
        )

    # ---- internals: reading answers, shared by both clients ----

    def _task_document(self, answer: _Answer, method: str, function_name: str, task_name: str) -> dict[str, Any]:
        if not 200 <= answer.status < 300:
            raise self._error_for(answer, method, function_name, task_name)
        try:
            document = json.loads(answer.body)
        except ValueError:
            document = None
        problem = task_document_problem(document, task_name)
        if problem:
            raise ServiceError(
                f"{method} of task {task_name!r} ({function_name}) got HTTP {answer.status} but {problem} "
                f"(body starts {body_excerpt(answer.body)!r}). The endpoint may not be the crowd API; check endpoint_url.",
                status_code=answer.status,
            )
        return document

    def _error_for(self, answer: _Answer, method: str, function_name: str, task_name: str) -> CrowdApiError:
        """Map an error answer to the exception that tells the caller what to do (see ``crowd_errors``)."""
        return error_for(
            answer.status,
            answer.body,
            method,
            function_name,
            task_name,
            max_attempts=self.max_attempts,
            conn_id=self.imagecontains_conn_id,
        )
