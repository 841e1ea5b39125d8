"""Fault injection (latency, 429, 500/503, dropped connections) and request counting, as ASGI middleware.

Faults apply to the crowd routes only, never to STS or the local stats route.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.ui import UI_PATHS

# A private ASGI message: close the connection now, without a response (served by DroppingHttpToolsProtocol).
DROP_CONNECTION = "imagecontains.drop_connection"
STATS_PATH = "/_local/request-counts"

Scope = dict[str, Any]
Receive = Any
Send = Any


class DroppingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, plus the ability to hang up on a request whose effect is already stored.

    ASGI has no message for "close without answering"; this protocol serves the private
    ``DROP_CONNECTION`` message by closing the transport before any response byte is written.
    """

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        send = cycle.send

        async def send_or_drop(message: Any) -> None:
            if message["type"] != DROP_CONNECTION:
                await send(message)
                return
            # Mark the response done so uvicorn adds neither a 500 nor an error log of its own.
            cycle.response_started = cycle.response_complete = True
            self.transport.close()

        cycle.send = send_or_drop  # type: ignore[method-assign]
        super()._start_asgi_task(cycle, app)


class FaultInjector:
    """Wraps the API app: counts (method, status) of every request and injects the configured faults.

    :param app: the ASGI app serving the API.
    :param config: fault rates, retry-after, latency and the random seed.
    """

    def __init__(self, app: Any, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.request_counts: Counter[tuple[str, int]] = Counter()
        self._random = random.Random(config.seed)  # noqa: S311 -- simulation, not security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The workforce web pages (UI_PATHS) are not part of the crowd API: no faults, not counted.
        if scope["type"] != "http" or scope["path"] == STATS_PATH or scope["path"].startswith(UI_PATHS):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if scope["path"] == "/":  # STS
            await self.app(scope, receive, self._counting(method, send))
            return
        config = self.config
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        draw = self._random.random()
        if draw < config.throttle_rate:
            await self._error(
                send, method, 429, "Throttled", "Rate exceeded; retry after the Retry-After delay.",
                [(b"retry-after", str(config.retry_after_seconds).encode())],
            )  # fmt: skip
            return
        draw -= config.throttle_rate
        if draw < config.error_rate:
            status, code = (500, "InternalError") if self._random.random() < 0.5 else (503, "ServiceUnavailable")
            await self._error(send, method, status, code, "Injected failure; the request had no effect.", [])
            return
        draw -= config.error_rate
        if draw < config.drop_rate:
            await self.app(scope, receive, self._dropping(method, send))
            return
        await self.app(scope, receive, self._counting(method, send))

    def _counting(self, method: str, send: Send) -> Send:
        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.request_counts[(method, message["status"])] += 1
            await send(message)

        return counting_send

    def _dropping(self, method: str, send: Send) -> Send:
        """Let the request take effect, then hang up instead of answering."""

        async def dropping_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.request_counts[(method, message["status"])] += 1
                await send({"type": DROP_CONNECTION})

        return dropping_send

    async def _error(
        self, send: Send, method: str, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        body = json.dumps({"code": code, "message": message}).encode()
        self.request_counts[(method, status)] += 1
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
