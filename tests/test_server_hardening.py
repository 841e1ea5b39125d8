"""The server under hostile clients (issue 14): bounded memory, connections and sessions; nothing secret leaked.

Every test drives a real server over loopback; those about memory, the process list or file modes run it as a
child process (``subprocess=True``) and look at that process from outside.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import httpx
import pytest

from airflow_provider_imagecontains.server.testing import LocalCrowdServer
from airflow_provider_imagecontains.server.ui import SESSION_COOKIE

MiB = 1024 * 1024
INPUT = {"image": {"url": "https://img.example.com/cam/1.jpg"}, "target": {"label": "person"}}


def peak_memory_bytes(pid: int) -> int:
    """The process's peak resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def chunked_upload(port: int, method: str, path: str, total: int, headers: str = "") -> tuple[int, bytes]:
    """Send ``total`` bytes as a chunked body without signing; (bytes the server took, what it answered)."""
    sent = 0
    chunk = b"x" * (256 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n{headers}\r\n".encode()
        )
        try:
            while sent < total:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and hung up: what a bounded server does
        return sent, read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return answer


@pytest.fixture
def process_server(tmp_path):
    """Factory: a server in a child process (so its memory, files and command line are its own)."""
    servers: list[LocalCrowdServer] = []

    def start(**overrides) -> LocalCrowdServer:
        server = LocalCrowdServer(tmp_path / f"crowd-{len(servers)}.db", subprocess=True, **overrides)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# 1. Bounded memory before authentication


@pytest.mark.parametrize("path", ["/123456789012/functions/image-contains/tasks/big", "/"])
def test_an_unauthenticated_chunked_upload_is_refused_at_the_limit_with_flat_memory(process_server, path) -> None:
    server = process_server(workforce_size=0)
    chunked_upload(server.port, "PUT" if path != "/" else "POST", path, 64 * 1024)  # warm up the request path
    before = peak_memory_bytes(server.pid)
    started = time.monotonic()
    sent, answer = chunked_upload(server.port, "PUT" if path != "/" else "POST", path, 96 * MiB)
    grown = peak_memory_bytes(server.pid) - before
    assert grown < 8 * MiB, f"the server grew by {grown / MiB:.1f} MiB"
    assert sent < 96 * MiB, "the server read the whole body"
    assert answer == b"" or b" 413 " in answer.split(b"\r\n", 1)[0]
    assert time.monotonic() - started < 10
    assert server.tasks() == []


# 2. Sign-in takes only the page's own small form


def send_head(port: int, head: str) -> bytes:
    """Send only a request's head (promising a body) and return what the server answers without the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        return read_answer(sock)


def test_sign_in_refuses_uploads_and_oversized_forms_before_reading_them(crowd_server) -> None:
    server = crowd_server(workforce="human")
    token = server.issue_token("worker", "alice")
    host = f"Host: 127.0.0.1:{server.port}\r\n"
    huge = send_head(
        server.port,
        f"POST /signin HTTP/1.1\r\n{host}Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {40 * MiB}\r\n\r\n",
    )
    assert huge.startswith(b"HTTP/1.1 415 "), huge[:80]
    with httpx.Client(base_url=server.endpoint_url) as client:
        as_upload = client.post("/signin", files={"token": (None, token)}, data={"token": token})
        assert as_upload.status_code == 415 and SESSION_COOKIE not in client.cookies
        padded = client.post("/signin", data={"token": token, "padding": "x" * 8192})
        assert padded.status_code == 413 and SESSION_COOKIE not in client.cookies
        signed_in = client.post("/signin", data={"token": token})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/work"


# 7. The database, its WAL and its shared-memory file are the owner's only


def test_the_database_and_its_wal_and_shm_files_are_readable_by_the_owner_only(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.db"
        older = tmp_path / "older.db"
        older.touch(mode=0o644)  # a database file made before this rule
        for db in (fresh, older):
            server = LocalCrowdServer(db, subprocess=True, workforce="human")
            server.issue_token("worker", "alice")  # the token command may be the first to create the file
            with server:  # it writes (the accounts' balances) on start
                files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
                assert all(file.exists() for file in files)
                modes = {file.name: oct(stat.S_IMODE(file.stat().st_mode)) for file in files}
                assert set(modes.values()) == {"0o600"}, modes
    finally:
        os.umask(previous)
