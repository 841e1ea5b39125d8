"""Peak memory of the server (its own process) while clients try to upload 1 GiB chunked bodies, unauthenticated.

For each route (a crowd task PUT, STS, the sign-in form) and for 16 such uploads at once, the growth of the
server's VmHWM (peak resident memory) is compared with the baseline measured in the same run: the growth from
300 ordinary signed PUTs. Medians of ``--repetitions`` runs, each on a fresh server process; results in
docs/reliability.md (``<!-- bench:server-memory -->``). About a minute on 2 cores::

    .venv/bin/python bench/bench_server_memory.py [--repetitions 3]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from report import DOCS, write_section

from imagecontains_gateway.testing import LocalCrowdServer

GiB = 1024**3
MiB = 1024**2
CHUNK = b"x" * (256 * 1024)


def peak_memory(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def chunked_upload(port: int, method: str, path: str, total: int = GiB) -> int:
    """Try to send ``total`` bytes as a chunked body; return how many the server took before hanging up."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
        if path == "/signin":
            head += "Content-Type: application/x-www-form-urlencoded\r\n"
        sock.sendall((head + "\r\n").encode())
        try:
            while sent < total:
                sock.sendall(b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n")
                sent += len(CHUNK)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
    return sent


def signed_puts(server: LocalCrowdServer, count: int) -> None:
    account = server.account
    signer = SigV4Auth(Credentials(account.access_key_id, account.secret_access_key), "crowd", "us-east-1")
    with requests.Session() as session:
        for n in range(count):
            body = {"input": {"image": {"url": f"https://img.example.com/{n}.jpg"}, "target": {"label": "person"}}}
            path = f"/{account.account_id}/functions/image-contains/tasks/baseline-{n}"
            request = AWSRequest(method="PUT", url=server.endpoint_url + path, data=json.dumps(body).encode())
            signer.add_auth(request)
            prepared = request.prepare()
            session.put(prepared.url, headers=dict(prepared.headers), data=prepared.body, timeout=30).raise_for_status()


def growth(action: Callable[[LocalCrowdServer], int]) -> tuple[int, int]:
    """(VmHWM growth of a fresh server during ``action``, bytes the action got the server to take)."""
    with tempfile.TemporaryDirectory() as scratch:
        with LocalCrowdServer(
            Path(scratch, "crowd.db"), subprocess=True, workforce="human", workforce_size=0
        ) as server:
            chunked_upload(server.port, "PUT", "/123456789012/functions/image-contains/tasks/warm", 64 * 1024)
            signed_puts(server, 5)  # every code path warmed once
            before = peak_memory(server.pid)
            taken = action(server)
            return peak_memory(server.pid) - before, taken


def concurrent_uploads(server: LocalCrowdServer, count: int = 16) -> int:
    taken: list[int] = []
    path = "/123456789012/functions/image-contains/tasks/big"
    threads = [
        threading.Thread(target=lambda: taken.append(chunked_upload(server.port, "PUT", path))) for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return max(taken)


SCENARIOS: dict[str, Callable[[LocalCrowdServer], int]] = {
    "baseline: 300 signed PUTs of small tasks": lambda server: signed_puts(server, 300) or 0,
    "1 GiB chunked PUT to a task, unsigned": lambda server: chunked_upload(
        server.port, "PUT", "/123456789012/functions/image-contains/tasks/big"
    ),
    "1 GiB chunked POST to STS, unsigned": lambda server: chunked_upload(server.port, "POST", "/"),
    "1 GiB chunked POST to /signin (url-encoded form)": lambda server: chunked_upload(server.port, "POST", "/signin"),
    "16 concurrent 1 GiB chunked PUTs": concurrent_uploads,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for scenario, action in SCENARIOS.items():
        runs = [growth(action) for _ in range(args.repetitions)]
        grown = statistics.median(g for g, _ in runs) / MiB
        taken = statistics.median(t for _, t in runs) / MiB
        rows.append((scenario, grown, taken))
        print(f"{scenario}: +{grown:.2f} MiB peak, client got {taken:.1f} MiB out before the server hung up")
    baseline = rows[0][1]
    lines = [
        f"Server process VmHWM growth, median of {args.repetitions} fresh servers (loopback, 2 shared cores); "
        "target: under 10 MB added.",
        "",
        "| scenario | peak memory added (MiB) | vs. baseline (MiB) | most bytes one client got out before the server hung up |",
        "|---|---|---|---|",
    ]
    for scenario, grown, taken in rows:
        sent = "-" if scenario.startswith("baseline") else f"{taken:.1f} MiB of 1024 MiB"
        lines.append(f"| {scenario} | {grown:.2f} | {grown - baseline:+.2f} | {sent} |")
    write_section("server-memory", "\n".join(lines), DOCS / "reliability.md")


if __name__ == "__main__":
    main()
