"""The reverse proxy of docs/prolific.md, as written there, run by Debian's nginx in front of a gateway: a
participant goes through it over HTTPS from the study URL to the completion code, while the Crowd API and the
staff's pages stay out of reach."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fake_prolific import FakeProlific

from imagecontains_gateway.testing import self_signed_certificate
from tests.test_prolific_workforce import (
    ACCOUNT,
    IMAGES,
    Participant,
    connect,
    prolific_server,
    put_images,
    wait_until,
)

DOC = Path(__file__).parents[1] / "docs" / "prolific.md"


def documented_server_block() -> str:
    (block,) = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    return block


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def nginx() -> str:
    executable = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(executable).exists():
        # CI installs it (.ci/run): there a missing nginx is a failure, not a skip.
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)("nginx is missing (apt-get install -y nginx)")
    return executable


def test_a_participant_goes_through_the_documented_nginx_proxy(
    nginx: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    proxy_port = free_port()
    public_url = f"https://127.0.0.1:{proxy_port}"
    with FakeProlific() as fake:
        # As docs/prolific.md starts it: X-Forwarded-Proto believed from the proxy on this machine only.
        server = prolific_server(tmp_path, fake, public_url=public_url, forwarded_allow_ips=("127.0.0.1",))
        block = (
            documented_server_block()
            .replace("listen 443 ssl;", f"listen 127.0.0.1:{proxy_port} ssl;")
            .replace("crowd.example.com", "127.0.0.1")
            .replace("/etc/letsencrypt/live/127.0.0.1/fullchain.pem", cert)
            .replace("/etc/letsencrypt/live/127.0.0.1/privkey.pem", key)
            .replace("127.0.0.1:8787", f"127.0.0.1:{server.port}")
        )
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
            f"http {{\n access_log off;\n client_body_temp_path {tmp_path}/body;\n proxy_temp_path {tmp_path}/proxy;\n"
            f" {block}\n}}\n"
        )
        proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)])
        try:
            with server:
                wait_until(lambda: _listening(proxy_port), what="nginx listening")
                _take_part_through(fake, server, public_url, cert, monkeypatch)
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _take_part_through(fake: FakeProlific, server: Any, public_url: str, cert: str, monkeypatch: Any) -> None:
    hook = connect(monkeypatch, server)  # the Crowd API, directly: it is not behind the proxy
    put_images(hook, IMAGES[:2])
    wait_until(lambda: any(s["status"] == "ACTIVE" for s in fake.studies.values()), what="a published study")
    (study_id,) = fake.studies
    participant = Participant(fake, study_id, "pid-through-proxy")
    participant.browser.verify = cert
    participant.browser.trust_env = False  # else $REQUESTS_CA_BUNDLE would win over the session's verify
    # A browser sends its Origin with the answer form: the gateway must see the proxy's https origin.
    participant.browser.headers["Origin"] = public_url
    url = participant.start_url()
    assert url.startswith(public_url + "/prolific/start?")
    arrival = participant.browser.get(url, allow_redirects=False, timeout=30)
    assert "Secure" in arrival.headers["set-cookie"] and "HttpOnly" in arrival.headers["set-cookie"]
    page = participant.get(url)
    assert page.url == public_url + "/prolific/work" and 'id="question"' in page.text, page.text
    page = participant.go_on(page)
    assert page.status == 200 and page.field(r'id="code">(\w+)<'), page.text
    participant.submit(page)
    wait_until(lambda: fake.effects[("approve", participant.session_id)] == 1, what="approved")
    for inside in (f"/{ACCOUNT}/functions/image-contains/tasks/frame-0", "/dashboard", "/work", "/signin"):
        assert participant.browser.get(public_url + inside, timeout=30).status_code == 404, inside
