"""The server's HTTP protocol: uvicorn's httptools protocol with a bounded time and size to read each request.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and concurrent connections
(``limit_concurrency``), but not how long a client may take to send a request, nor how large its head
may grow: a client trickling headers or a body would hold its connection (and its memory) forever.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from imagecontains_gateway.faults import DroppingHttpToolsProtocol

# The largest request head (request line and headers) read before answering 431.
MAX_HEAD_BYTES = 64 * 1024


def bounded_protocol(read_timeout_seconds: float) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http`` setting, reading each request within ``read_timeout_seconds``."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"read_timeout_seconds": read_timeout_seconds})


class BoundedHttpToolsProtocol(DroppingHttpToolsProtocol):
    """Close a connection whose request is not read whole within ``read_timeout_seconds`` (408), counted from
    the connection's start or the request's first byte, or whose head passes ``MAX_HEAD_BYTES`` (431).
    """

    read_timeout_seconds = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._reading_head = True
        self._head_bytes = 0  # request line and headers of the current request, as parsed
        self._bytes_in_head = 0  # bytes received while its head was still incomplete
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
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
