"""The service recipe of gateway/deploy/ as far as this machine allows: the systemd units pass
``systemd-analyze verify``, the backup unit's command copies the database while the gateway writes and the copy
restores every task, and nginx in front terminates TLS for signed API calls, the worker page's sign-in and Prolific
participants, with per-client limits."""

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
from fake_prolific import FakeProlific
from prolific_participants import IMAGES, Participant, prolific_server, wait_until
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


class Nginx:
    """nginx with the recipe's site on a loopback port, in front of one gateway; :attr:`url` is its https URL."""

    def __init__(self, executable: str, folder: Path) -> None:
        self.executable, self.folder = executable, folder
        self.certfile, self.keyfile = self_signed_certificate(folder)
        self.port = free_port()
        self.url = f"https://localhost:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def serve(self, gateway: LocalCrowdServer) -> None:
        folder = self.folder
        (folder / "site.conf").write_text(nginx_site(self.port, gateway.endpoint_url, self.certfile, self.keyfile))
        (folder / "nginx.conf").write_text(
            f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nworker_processes 1;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
            f"  fastcgi_temp_path {folder}/fastcgi;\n  uwsgi_temp_path {folder}/uwsgi;\n"
            f"  scgi_temp_path {folder}/scgi;\n  include {folder}/site.conf;\n}}\n"
        )
        command = [self.executable, "-e", f"{folder}/error.log", "-p", str(folder), "-c", f"{folder}/nginx.conf"]
        self.process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(self.url + "/static/style.css", timeout=2)
                return
            except requests.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((folder / "error.log").read_text()) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def nginx(tmp_path, monkeypatch):
    """nginx with the recipe's site (:class:`Nginx`); ``nginx.serve(gateway)`` starts it in front of ``gateway``.
    Its certificate is the one clients trust (``$REQUESTS_CA_BUNDLE``)."""
    proxy = Nginx(need("nginx"), tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", proxy.certfile)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def behind_nginx(crowd_server, nginx):
    """A gateway of the team's staff and nginx in front of it; returns (gateway, the proxy's https URL)."""
    # As the service unit runs it: X-Forwarded-* believed from the proxy on loopback only.
    server = crowd_server(workforce_size=0, workforce="human", forwarded_allow_ips=("127.0.0.1",))
    nginx.serve(server)
    return server, nginx.url


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


def test_a_prolific_participant_goes_through_nginx_from_the_study_url_to_the_code(nginx, tmp_path) -> None:
    with FakeProlific() as fake:
        # As docs/prolific.md starts it: participants reach the gateway at the proxy's https URL.
        server = prolific_server(tmp_path, fake, public_url=nginx.url, forwarded_allow_ips=("127.0.0.1",))
        with server:
            nginx.serve(server)
            for name, url in zip(("frame-0", "frame-1"), IMAGES[:2], strict=True):
                task = {"input": {"image": {"url": url}, "target": {"label": "person"}}}
                assert signed(server, "PUT", task_path(server, name), task).status_code == 201
            wait_until(lambda: any(s["status"] == "ACTIVE" for s in fake.studies.values()), what="a published study")
            (study_id,) = fake.studies
            participant = Participant(fake, study_id, "pid-through-proxy")
            # A browser sends its Origin with the answer form: the gateway must see the proxy's https origin.
            participant.browser.headers["Origin"] = nginx.url
            url = participant.start_url()
            assert url.startswith(nginx.url + "/prolific/start?")
            arrival = participant.browser.get(url, allow_redirects=False, timeout=30)
            assert "Secure" in arrival.headers["set-cookie"] and "HttpOnly" in arrival.headers["set-cookie"]
            page = participant.get(url)
            assert page.url == nginx.url + "/prolific/work" and 'id="question"' in page.text, page.text
            page = participant.go_on(page)
            assert page.status == 200 and page.field(r'id="code">(\w+)<'), page.text
            participant.submit(page)
            wait_until(lambda: fake.effects[("approve", participant.session_id)] == 1, what="approved")
            # Made-up arrivals from one client: nginx refuses them past the sign-in rate, before the gateway asks
            # Prolific about each.
            asked_before = fake.requests[("GET", f"/api/v1/submissions/{'f' * 24}/")]
            made_up = url.replace(participant.session_id, "f" * 24)
            statuses = [requests.get(made_up, timeout=10).status_code for _ in range(30)]
            assert statuses.count(429) >= 5 and set(statuses) <= {403, 429}, statuses
            assert fake.requests[("GET", f"/api/v1/submissions/{'f' * 24}/")] - asked_before <= 25
