"""The server's HTTP protocol and event loop: bounded time, size and number of the connections one client can hold.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``), but not how long a new connection may stay
silent, nor how long a TLS handshake or a request may take, nor how large a head may grow; and its
``limit_concurrency`` counts connections that never sent a byte, so a client holding idle connections would
turn every other client away (503) or use up the process's file descriptors (accept fails, silently: libuv closes
such connections itself). Here:

- a new connection must finish its TLS handshake, then send its first byte, within ``first_byte_timeout``
  seconds; a request must arrive whole within ``read_timeout`` seconds of its first byte (408 otherwise);
- ``max_requests`` bounds the requests being handled at once (503 beyond); a connection that is not sending or
  waiting for a request does not count;
- open connections are kept under the open-file limit (raised to its hard limit at start): past it, the
  connection idle the longest is closed for the new one, and the operator is told (a fronting proxy should
  bound connections per client: docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

import uvicorn
import uvloop

from imagecontains_gateway.faults import DroppingHttpToolsProtocol

log = logging.getLogger(__name__)

# The largest request head (request line and headers) read before answering 431.
MAX_HEAD_BYTES = 64 * 1024
# File descriptors kept for what is not a connection: the database and its WAL, logs, local images being sent.
RESERVED_FILES = 64
# The soft open-file limit asked for when the hard limit is unlimited (Linux's default per-process ceiling).
UNLIMITED_FILES_TARGET = 1 << 20
# How often, at most, the server logs that it is closing connections to stay under the open-file limit.
WARN_EVERY_SECONDS = 10.0


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit (each connection is one file); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNLIMITED_FILES_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as err:
            log.warning("Could not raise the open-file limit from %d to %d: %s", soft, wanted, err)
    return int(soft)


def max_open_connections() -> int:
    """The connections the process can hold at once: its open-file limit now, less the files kept for the rest."""
    return max(resource.getrlimit(resource.RLIMIT_NOFILE)[0] - RESERVED_FILES, 1)


class HardenedConfig(uvicorn.Config):
    """uvicorn's settings, with an event loop that bounds TLS handshakes to ``first_byte_timeout`` seconds
    (asyncio's own default is 60 s, and uvicorn does not expose it)."""

    def __init__(self, *args: Any, first_byte_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_byte_timeout = first_byte_timeout

    def get_loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop]:
        timeout = self.first_byte_timeout
        return lambda: HandshakeBoundedLoop(timeout)


class HandshakeBoundedLoop(uvloop.Loop):  # type: ignore[misc]
    """uvloop, whose TLS servers drop a connection that has not finished its handshake within ``timeout`` seconds.

    :param timeout: seconds a new TLS connection has for its handshake.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.handshake_timeout = timeout

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:  # type: ignore[override]
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.handshake_timeout)
        return await super().create_server(*args, **kwargs)  # type: ignore[return-value]


class ConnectionBook:
    """What the connections of one server share: the bounds, and which connections are idle, oldest first.

    A connection is idle while no request of it is being handled: before its first byte, while it sends a
    request's head, and between keep-alive requests.

    :param max_requests: requests handled at once; more get 503.
    """

    def __init__(self, max_requests: int) -> None:
        self.max_requests = max_requests
        self.idle: dict[BoundedHttpToolsProtocol, None] = {}  # insertion order: idle the longest first
        self.closed_for_room = 0  # since the last warning
        self.last_warning = -WARN_EVERY_SECONDS

    def make_room(self, newcomer: BoundedHttpToolsProtocol, open_connections: int) -> None:
        """Close the connection idle the longest (else ``newcomer``) once more than the process can hold are open."""
        if open_connections <= max_open_connections():
            return
        victim = next((connection for connection in self.idle if connection is not newcomer), newcomer)
        self.idle.pop(victim, None)
        victim.transport.close()
        self.closed_for_room += 1
        now = time.monotonic()
        if now - self.last_warning >= WARN_EVERY_SECONDS:
            log.warning(
                "%d connections open, the most this process can hold (open-file limit %d): closed %d idle "
                "connection(s) to accept new ones. One client may be holding connections open; a fronting proxy "
                "should limit connections per client (docs/deployment.md).",
                open_connections,
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                self.closed_for_room,
            )
            self.closed_for_room, self.last_warning = 0, now


def bounded_protocol(
    *, read_timeout: float, first_byte_timeout: float, max_requests: int
) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with the bounds of one server (see the module's doc)."""
    attributes = {
        "read_timeout_seconds": read_timeout,
        "first_byte_timeout_seconds": first_byte_timeout,
        "book": ConnectionBook(max_requests),
    }
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), attributes)


class BoundedHttpToolsProtocol(DroppingHttpToolsProtocol):
    """Close a connection that sends nothing within ``first_byte_timeout_seconds`` of opening; answer 408 and close
    one whose request is not read whole within ``read_timeout_seconds`` of its first byte, 431 one whose head passes
    ``MAX_HEAD_BYTES``; answer 503 to a request beyond ``book.max_requests`` handled at once.
    """

    read_timeout_seconds = 30.0
    first_byte_timeout_seconds = 10.0
    book: ConnectionBook

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._awaiting_first_byte = True
        self._reading_head = True
        self._head_bytes = 0  # request line and headers of the current request, as parsed
        self._bytes_in_head = 0  # bytes received while its head was still incomplete
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.book.idle[self] = None
        # Nothing was asked: the connection is closed without an answer, as an idle keep-alive one is.
        self._read_deadline = self.loop.call_later(self.first_byte_timeout_seconds, self.transport.close)
        self.book.make_room(self, len(self.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        self.book.idle.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_first_byte:
            self._awaiting_first_byte = False
            self._disarm_read_deadline()  # the request's own deadline starts with its first byte (below)
        if self._reading_head:
            self._bytes_in_head += len(data)
        super().data_received(data)
        # The parser keeps an unfinished header line to itself: count what arrived instead.
        if self._reading_head and self._bytes_in_head > MAX_HEAD_BYTES:
            self._refuse_head()

    # Parser callbacks: nothing more is parsed or started once the connection is refused.

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._arm_read_deadline()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused or self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head()
            return
        self._reading_head = False
        self.book.idle.pop(self, None)
        # uvicorn answers 503 when its limit is set and reached: set to 0 exactly when too many requests are
        # being handled (its own count would include connections that never sent a request).
        self.limit_concurrency = 0 if len(self.tasks) >= self.book.max_requests else None
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm_read_deadline()
        self._reading_head, self._head_bytes, self._bytes_in_head = True, 0, 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self.book.idle[self] = None  # waits for its next request: idle the shortest

    def _refuse_head(self) -> None:
        self._refuse(431, "HeadersTooLarge", f"The request head passed {MAX_HEAD_BYTES} bytes.")

    def _arm_read_deadline(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout_seconds, self._read_timed_out)

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        self._refuse(
            408, "RequestTimeout", f"The request was not received within {self.read_timeout_seconds:g} seconds."
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` unless a response has started, then close the connection."""
        self._refused = True
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            body = json.dumps({"code": code, "message": message}).encode()
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, reason, len(body), body)
            )
        self.transport.close()
