"""The service recipe of gateway/deploy/ as far as this machine allows: the systemd units pass
``systemd-analyze verify``, the backup unit's command copies the database while the gateway writes and the copy
restores every task, and nginx in front terminates TLS for signed API calls and the worker page's sign-in."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from test_server import signed, task_path

from imagecontains_gateway.testing import LocalCrowdServer, self_signed_certificate

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
INPUT = {"image": {"url": "https://img.example.com/a.jpg"}, "target": {"label": "person"}}


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        # .ci/run installs them: in CI a missing program is a failure, not a skip.
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(f"{program} is not installed")
    return path


def exec_start(unit: str) -> list[str]:
    """The unit's ExecStart as the argv systemd runs (``$$`` and ``%%`` unescaped)."""
    [line] = [line for line in (DEPLOY / unit).read_text().splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart=").replace("$$", "$").replace("%%", "%"))


def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path) -> None:
    analyze = need("systemd-analyze")
    # verify checks that ExecStart's program exists: this environment's, in place of /opt/imagecontains-gateway.
    server = Path(sys.executable).with_name("imagecontains-server")
    for unit in DEPLOY.glob("imagecontains-gateway*.*"):
        text = unit.read_text().replace("/opt/imagecontains-gateway/bin/imagecontains-server", str(server))
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(path) for path in tmp_path.iterdir())
    assert len(units) == 3
    result = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_a_backup_taken_while_the_gateway_writes_restores_every_task(crowd_server, tmp_path) -> None:
    need("sqlite3")
    server = crowd_server(workforce_size=0)
    for number in range(40):
        assert signed(server, "PUT", task_path(server, f"before-{number}"), {"input": INPUT}).status_code == 201
    stop = threading.Event()

    def keep_writing() -> None:
        number = 0
        while not stop.is_set():
            signed(server, "PUT", task_path(server, f"during-{number}"), {"input": INPUT})
            number += 1

    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    command = [
        part.replace("/var/lib/imagecontains-gateway/crowd.db", server.db_path).replace(
            "/var/backups/imagecontains-gateway", str(backups)
        )
        for part in exec_start("imagecontains-gateway-backup.service")
    ]
    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        time.sleep(0.2)
        subprocess.run(["sh", "-c", 'umask 077 && exec "$@"', "sh", *command], check=True, timeout=60)
    finally:
        stop.set()
        writer.join()
    [backup] = backups.glob("crowd-*.db")
    assert backup.stat().st_mode & 0o077 == 0
    with sqlite3.connect(backup) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    # The README's restore: stop, remove the WAL files, put the copy in place, start.
    server.stop()
    database = Path(server.db_path)
    for stale in (Path(f"{database}-wal"), Path(f"{database}-shm")):
        stale.unlink(missing_ok=True)
    shutil.copyfile(backup, database)
    restored = LocalCrowdServer(database, workforce_size=0)
    with restored:
        names = {task["task_name"] for task in restored.tasks()}
        assert {f"before-{number}" for number in range(40)} <= names
        response = signed(restored, "GET", task_path(restored, "before-0"))
        assert response.status_code == 200 and response.json()["input"] == INPUT
        assert signed(restored, "PUT", task_path(restored, "after"), {"input": INPUT}).status_code == 201


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_site(port: int, upstream: str, certfile: str, keyfile: str) -> str:
    """The recipe's server block, listening on a loopback port for localhost with a test certificate."""
    site = (DEPLOY / "nginx-imagecontains-gateway.conf").read_text()
    for old, new in [
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("listen [::]:443 ssl;", ""),
        ("server_name gateway.example.com;", "server_name localhost;"),
        ("/etc/letsencrypt/live/gateway.example.com/fullchain.pem", certfile),
        ("/etc/letsencrypt/live/gateway.example.com/privkey.pem", keyfile),
        ("http://127.0.0.1:8787", upstream),
    ]:
        assert old in site
        site = site.replace(old, new)
    return site


@pytest.fixture
def behind_nginx(crowd_server, tmp_path, monkeypatch):
    """A gateway and nginx in front of it with the recipe's site; returns (gateway, the proxy's https URL)."""
    nginx = need("nginx")
    # As the service unit runs it: X-Forwarded-* believed from the proxy on loopback only.
    server = crowd_server(workforce_size=0, workforce="human", forwarded_allow_ips=("127.0.0.1",))
    certfile, keyfile = self_signed_certificate(tmp_path)
    port = free_port()
    (tmp_path / "site.conf").write_text(nginx_site(port, server.endpoint_url, certfile, keyfile))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nworker_processes 1;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n  proxy_temp_path {tmp_path}/proxy;\n"
        f"  fastcgi_temp_path {tmp_path}/fastcgi;\n  uwsgi_temp_path {tmp_path}/uwsgi;\n"
        f"  scgi_temp_path {tmp_path}/scgi;\n  include {tmp_path}/site.conf;\n}}\n"
    )
    command = [nginx, "-e", f"{tmp_path}/error.log", "-p", str(tmp_path), "-c", f"{tmp_path}/nginx.conf"]
    process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.PIPE)
    proxy_url = f"https://localhost:{port}"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certfile)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(proxy_url + "/signin", timeout=2)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "error.log").read_text()) from None
                time.sleep(0.05)
        yield server, proxy_url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_nginx_terminates_tls_for_signed_calls_and_the_worker_pages(behind_nginx) -> None:
    server, proxy_url = behind_nginx
    # SigV4 over the Host the client signed (localhost:PORT), passed on unchanged.
    through_proxy = SimpleNamespace(endpoint_url=proxy_url, account=server.account)
    assert signed(through_proxy, "PUT", task_path(server, "via-proxy"), {"input": INPUT}).status_code == 201
    assert signed(through_proxy, "GET", task_path(server, "via-proxy")).json()["taskName"] == "via-proxy"

    # The sign-in form posted from the https page: its Origin matches only with X-Forwarded-Proto.
    token = server.issue_token("worker", "alice")
    origin = {"Origin": proxy_url}
    signin = requests.post(
        proxy_url + "/signin", data={"token": token}, headers=origin, allow_redirects=False, timeout=10
    )
    assert signin.status_code == 303 and signin.cookies
    direct = requests.post(
        server.endpoint_url + "/signin",
        data={"token": server.issue_token("worker", "bob")},
        headers={"Origin": proxy_url, "Host": f"localhost:{proxy_url.rsplit(':', 1)[1]}"},
        allow_redirects=False,
        timeout=10,
    )
    assert direct.status_code != 303


def test_nginx_limits_each_client_and_replaces_its_forwarded_for(behind_nginx) -> None:
    _, proxy_url = behind_nginx
    # A client sending its own, changing X-Forwarded-For is still one client to the gateway's sign-in throttle.
    answers = [
        requests.post(
            proxy_url + "/signin",
            data={"token": "guess"},
            headers={"Origin": proxy_url, "X-Forwarded-For": f"203.0.113.{guess}"},
            allow_redirects=False,
            timeout=10,
        )
        for guess in range(11)
    ]
    assert [answer.status_code for answer in answers] == [401] * 10 + [429]
    assert "Too many unknown tokens" in answers[-1].text and answers[-1].headers["Retry-After"]
    # A burst from one address: nginx answers 429 past its per-client rate (20/s, burst 40), before the gateway.
    # Sent from 10 threads at once, so that a slow, busy machine still sends them faster than the rate refills.
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(
            pool.map(lambda _: requests.get(proxy_url + "/static/style.css", timeout=10).status_code, range(160))
        )
    assert 200 in statuses and statuses.count(429) >= 40, statuses
