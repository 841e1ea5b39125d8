"""Shared test set-up: an isolated Airflow home for the whole session, before Airflow is imported."""

from __future__ import annotations

import os
import tempfile

# Tests must never touch a developer's real Airflow home or DAGs.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="imagecontains-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(_AIRFLOW_HOME, "dags")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import pytest  # noqa: E402  (after the Airflow environment above)


@pytest.fixture
def crowd_server(tmp_path, monkeypatch):
    """Factory: ``crowd_server(**config_overrides)`` starts a local crowd server (in-process) and
    points the ``imagecontains_default`` connection at it; ``crowd_server.current`` is the last one."""
    from imagecontains_gateway.testing import LocalCrowdServer

    servers = []

    def start(**overrides):
        server = LocalCrowdServer(tmp_path / f"crowd-{len(servers)}.db", **overrides)
        server.start()
        servers.append(server)
        for name, value in server.airflow_connection_env().items():
            monkeypatch.setenv(name, value)
        start.current = server
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """Migrate the session's SQLite Airflow database once (for ``airflow dags test`` runs); returns AIRFLOW_HOME.

    A copy of the fresh database is kept as ``airflow.pristine.db`` for tests that need an Airflow home of
    their own without migrating again."""
    import shutil
    import subprocess
    import sys

    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, timeout=300)
    shutil.copyfile(os.path.join(_AIRFLOW_HOME, "airflow.db"), os.path.join(_AIRFLOW_HOME, "airflow.pristine.db"))
    return _AIRFLOW_HOME


@pytest.fixture(scope="module")
def s3_endpoint():
    """A local S3 (moto's server mode) on loopback; returns its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3_client(s3_endpoint):
    """Factory: ``s3_client(**client_kwargs)`` is a boto3 S3 client of the local S3 with the test keys."""
    import boto3
    from botocore.config import Config

    def make(**kwargs):
        return boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(signature_version="s3v4"),
            **kwargs,
        )

    return make


@pytest.fixture(scope="module")
def chromium():
    """Debian's headless Chromium driven by Playwright (never a downloaded browser build).

    Missing Chromium skips the browser tests on a developer's machine and fails them in CI.
    Module-scoped: Playwright's sync API must not stay open while other tests run their own event loops.
    """
    import shutil

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(executable):
        reason = f"Chromium is missing at {executable} (Debian: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        # The machine's network is closed: background connections would only fail, many at a time.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=args)
        yield browser
        browser.close()
