"""The fronting proxy of docs/deployment.md, run as written there (Debian's nginx) in front of a real gateway.

The nginx configuration is read from the document itself, so the one the operator copies is the one tested;
only the ports and the test's certificate are put in. Skipped where nginx is not installed (apt-get install nginx).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from airflow_provider_imagecontains.server.testing import self_signed_certificate
from tests.test_server_hardening import free_port

DEPLOYMENT_DOC = Path(__file__).parent.parent / "docs" / "deployment.md"
PUBLIC_NAME = "crowd.example.com"


def documented_nginx_config() -> str:
    blocks = re.findall(r"```nginx\n(.*?)```", DEPLOYMENT_DOC.read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/deployment.md must hold exactly one nginx block"
    return blocks[0]


@pytest.fixture
def nginx_proxy(tmp_path, crowd_server):
    """The documented nginx on a free loopback port, in front of a gateway run as the document says."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx)")
    gateway = crowd_server(workforce="human", forwarded_allow_ips=("127.0.0.1",), allowed_hosts=(PUBLIC_NAME,))
    certfile, keyfile = self_signed_certificate(tmp_path)
    port = free_port()
    site = (
        documented_nginx_config()
        .replace("server 127.0.0.1:8787;", f"server 127.0.0.1:{gateway.port};")
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
        .replace(f"/etc/ssl/certs/{PUBLIC_NAME}.pem", certfile)
        .replace(f"/etc/ssl/private/{PUBLIC_NAME}.key", keyfile)
    )
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for directory in temp.values():
        directory.mkdir()
    main = (
        f"{'user root;' if os.geteuid() == 0 else ''}\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log warn;\nevents {{ worker_connections 512; }}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {temp['body']};\nproxy_temp_path {temp['proxy']};\n"
        f"fastcgi_temp_path {temp['fastcgi']};\nuwsgi_temp_path {temp['uwsgi']};\nscgi_temp_path {temp['scgi']};\n"
        f"{site}\n}}\n"
    )
    (tmp_path / "nginx.conf").write_text(main)
    process = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            requests.get(url + "/static/style.css", verify=certfile, timeout=2, headers={"Host": PUBLIC_NAME})
            break
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"nginx did not start: {process.communicate()[1].decode()}") from None
            time.sleep(0.05)
    yield gateway, url, certfile
    process.terminate()
    process.wait(timeout=10)


def test_the_documented_nginx_config_forwards_what_the_gateway_needs_and_limits_each_client(nginx_proxy) -> None:
    gateway, url, certfile = nginx_proxy
    public = {"Host": PUBLIC_NAME}
    origin = {**public, "Origin": f"https://{PUBLIC_NAME}"}
    with requests.Session() as worker:
        token = gateway.issue_token("worker", "ada")
        # Accepted as same-origin only if the gateway believed the proxy's X-Forwarded-Proto: https.
        signed_in = worker.post(
            url + "/signin", data={"token": token}, headers=origin, allow_redirects=False, verify=certfile
        )
        assert signed_in.status_code == 303, signed_in.text
        page = worker.get(url + "/work", headers=public, allow_redirects=False, verify=certfile)
        assert page.status_code == 200

    # A client that sends its own, changing X-Forwarded-For is still one client: nginx replaces the header.
    answers = []
    for guess in range(11):
        spoofed = {**origin, "X-Forwarded-For": f"203.0.113.{guess}"}
        answers.append(requests.post(url + "/signin", data={"token": "x"}, headers=spoofed, verify=certfile))
    assert [answer.status_code for answer in answers] == [401] * 10 + [429]
    assert "Too many unknown tokens" in answers[-1].text and answers[-1].headers["Retry-After"]

    # A burst from one address: nginx answers 429 past its per-client rate.
    statuses = [requests.get(url + "/static/style.css", headers=public, verify=certfile).status_code for _ in range(80)]
    assert 200 in statuses and statuses.count(429) >= 20, statuses
