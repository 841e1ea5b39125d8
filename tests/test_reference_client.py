"""The reference client ``mturk-crowd-beta-client`` 1.0.0, unmodified but for its host constants, against the server."""

from __future__ import annotations

import boto3
import mturk_crowd_beta_client as reference

INPUT = {"image": {"url": "https://images.example.com/cam1.jpg"}, "target": {"label": "person"}}


def test_reference_client_puts_gets_and_deletes(crowd_server, monkeypatch):
    server = crowd_server(workforce_size=0)
    host = server.endpoint_url.removeprefix("http://")
    # The client's module constants name the host; everything else runs as published.
    monkeypatch.setattr(reference, "_HOST", host)
    monkeypatch.setattr(reference, "_ENDPOINT", server.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", server.endpoint_url)
    session = boto3.Session(
        aws_access_key_id=server.account.access_key_id,
        aws_secret_access_key=server.account.secret_access_key,
        region_name="us-east-1",
    )
    client = reference.MTurkCrowdClient(session)

    created = client.put_task("image-contains-test", "ref-1", INPUT)
    assert created.status_code == 201
    assert created.json()["state"] == "processing"
    assert client.put_task("image-contains-test", "ref-1", INPUT).status_code == 200
    assert client.get_task("image-contains-test", "ref-1").json()["state"] == "processing"
    completed = client.get_task("image-contains-test", "ref-1").json()
    assert completed["state"] == "completed"
    assert isinstance(completed["result"]["containsTarget"], bool)
    assert client.delete_task("image-contains-test", "ref-1").status_code == 204
    assert client.get_task("image-contains-test", "ref-1").status_code == 404
    # Production function: a processing task cannot be deleted.
    assert client.put_task("image-contains", "ref-2", INPUT).status_code == 201
    assert client.delete_task("image-contains", "ref-2").status_code == 409
    assert [t["task_name"] for t in server.tasks()] == ["ref-2"]
