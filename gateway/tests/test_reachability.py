"""Images a public crowd cannot load (this machine, a local network) are refused at the PUT, before any money."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.reachability import unreachable_image_reason
from imagecontains_gateway.service import CrowdError, CrowdService
from imagecontains_gateway.store import TaskStore


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8787/images/cam1/0001.jpg",
        "http://localhost/frame.png",
        "http://[::1]/frame.png",
        "http://10.1.2.3/frame.png",
        "http://192.168.0.10/frame.png",
        "http://169.254.169.254/latest/meta-data",
        "http://nas/frames/1.jpg",
        "http://camera.local/1.jpg",
        "http://0.0.0.0/1.jpg",
    ],
)
def test_local_image_urls_are_unreachable(url: str) -> None:
    reason = unreachable_image_reason(url)
    assert reason is not None and url in reason and "participants cannot reach" in reason


@pytest.mark.parametrize(
    "url", ["https://images.example.com/a.jpg", "https://bucket.s3.amazonaws.com/k.png", "http://8.8.8.8/a.jpg"]
)
def test_public_image_urls_are_reachable(url: str) -> None:
    assert unreachable_image_reason(url) is None


def test_put_refuses_images_participants_cannot_load(tmp_path: Path) -> None:
    store = TaskStore(str(tmp_path / "crowd.db"))
    service = CrowdService(store, ServerConfig(workforce="human"), unreachable_image_reason)
    body = {"input": {"image": {"url": "http://127.0.0.1:8787/images/cam1/0001.jpg"}, "target": {"label": "person"}}}
    with pytest.raises(CrowdError) as refused:
        service.put_task("123456789012", "image-contains", "frame-1", json.dumps(body).encode())
    assert refused.value.status == 400 and refused.value.code == "InvalidInput"
    assert "127.0.0.1" in refused.value.message and store.tasks() == []
