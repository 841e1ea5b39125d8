"""CrowdDashboardLink: the link is built from the connection's data alone, never by a request."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

from airflow_provider_imagecontains.links.imagecontains import CrowdDashboardLink


def test_persisting_the_link_makes_no_request() -> None:
    # A port that accepts connections but never answers: any request would wait for its timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.setblocking(False)
        endpoint_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        pushed: dict[str, str] = {}
        ti = SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))

        started = time.monotonic()
        CrowdDashboardLink.persist({"ti": ti}, endpoint_url, ["triage-01", "triage-02"])

        assert time.monotonic() - started < 1
        assert pushed == {CrowdDashboardLink.key: f"{endpoint_url}/dashboard?prefix=triage-"}
        try:
            silent.accept()[0].close()
            connected = True
        except BlockingIOError:
            connected = False
        assert not connected
