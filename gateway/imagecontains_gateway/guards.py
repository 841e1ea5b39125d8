"""What requests pass before any other work: a Host the server answers to, a bounded body of an accepted type;
``FailureThrottle``, which bounds how often one client may fail (a sign-in with an unknown token); and
``AccountRateLimit``, the requests one account may make a second.

``AllowedHosts`` refuses a request whose ``Host`` header names another site: a page of that site
could otherwise reach a loopback server through DNS rebinding (and sign with the public demo key).

``BodyLimit`` is the outermost ASGI middleware: it refuses a body of a type the route does not take,
or a declared ``Content-Length`` over the route's limit, without reading a byte; it stops reading a
chunked body as soon as it passes the limit, and hands the app a body it has already read whole.
Nothing behind it (faults, signatures, form parsing) ever holds more than the limit.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Any
Send = Any
# (scope, status, code, message) -> the response to refuse a request with, in the route's own error format.
Refusal = Callable[[Scope, int, str, str], Response]
# The names a server on loopback is always reachable by.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class AllowedHosts:
    """Answer only requests whose ``Host`` (without its port) is one of ``hosts``; refuse others with 400.

    :param app: the ASGI app to wrap.
    :param hosts: the names and addresses clients reach the server by (compared case-insensitively).
    :param refusal: builds the refusal in the route's error format.
    """

    def __init__(self, app: Any, hosts: Iterable[str], refusal: Refusal) -> None:
        self.app = app
        self.hosts = frozenset(host_name(host) for host in hosts)
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and host_name(_header(scope, b"host") or "") not in self.hosts:
            message = "This server does not answer to that Host; its operator can add the name with --allowed-host."
            response = self.refusal(scope, 400, "InvalidHost", message)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """``host`` without its port or IPv6 brackets, lower case: ``[::1]:8787`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True)
class BodyRule:
    """The bodies a route accepts.

    :param max_bytes: the largest body, in bytes.
    :param content_types: the media types a non-empty body may have (any when empty).
    """

    max_bytes: int
    content_types: tuple[str, ...] = ()


class BodyLimit:
    """Read each request's body within the route's rule, or refuse the request (413, 415) and close the connection.

    :param app: the ASGI app to wrap.
    :param rule_for: the body rule of a request scope.
    :param refusal: builds the refusal in the route's error format.
    """

    def __init__(self, app: Any, rule_for: Callable[[Scope], BodyRule], refusal: Refusal) -> None:
        self.app = app
        self.rule_for = rule_for
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rule_for(scope)
        limit = rule.max_bytes
        declared = _header(scope, b"content-length")
        has_body = declared not in (None, "0") or _header(scope, b"transfer-encoding") is not None
        content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        if has_body and rule.content_types and content_type not in rule.content_types:
            message = f"Bodies of type {content_type or 'none'!r} are not accepted here; send {rule.content_types[0]}."
            await self._refuse(scope, receive, send, 415, "UnsupportedMediaType", message)
            return
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            message = f"The body has {declared} bytes; at most {limit} are accepted."
            await self._refuse(scope, receive, send, 413, "PayloadTooLarge", message)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                log.debug("Client left during the body of %s %s (%d bytes read)", scope["method"], scope["path"], size)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                message = f"The body has more than {limit} bytes; at most {limit} are accepted."
                await self._refuse(scope, receive, send, 413, "PayloadTooLarge", message)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def receive_read_body() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls only wait for the client to leave (long polls)

        await self.app(scope, receive_read_body, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
        response = self.refusal(scope, status, code, message)
        # The rest of the body is never read: close the connection instead of reading on to the next request.
        response.headers["connection"] = "close"
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class FailureThrottle:
    """Refuse a client that failed ``max_failures`` times within ``window_seconds``, until its window ends.

    Keyed by client address (after a trusted proxy's ``X-Forwarded-For``, see ``--forwarded-allow-ips``); at most
    ``max_clients`` are remembered, the oldest forgotten first, so a flood of addresses cannot grow it without bound.

    :param max_failures: failures a client may have within one window.
    :param window_seconds: how long a window lasts, from a client's first failure in it.
    :param max_clients: clients remembered at once.
    """

    def __init__(self, max_failures: int, window_seconds: float, max_clients: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_clients = max_clients
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # client -> (window start, failures)

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until ``client`` may try again, or None when it may now."""
        window = self._window(client)
        if window is None or window[1] < self.max_failures:
            return None
        return max(math.ceil(window[0] + self.window_seconds - time.monotonic()), 1)

    def failed(self, client: str) -> bool:
        """Count one failure of ``client``; True when it is the one that starts refusing the client."""
        start, failures = self._window(client) or (time.monotonic(), 0)
        self._windows[client] = (start, failures + 1)
        self._windows.move_to_end(client)
        while len(self._windows) > self.max_clients:
            self._windows.popitem(last=False)
        return failures + 1 == self.max_failures

    def _window(self, client: str) -> tuple[float, int] | None:
        window = self._windows.get(client)
        if window is not None and time.monotonic() - window[0] >= self.window_seconds:
            del self._windows[client]
            return None
        return window


class AccountRateLimit:
    """A token bucket per account: ``rate`` requests a second on average, up to ``burst`` at once.

    Taken after the signature is checked, so nobody spends another account's allowance; one bucket per configured
    account, so it cannot grow.

    :param rate: requests per second an account may make on average; 0: no limit.
    :param burst: requests an account may make at once after a quiet spell.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # account -> (tokens, when they were counted)

    def retry_after(self, account: str) -> int | None:
        """Take a request from ``account``'s allowance: None when it had one, else whole seconds until it has."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        tokens, at = self._buckets.get(account, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[account] = (tokens - 1.0, now)
            return None
        self._buckets[account] = (tokens, now)
        return max(math.ceil((1.0 - tokens) / self.rate), 1)
