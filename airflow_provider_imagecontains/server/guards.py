"""What every request passes before any other work: a bounded body, read within a bounded time.

``BodyLimit`` is the outermost ASGI middleware: it refuses a declared ``Content-Length`` over the
route's limit without reading a byte, stops reading a chunked body as soon as it passes the limit,
and hands the app a body it has already read whole. Nothing behind it (faults, signatures, forms)
ever holds more than the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Any
Send = Any
# (scope, status, code, message) -> the response to refuse a request with, in the route's own error format.
Refusal = Callable[[Scope, int, str, str], Response]


class BodyLimit:
    """Read each request's body up to the route's limit, or refuse the request (413) and close the connection.

    :param app: the ASGI app to wrap.
    :param limit_for: the largest body accepted for a request scope, in bytes.
    :param refusal: builds the refusal in the route's error format.
    """

    def __init__(self, app: Any, limit_for: Callable[[Scope], int], refusal: Refusal) -> None:
        self.app = app
        self.limit_for = limit_for
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, f"The body has {declared} bytes; at most {limit} are accepted.")
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
                await self._refuse(
                    scope, receive, send, f"The body has more than {limit} bytes; at most {limit} are accepted."
                )
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

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, message: str) -> None:
        response = self.refusal(scope, 413, "PayloadTooLarge", message)
        # The rest of the body is never read: close the connection instead of reading on to the next request.
        response.headers["connection"] = "close"
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
