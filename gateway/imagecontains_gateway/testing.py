"""Start a local Crowd API server on a free loopback port, in this process or as a child process.

The one way tests, benchmarks and the demo start a server::

    with LocalCrowdServer(tmp_path / "crowd.db", worker_accuracy=0.9) as server:
        hook_connection = server.airflow_connection()
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import subprocess as sp
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import uvicorn

from imagecontains_gateway.app import build_uvicorn_server
from imagecontains_gateway.config import REGION_NAME, Account, ServerConfig
from imagecontains_gateway.faults import STATS_PATH
from imagecontains_gateway.human import WorkforceStore
from imagecontains_gateway.store import TaskStore

_LOOPBACK = "127.0.0.1"
_START_TIMEOUT_SECONDS = 30.0


class LocalCrowdServer:
    """A local Crowd API server for tests, benchmarks and the demo.

    :param db_path: the SQLite file; restarting on the same file continues where the server stopped.
    :param subprocess: run the server as a child process (needed for :meth:`kill`, and to keep its
        CPU work off the caller's interpreter) instead of a thread of this process.
    :param tls: serve HTTPS with a self-signed certificate made for this server; :attr:`ca_bundle` is its
        file, which :meth:`airflow_connection` passes as the connection's ``verify``.
    :param config_overrides: fields of :class:`~imagecontains_gateway.config.ServerConfig`.
    """

    def __init__(
        self, db_path: str | os.PathLike[str], *, subprocess: bool = False, tls: bool = False, **config_overrides: Any
    ) -> None:
        self.db_path = str(db_path)
        self.subprocess = subprocess
        self.port = _free_port()
        self.endpoint_url = f"{'https' if tls else 'http'}://{_LOOPBACK}:{self.port}"
        if config_overrides.get("workforce") == "prolific":  # participants reach this very server
            config_overrides.setdefault("public_url", self.endpoint_url)
        # Tests and benchmarks measure the API itself: no per-account request rate unless they give one.
        self.config = ServerConfig().replace(
            **{"expose_stats": True, "account_requests_per_second": 0.0, **config_overrides}
        )
        self.account: Account = self.config.accounts[0]
        self._tls_dir = tempfile.TemporaryDirectory(prefix="imagecontains-tls-") if tls else None
        self.ca_bundle: str | None = None
        self._keyfile: str | None = None
        if self._tls_dir is not None:
            self.ca_bundle, self._keyfile = self_signed_certificate(Path(self._tls_dir.name))
        self._thread: threading.Thread | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._process: sp.Popen[bytes] | None = None
        self._config_dir: tempfile.TemporaryDirectory[str] | None = None

    def __repr__(self) -> str:
        return f"LocalCrowdServer(endpoint_url={self.endpoint_url!r}, db_path={self.db_path!r})"

    def __enter__(self) -> LocalCrowdServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Life cycle

    def start(self) -> None:
        """Start serving on :attr:`endpoint_url` (the same port after a stop, kill or restart)."""
        if self.running:
            return
        if self.subprocess:
            self._start_process()
        else:
            self._start_thread()

    def stop(self) -> None:
        """Shut down gracefully (in-flight requests finish)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=_START_TIMEOUT_SECONDS)
            self._process = None
        if self._uvicorn is not None and self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join(timeout=_START_TIMEOUT_SECONDS)
            self._uvicorn = self._thread = None
        if self._config_dir is not None:
            self._config_dir.cleanup()
            self._config_dir = None

    def kill(self) -> None:
        """SIGKILL the server process (subprocess mode); in-process, exit at once without a graceful shutdown."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=_START_TIMEOUT_SECONDS)
            self._process = None
        if self._uvicorn is not None and self._thread is not None:
            self._uvicorn.force_exit = self._uvicorn.should_exit = True
            self._thread.join(timeout=_START_TIMEOUT_SECONDS)
            self._uvicorn = self._thread = None

    def restart(self) -> None:
        """Stop, then start again on the same database file and port."""
        self.stop()
        self.start()

    @property
    def pid(self) -> int:
        """The server's process id (this process's own id in-process)."""
        return self._process.pid if self._process is not None else os.getpid()

    @property
    def running(self) -> bool:
        return (self._process is not None and self._process.poll() is None) or (
            self._thread is not None and self._thread.is_alive()
        )

    # What clients need

    def airflow_connection(self) -> dict[str, Any]:
        """The fields of an ``imagecontains`` Airflow connection to this server."""
        return {
            "conn_type": "imagecontains",
            "login": self.account.access_key_id,
            "password": self.account.secret_access_key,
            "extra": {
                "endpoint_url": self.endpoint_url,
                # The local server also plays STS; a real connection's STS is never its crowd endpoint.
                "service_config": {"sts": {"endpoint_url": self.endpoint_url}},
                "region_name": REGION_NAME,
                **({"verify": self.ca_bundle} if self.ca_bundle else {}),
                "account_id": self.account.account_id,
            },
        }

    def airflow_connection_env(self, conn_id: str = "imagecontains_default") -> dict[str, str]:
        """``{"AIRFLOW_CONN_<CONN_ID>": json}``: the connection as an environment variable."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(self.airflow_connection())}

    # What tests look at

    def tasks(self, function_name: str | None = None) -> list[dict[str, Any]]:
        """Every stored task: account, function, task_name, state, input, result, problem, answers."""
        store = TaskStore(self.db_path)
        try:
            return store.tasks(function_name)
        finally:
            store.close()

    def issue_token(self, kind: str, subject: str) -> str:
        """A sign-in token for the worker page (``kind="worker"``, subject the worker's name) or an
        account's dashboard (``kind="dashboard"``, subject its account id), as ``imagecontains-server token``."""
        store = WorkforceStore(self.db_path)
        try:
            return store.issue_token(kind, subject)
        finally:
            store.close()

    def request_counts(self) -> Counter[tuple[str, int]]:
        """How many requests the server answered, by (method, status), injected faults included."""
        context = ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else None
        with urllib.request.urlopen(self.endpoint_url + STATS_PATH, timeout=10, context=context) as response:  # noqa: S310
            return Counter({(method, status): n for method, status, n in json.load(response)})

    # Internals

    def _start_thread(self) -> None:
        server, _ = build_uvicorn_server(
            self.config, self.db_path, ssl_certfile=self.ca_bundle, ssl_keyfile=self._keyfile
        )
        sock = _bind(self.port)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="local-crowd-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"The local crowd server did not start on {self.endpoint_url}.")
            time.sleep(0.01)
        self._uvicorn, self._thread = server, thread

    def _start_process(self) -> None:
        self._config_dir = tempfile.TemporaryDirectory(prefix="imagecontains-server-")
        config_file = Path(self._config_dir.name, "config.json")
        # The config holds account secrets: readable by this user only.
        config_file.touch(mode=0o600)
        config_file.write_text(self.config.to_json())
        command = [sys.executable, "-m", "imagecontains_gateway", "--config", str(config_file)]
        command += ["--db", self.db_path, "--host", _LOOPBACK, "--port", str(self.port), "--log-level", "warning"]
        if self.ca_bundle and self._keyfile:
            command += ["--ssl-certfile", self.ca_bundle, "--ssl-keyfile", self._keyfile]
        self._process = sp.Popen(command)  # noqa: S603
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not _accepts_connections(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"The local crowd server process did not start on {self.endpoint_url}.")
            time.sleep(0.05)


def self_signed_certificate(directory: Path, host: str = _LOOPBACK) -> tuple[str, str]:
    """Write a self-signed certificate for ``host`` (and ``localhost``) and its key; return both paths.

    The certificate is its own CA, so clients trust it by passing its file as their CA bundle.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagecontains local crowd server")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "server-cert.pem", directory / "server-key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.touch(mode=0o600)
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(certfile), str(keyfile)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _bind(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((_LOOPBACK, port))
    return sock


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False
