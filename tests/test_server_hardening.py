"""The server under hostile clients (issue 14): bounded memory, connections and sessions; nothing secret leaked.

Every test drives a real server over loopback; those about memory, the process list or file modes run it as a
child process (``subprocess=True``) and look at that process from outside.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import botocore.exceptions
import httpx
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from airflow_provider_imagecontains.exceptions import CrowdApiError, InvalidTaskError
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from demo.frames import generate_frames
from imagecontains_gateway import __main__ as server_cli
from imagecontains_gateway.config import DEMO_ACCOUNT, Account, ServerConfig
from imagecontains_gateway.testing import LocalCrowdServer
from imagecontains_gateway.ui import SESSION_COOKIES

MiB = 1024 * 1024
OTHER = Account("210987654321", "AKIAOTHERACCOUNT0001", "other-secret")
INPUT = {"image": {"url": "https://img.example.com/cam/1.jpg"}, "target": {"label": "person"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def signed_put(server: LocalCrowdServer, name: str, url: str, label: str) -> requests.Response:
    """PUT an image-contains task signed with the server's account, exactly as given (no client-side checks)."""
    account = server.account
    body = json.dumps({"input": {"image": {"url": url}, "target": {"label": label}}})
    request = AWSRequest(
        method="PUT", url=f"{server.endpoint_url}/{account.account_id}/functions/image-contains/tasks/{name}", data=body
    )
    SigV4Auth(Credentials(account.access_key_id, account.secret_access_key), "crowd", "us-east-1").add_auth(request)
    prepared = request.prepare()
    return requests.put(prepared.url, headers=dict(prepared.headers), data=prepared.body, timeout=10)


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return answer


# 1. Bounded memory before authentication


@pytest.mark.parametrize("path", ["/123456789012/functions/image-contains/tasks/big", "/"])
def test_an_unauthenticated_chunked_upload_is_refused_at_the_limit_with_flat_memory(crowd_server, path) -> None:
    server = crowd_server(subprocess=True, workforce_size=0)
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
        assert as_upload.status_code == 415 and SESSION_COOKIES["worker"] not in client.cookies
        padded = client.post("/signin", data={"token": token, "padding": "x" * 8192})
        assert padded.status_code == 413 and SESSION_COOKIES["worker"] not in client.cookies
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


# 9. Small ones: non-ASCII CSRF, a client leaving mid-body, chained AssumeRole


def test_a_non_ascii_csrf_value_is_refused_with_403(crowd_server) -> None:
    server = crowd_server(workforce="human")
    with httpx.Client(base_url=server.endpoint_url) as client:
        client.post("/signin", data={"token": server.issue_token("worker", "alice")})
        response = client.post("/work/answer", data={"task": "1", "answer": "yes", "csrf": "jeton-é"})
        assert response.status_code == 403


def test_a_client_leaving_mid_body_is_one_debug_line(crowd_server, caplog, monkeypatch) -> None:
    server = crowd_server(workforce_size=0)
    caplog.set_level(logging.DEBUG)
    # uvicorn's loggers do not propagate to the root logger, and Airflow's logging set-up disables loggers
    # that existed before it: listen to both directly.
    monkeypatch.setattr(logging.getLogger("imagecontains_gateway.guards"), "disabled", False)
    monkeypatch.setattr(logging.getLogger("uvicorn"), "handlers", [caplog.handler])
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                f"PUT /{server.account.account_id}/functions/image-contains/tasks/left HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\nContent-Length: 5000\r\n\r\n{'x' * 100}".encode()
            )
            time.sleep(0.2)
    time.sleep(0.5)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    left = [r for r in caplog.records if "left during the body" in r.getMessage()]
    assert [r.levelno for r in left] == [logging.DEBUG, logging.DEBUG]


def test_chained_assume_role_never_outlives_the_first_session(crowd_server) -> None:
    server = crowd_server(workforce_size=0, session_duration_seconds=3)
    account = server.account
    role_arn = f"arn:aws:iam::{account.account_id}:role/pipeline"

    def sts(credentials=None):
        keys = {"aws_access_key_id": account.access_key_id, "aws_secret_access_key": account.secret_access_key}
        if credentials is not None:
            keys = {
                "aws_access_key_id": credentials["AccessKeyId"],
                "aws_secret_access_key": credentials["SecretAccessKey"],
                "aws_session_token": credentials["SessionToken"],
            }
        return boto3.client("sts", endpoint_url=server.endpoint_url, region_name="us-east-1", **keys)

    first = sts().assume_role(RoleArn=role_arn, RoleSessionName="first")["Credentials"]
    time.sleep(1.5)
    chained = sts(first).assume_role(RoleArn=role_arn, RoleSessionName="chained")["Credentials"]
    assert chained["Expiration"] <= first["Expiration"]
    time.sleep(max(0.0, first["Expiration"].timestamp() - time.time()) + 1.2)
    with pytest.raises(botocore.exceptions.ClientError) as expired:
        sts(chained).get_caller_identity()
    assert expired.value.response["Error"]["Code"] == "ExpiredToken"


# 8. Only the hosts the server is configured for (DNS rebinding)


def signed_get(server: LocalCrowdServer, path: str, host: str) -> requests.Response:
    """A GET signed with the server's (public demo) key for ``host``, as a rebinding page could make, sent to loopback."""
    request = AWSRequest(method="GET", url=f"http://{host}{path}")
    account = server.account
    SigV4Auth(Credentials(account.access_key_id, account.secret_access_key), "crowd", "us-east-1").add_auth(request)
    prepared = request.prepare()
    headers = {**dict(prepared.headers), "Host": host}
    return requests.get(server.endpoint_url + path, headers=headers, timeout=10)


def test_requests_for_other_hosts_are_refused(crowd_server) -> None:
    server = crowd_server(workforce="human")
    path = f"/{server.account.account_id}/functions/image-contains/tasks/missing"
    port = server.port
    for host in (f"rebound.attacker.example:{port}", "rebound.attacker.example", f"127.0.0.1.attacker.example:{port}"):
        refused = signed_get(server, path, host)
        assert refused.status_code == 400 and refused.json()["code"] == "InvalidHost", host
        page = requests.get(server.endpoint_url + "/signin", headers={"Host": host}, timeout=10)
        assert page.status_code == 400, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        answered = signed_get(server, path, host)
        assert answered.status_code == 404 and answered.json()["code"] == "TaskNotFound", host
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # HTTP/1.0 without any Host
        sock.sendall(b"GET /signin HTTP/1.0\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 400 ")


def test_allowed_host_flag_adds_names(crowd_server) -> None:
    args = server_cli.parse_args(["--allowed-host", "crowd.example.com", "--allowed-host", "10.0.0.5"])
    allowed = server_cli.config_from_args(args).allowed_hosts
    assert allowed == ("crowd.example.com", "10.0.0.5")
    server = crowd_server(allowed_hosts=allowed)
    path = f"/{server.account.account_id}/functions/image-contains/tasks/missing"
    for host in ("crowd.example.com", f"CROWD.example.com:{server.port}", "10.0.0.5:8787", f"localhost:{server.port}"):
        assert requests.get(server.endpoint_url + path, headers={"Host": host}, timeout=10).status_code == 403, host
    assert (
        requests.get(server.endpoint_url + path, headers={"Host": "other.example.com"}, timeout=10).status_code == 400
    )


# 4. Sessions live on the server: they expire and end at sign-out


def test_a_copied_session_cookie_stops_working_at_sign_out_expiry_and_token_replacement(crowd_server) -> None:
    server = crowd_server(workforce="human", web_session_seconds=2)

    def signed_in_cookie(name: str) -> tuple[httpx.Client, str]:
        token = server.issue_token("worker", name)
        client = httpx.Client(base_url=server.endpoint_url)
        assert client.post("/signin", data={"token": token}).status_code == 303
        cookie = client.cookies[SESSION_COOKIES["worker"]]
        assert cookie != token and token not in cookie
        return client, cookie

    def works(cookie: str) -> bool:
        return httpx.get(server.endpoint_url + "/work", cookies={SESSION_COOKIES["worker"]: cookie}).status_code == 200

    alice, copied = signed_in_cookie("alice")
    assert works(copied)
    assert alice.post("/signout").status_code == 303
    assert not works(copied), "the session ended at sign-out, whoever holds a copy of the cookie"
    _, bobs = signed_in_cookie("bob")
    server.issue_token("worker", "bob")  # a new token for bob revokes his old one and its sessions
    assert not works(bobs)
    _, carols = signed_in_cookie("carol")
    time.sleep(2.2)
    assert not works(carols), "the session expired on the server"


# 5. Images scoped to the question held, or to the account's own tasks


def test_images_are_served_only_to_who_has_a_task_showing_them(crowd_server, tmp_path, monkeypatch) -> None:
    # With several accounts, each account's images live in <images-dir>/<account id>/ (issue 24).
    frames = tmp_path / "frames"
    generate_frames(frames / DEMO_ACCOUNT.account_id, 2)
    generate_frames(frames / OTHER.account_id, 3)
    server = crowd_server(workforce="human", images_dir=str(frames), accounts=[DEMO_ACCOUNT, OTHER])
    other = server.airflow_connection()
    other.update(login=OTHER.access_key_id, password=OTHER.secret_access_key)
    other["extra"] = {**other["extra"], "account_id": OTHER.account_id}
    monkeypatch.setenv("AIRFLOW_CONN_OTHER", json.dumps(other))

    def put(conn_id: str, name: str, image: str) -> None:
        url = f"{server.endpoint_url}/images/{image}"
        hook = ImageContainsHook(conn_id)
        try:
            hook.put_task("image-contains", name, {"image": {"url": url}, "target": {"label": "person"}})
        finally:
            hook.close()

    demo, others = DEMO_ACCOUNT.account_id, OTHER.account_id
    put("imagecontains_default", "first", f"{demo}/frame_0000.png")
    put("imagecontains_default", "second", f"{demo}/frame_0001.png")
    put("other", "others", f"{others}/frame_0002.png")
    # Naming another account's image, or one that does not exist, is refused at PUT with one answer for both:
    # the image never reaches this account's dashboard, and the PUT tells nothing of the folder.
    refusals = []
    for image in (f"{demo}/frame_0000.png", f"{others}/frame_0099.png", "frame_0000.png"):
        with pytest.raises(InvalidTaskError) as refused:
            put("other", "take", image)
        refusals.append(str(refused.value).replace(image, "…"))
    assert len(set(refusals)) == 1 and "no image in the folder 210987654321/" in refusals[0], refusals

    def client(kind: str, subject: str) -> httpx.Client:
        signed_in = httpx.Client(base_url=server.endpoint_url)
        assert signed_in.post("/signin", data={"token": server.issue_token(kind, subject)}).status_code == 303
        return signed_in

    images = [f"{demo}/frame_0000.png", f"{demo}/frame_0001.png", f"{others}/frame_0002.png"]

    def visible(signed_in: httpx.Client) -> list[int]:
        return [n for n, image in enumerate(images) if signed_in.get(f"/images/{image}").status_code == 200]

    alice = client("worker", "alice")
    assert visible(alice) == [], "no question held yet"
    assert 'src="' + f"{server.endpoint_url}/images/{images[0]}" in alice.get("/work").text
    assert visible(alice) == [0], "only the image of the question she holds"
    assert visible(client("dashboard", DEMO_ACCOUNT.account_id)) == [0, 1]
    assert visible(client("dashboard", OTHER.account_id)) == [2]


# 6. Secrets: never in the process list, never in a log line


def test_account_secrets_from_the_environment_stay_out_of_ps_and_query_credentials_out_of_logs(tmp_path) -> None:
    own = Account("111122223333", "AKIAOWNKEY0000000001", "own-secret-never-in-ps-or-logs")
    port = free_port()
    log_file = tmp_path / "server.log"
    command = [sys.executable, "-m", "imagecontains_gateway", "--db", str(tmp_path / "crowd.db")]
    command += ["--port", str(port), "--log-level", "info"]
    environment = {
        **os.environ,
        "IMAGECONTAINS_SERVER_ACCOUNTS": f"{own.account_id}:{own.access_key_id}:{own.secret_access_key}",
    }
    with log_file.open("wb") as output:
        process = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)
    try:
        sts = boto3.client(
            "sts",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id=own.access_key_id,
            aws_secret_access_key=own.secret_access_key,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                assert sts.get_caller_identity()["Account"] == own.account_id
                break
            except botocore.exceptions.EndpointConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, log_file.read_text()
                time.sleep(0.1)
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        assert own.secret_access_key not in command_line and own.access_key_id not in command_line
        query = (
            "X-Amz-Credential=AKIAQUERYCREDENTIAL%2F20260101&X-Amz-Signature=5ec7e75a9&X-Amz-Security-Token=T0KEN5EC"
        )
        requests.get(f"http://127.0.0.1:{port}/?Action=GetCallerIdentity&{query}", timeout=10)
        requests.get(f"http://127.0.0.1:{port}/123456789012/functions/f/tasks/t?{query.lower()}", timeout=10)
    finally:
        process.terminate()
        process.wait(timeout=30)
    logged = log_file.read_text()
    assert "GET /?Action=GetCallerIdentity&X-Amz-Credential=REDACTED" in logged, logged
    for secret in ("AKIAQUERYCREDENTIAL", "5ec7e75a9", "T0KEN5EC", "akiaquerycredential", "t0ken5ec"):
        assert secret.lower() not in logged.lower(), secret
    assert own.secret_access_key not in logged


def test_a_secret_on_the_command_line_warns_unless_it_is_the_public_demo_account(caplog, monkeypatch) -> None:
    monkeypatch.setattr(logging.getLogger(server_cli.__name__), "disabled", False)
    caplog.set_level(logging.WARNING)
    demo = f"{DEMO_ACCOUNT.account_id}:{DEMO_ACCOUNT.access_key_id}:{DEMO_ACCOUNT.secret_access_key}"
    server_cli.config_from_args(server_cli.parse_args(["--account", demo]))
    assert "visible to every user" not in caplog.text
    config = server_cli.config_from_args(server_cli.parse_args(["--account", "111122223333:AKIAOWN:own-secret"]))
    assert config.accounts[0].secret_access_key == "own-secret"
    assert "visible to every user" in caplog.text and "own-secret" not in caplog.text


# 3. Slow clients: bounded read time, head size and concurrent connections


def seconds_until_closed(sock: socket.socket, trickle: bytes, limit: float) -> tuple[float, bytes]:
    """Send ``trickle`` one byte every 0.1 s (nothing when empty) until the server closes; (seconds, its answer)."""
    started = time.monotonic()
    sock.settimeout(0.1)
    answer = b""
    position = 0
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            break
        if position < len(trickle):
            try:
                sock.sendall(trickle[position : position + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            position += 1
    return time.monotonic() - started, answer


def test_slow_and_idle_clients_are_disconnected_and_connections_are_bounded(crowd_server) -> None:
    server = crowd_server(
        workforce="human", request_read_timeout_seconds=1.5, first_byte_timeout_seconds=1.0, max_connections=3
    )
    port = server.port
    head = f"POST /signin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    trickles = {
        "headers trickled": (head + "X-Padding: " + "x" * 200).encode(),
        "body trickled": (
            head + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n"
        ).encode()
        + b"token="
        + b"x" * 194,
    }
    for what, trickle in trickles.items():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            seconds, answer = seconds_until_closed(sock, trickle, limit=8.0)
        assert seconds < 4.0, f"{what}: still open after {seconds:.1f} s"
        assert answer.startswith(b"HTTP/1.1 408 "), (what, answer[:60])

    for end in ("\r\n\r\n", ""):  # a whole head, and a header line that never ends
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET /signin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Padding: {'x' * 100_000}{end}".encode())
            assert read_answer(sock).startswith(b"HTTP/1.1 431 "), repr(end)

    # Issue 24: connections that never send a byte are closed after the first-byte timeout without an answer,
    # and do not count against max_connections; requests being handled do.
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
    try:
        assert requests.get(server.endpoint_url + "/signin", timeout=10).status_code == 200
        seconds, answer = seconds_until_closed(idle[0], b"", limit=8.0)
        assert seconds < 3.0 and answer == b"", f"idle: still open after {seconds:.1f} s"
    finally:
        for sock in idle:
            sock.close()
    holders = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        for holder in holders:  # a request whose body is still on its way is being handled
            holder.sendall(f"PUT /x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 10\r\n\r\n".encode())
        time.sleep(0.2)
        assert requests.get(server.endpoint_url + "/signin", timeout=10).status_code == 503
    finally:
        for holder in holders:
            holder.close()
    time.sleep(0.2)
    assert requests.get(server.endpoint_url + "/signin", timeout=10).status_code == 200


def test_a_tls_connection_that_never_shakes_hands_is_closed_at_the_first_byte_timeout(crowd_server) -> None:
    server = crowd_server(tls=True, workforce="human", first_byte_timeout_seconds=1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        seconds, answer = seconds_until_closed(sock, b"", limit=8.0)
    assert seconds < 3.0 and answer == b"", f"still open after {seconds:.1f} s (asyncio's default is 60 s)"
    assert requests.get(server.endpoint_url + "/signin", timeout=10, verify=server.ca_bundle).status_code == 200


def open_file_limit(pid: int) -> tuple[int, int]:
    """The process's (soft, hard) open-file limit, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit")


def test_idle_connections_cannot_use_up_the_open_files_and_the_operator_is_told(crowd_server, capfd) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # the server inherits a low soft limit...
    try:
        server = crowd_server(subprocess=True, workforce="human", first_byte_timeout_seconds=30.0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert open_file_limit(server.pid)[0] == hard  # ...and raises it at start

    # A process whose limit cannot be raised further: 300 idle connections pass what it can hold.
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (200, 200))
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        time.sleep(0.5)
        for _ in range(3):
            assert requests.get(server.endpoint_url + "/signin", timeout=10).status_code == 200
        assert len(os.listdir(f"/proc/{server.pid}/fd")) <= 200
    finally:
        for sock in idle:
            sock.close()
    assert "closed" in capfd.readouterr().err.split("the most this process can hold", 1)[-1]


# Held before issue 14, tried again here: SQL injection


def test_sql_in_names_labels_tokens_and_worker_names_is_only_data(crowd_server) -> None:
    server = crowd_server(workforce="human")

    def put(name: str, label: str) -> requests.Response:
        return signed_put(server, name, "https://img.example.com/a'b.jpg", label)

    injected = "x'%20OR%20'1'='1"
    assert put(injected, "person").json()["code"] == "InvalidInput"
    label = "'; DROP TABLE tasks; --"
    assert put("kept", label).status_code == 201
    assert put("kept-too", 'person" OR 1=1 --').status_code == 201
    assert [(t["task_name"], t["input"]["target"]["label"]) for t in server.tasks()] == [
        ("kept", label),
        ("kept-too", 'person" OR 1=1 --'),
    ]
    assert httpx.post(server.endpoint_url + "/signin", data={"token": "' OR '1'='1"}).status_code == 401
    name = "o'brien\"; DROP TABLE answers; --"
    with httpx.Client(base_url=server.endpoint_url) as worker:
        assert worker.post("/signin", data={"token": server.issue_token("worker", name)}).status_code == 303
        assert "DROP TABLE" in worker.get("/work").text.replace("&#34;", '"').replace("&#39;", "'")


# Issue 24: sign-in throttle per client, and proxy headers believed only from --forwarded-allow-ips


def failed_sign_ins(server: LocalCrowdServer, times: int, headers: dict[str, str] | None = None) -> list[int]:
    """Statuses of ``times`` sign-ins with an unknown token, each from a new X-Forwarded-For address."""
    return [
        requests.post(
            server.endpoint_url + "/signin",
            data={"token": "guess"},
            headers={"X-Forwarded-For": f"203.0.113.{n}", **(headers or {})},
            timeout=10,
        ).status_code
        for n in range(times)
    ]


def test_sign_in_is_throttled_per_client_and_forwarded_headers_count_only_from_named_proxies(crowd_server) -> None:
    server = crowd_server(workforce="human")
    # No proxy named: X-Forwarded-For is the client's own say, so every guess comes from one client.
    assert failed_sign_ins(server, 11) == [401] * 10 + [429]
    token = server.issue_token("worker", "ada")
    refused = requests.post(server.endpoint_url + "/signin", data={"token": token}, timeout=10)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60

    # Nor is X-Forwarded-Proto believed: a form claiming to come from https://<this server> is cross-site.
    def https_origin(server: LocalCrowdServer) -> dict[str, str]:
        return {"Origin": f"https://127.0.0.1:{server.port}", "X-Forwarded-Proto": "https"}

    other = crowd_server(workforce="human")
    token = other.issue_token("worker", "ada")
    claimed = requests.post(
        other.endpoint_url + "/signin", data={"token": token}, headers=https_origin(other), timeout=10
    )
    assert claimed.status_code == 403

    proxied = crowd_server(workforce="human", forwarded_allow_ips=("127.0.0.1",))
    assert failed_sign_ins(proxied, 11) == [401] * 11  # eleven clients behind the named proxy
    token = proxied.issue_token("worker", "ada")
    believed = requests.post(
        proxied.endpoint_url + "/signin",
        data={"token": token},
        headers=https_origin(proxied),
        allow_redirects=False,
        timeout=10,
    )
    assert believed.status_code == 303


# Issue 24: per-account quotas


def test_each_account_has_a_request_rate_and_a_cap_on_tasks_in_progress(crowd_server, monkeypatch) -> None:
    defaults = ServerConfig()
    # Sane defaults for a deployment (were 1,000,000 tasks in progress and no rate at all).
    assert (defaults.max_tasks_in_progress, defaults.account_requests_per_second) == (50_000, 500.0)
    server = crowd_server(
        workforce_size=0,
        accounts=[DEMO_ACCOUNT, OTHER],
        account_requests_per_second=2.0,
        account_request_burst=10,
        max_tasks_in_progress=3,
    )
    path = f"/{DEMO_ACCOUNT.account_id}/functions/image-contains/tasks/missing"
    answers = [signed_get(server, path, f"127.0.0.1:{server.port}") for _ in range(12)]
    assert [answer.status_code for answer in answers] == [404] * 10 + [429] * 2
    assert answers[-1].json()["code"] == "Throttled" and 1 <= int(answers[-1].headers["Retry-After"]) <= 1
    # The other account's allowance is its own.
    other = server.airflow_connection()
    other.update(login=OTHER.access_key_id, password=OTHER.secret_access_key)
    other["extra"] = {**other["extra"], "account_id": OTHER.account_id, "max_attempts": 1}
    monkeypatch.setenv("AIRFLOW_CONN_OTHER", json.dumps(other))
    hook = ImageContainsHook("other")
    for n in range(3):
        hook.put_task("image-contains", f"t{n}", INPUT)
    with pytest.raises(CrowdApiError, match="LimitExceeded"):
        hook.put_task("image-contains", "t3", INPUT)
    hook.close()


def test_assume_role_takes_duration_seconds_as_ascii_digits_within_aws_bounds(crowd_server) -> None:
    server = crowd_server(workforce_size=0)
    account = server.account
    signer = SigV4Auth(Credentials(account.access_key_id, account.secret_access_key), "sts", "us-east-1")

    def assume_role(duration: str) -> requests.Response:
        body = (
            "Action=AssumeRole&Version=2011-06-15&RoleSessionName=s&DurationSeconds="
            + requests.utils.quote(duration)
            + f"&RoleArn=arn%3Aaws%3Aiam%3A%3A{account.account_id}%3Arole%2Fpipeline"
        )
        request = AWSRequest(
            method="POST",
            url=server.endpoint_url + "/",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        signer.add_auth(request)
        prepared = request.prepare()
        return requests.post(prepared.url, headers=dict(prepared.headers), data=prepared.body, timeout=10)

    for duration in ("²", "9" * 5000, "899", "43201", "-1", "3600.0", "\uff11\uff12\uff13\uff14"):  # fullwidth 1234
        answer = assume_role(duration)
        assert answer.status_code == 400 and "<Code>ValidationError</Code>" in answer.text, (duration[:9], answer.text)
        assert "Traceback" not in answer.text
    assert assume_role("3600").status_code == 200


def test_export_answers_writes_an_owner_only_file_and_never_through_a_symlink(crowd_server, tmp_path) -> None:
    from imagecontains_gateway.__main__ import main

    server = crowd_server(worker_accuracy=1.0)
    ImageContainsHook().put_task("image-contains", "t", INPUT)
    deadline = time.monotonic() + 30
    while server.tasks()[0]["state"] == "processing":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    export = tmp_path / "answers.jsonl"
    export.write_text("old\n")
    export.chmod(0o644)  # an earlier export, readable by everyone
    main(["export-answers", "--db", server.db_path, "--output", str(export)])
    assert stat.S_IMODE(export.stat().st_mode) == 0o600 and export.read_text().count("\n") >= 2
    fresh = tmp_path / "fresh.jsonl"
    main(["export-answers", "--db", server.db_path, "--output", str(fresh)])
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    target, link = tmp_path / "someone-elses.txt", tmp_path / "link.jsonl"
    target.write_text("kept\n")
    link.symlink_to(target)
    with pytest.raises(SystemExit, match="symbolic link"):
        main(["export-answers", "--db", server.db_path, "--output", str(link)])
    assert target.read_text() == "kept\n"


def test_a_put_with_a_hidden_character_label_or_credentials_in_its_url_is_refused(crowd_server) -> None:
    server = crowd_server(workforce="human")
    url = "https://img.example.com/a.jpg"
    for name, image, label in [
        ("reversed", url, "\u202enosrep"),
        ("zero-width", url, "per\u200bson"),
        ("credentials", "https://user:secret@img.example.com/a.jpg", "person"),
    ]:
        answer = signed_put(server, name, image, label)
        assert answer.status_code == 400 and answer.json()["code"] == "InvalidInput", (name, answer.text)
        assert "secret" not in answer.text
    assert server.tasks() == []
