"""Requests per second the local Crowd API server answers on loopback, for GET and PUT.

Method: the server runs as its own process (one uvicorn worker, as shipped); the client is one
asyncio process with many keep-alive connections sending requests signed *before* the clock
starts (botocore SigV4, exactly as a client would), so signing and HTTP-library overhead stay out
of the measurement and the client is not the bottleneck (on 2 cores it still shares the machine).
GET reads one existing task; PUT creates a new task per request (no simulated workforce, so only
the API is measured). Medians of several runs go to the ``server-capacity`` section of docs/benchmarks.md.

    .venv/bin/python bench/bench_server_capacity.py [--requests 5000] [--connections 32] [--repetitions 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from report import write_section

from imagecontains_gateway.testing import LocalCrowdServer

INPUT = {"image": {"url": "https://images.example.com/cam1.jpg"}, "target": {"label": "person"}}


def presign(server: LocalCrowdServer, method: str, name: str, body: bytes) -> bytes:
    url = f"{server.endpoint_url}/{server.account.account_id}/functions/image-contains/tasks/{name}"
    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(
        Credentials(server.account.access_key_id, server.account.secret_access_key), "crowd", "us-east-1"
    ).add_auth(request)
    parts = urlsplit(url)
    headers = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    return (
        f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connection(port: int, requests: list[bytes], statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for raw in requests:
        writer.write(raw)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        statuses.append(int(status_line.split()[1]))
    writer.close()


async def measure(port: int, requests: list[bytes], connections: int) -> tuple[float, list[int]]:
    statuses: list[int] = []
    shares = [requests[n::connections] for n in range(connections)]
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, share, statuses) for share in shares))
    return len(requests) / (time.perf_counter() - started), statuses


def run(requests: int, connections: int, repetition: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        with LocalCrowdServer(Path(directory) / "crowd.db", subprocess=True, workforce_size=0) as server:
            body = json.dumps({"input": INPUT}).encode()
            asyncio.run(measure(server.port, [presign(server, "PUT", "existing", body)], 1))
            gets = [presign(server, "GET", "existing", b"")] * requests
            puts = [presign(server, "PUT", f"r{repetition}-{n}", body) for n in range(requests)]
            get_rate, get_statuses = asyncio.run(measure(server.port, gets, connections))
            put_rate, put_statuses = asyncio.run(measure(server.port, puts, connections))
            assert set(get_statuses) == {200} and set(put_statuses) == {201}, "unexpected statuses"
            return {"GET": get_rate, "PUT": put_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    runs = [run(args.requests, args.connections, n) for n in range(args.repetitions)]
    for run_result in runs:
        print({k: round(v) for k, v in run_result.items()}, flush=True)
    get_rate = statistics.median(r["GET"] for r in runs)
    put_rate = statistics.median(r["PUT"] for r in runs)
    write_section(
        "server-capacity",
        f"""## Local server capacity (`bench/bench_server_capacity.py`)

Loopback, 2 cores, one server process (uvicorn + uvloop + httptools, SQLite WAL), no latency or
faults, no simulated workforce. Client: one asyncio process, {args.connections} keep-alive connections,
{args.requests} requests per run signed in advance with botocore SigV4 (every request is still fully
verified by the server). Median of {args.repetitions} runs.

| request | requests/s |
|---|---|
| GET (existing task) | {get_rate:.0f} |
| PUT (new task) | {put_rate:.0f} |
""",
    )


if __name__ == "__main__":
    main()
