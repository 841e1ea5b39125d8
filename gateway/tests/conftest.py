"""The gateway's test set-up: local crowd servers on loopback."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def crowd_server(tmp_path):
    """Factory: ``crowd_server(**config_overrides)`` starts a local crowd server (in-process);
    ``crowd_server.current`` is the last one."""
    from imagecontains_gateway.testing import LocalCrowdServer

    servers = []

    def start(**overrides):
        server = LocalCrowdServer(tmp_path / f"crowd-{len(servers)}.db", **overrides)
        server.start()
        servers.append(server)
        start.current = server
        return server

    yield start
    for server in servers:
        server.stop()
