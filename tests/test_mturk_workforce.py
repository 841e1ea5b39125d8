"""The MTurk workforce end to end over loopback: operator -> local server -> fake MTurk (tests/fake_mturk.py,
MTurk's JSON protocol with SigV4) -> adjudicated results in XCom; a server killed mid-run; throttling and
outages; an exhausted balance; an expired HIT; deleted tasks; images MTurk workers cannot load."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_mturk import FakeMTurk

from airflow_provider_imagecontains.exceptions import CrowdApiError
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from imagecontains_gateway.store import TaskStore
from imagecontains_gateway.testing import LocalCrowdServer

DAGS_FOLDER = Path(__file__).parent / "dags"
# Images whose name says "person" contain a person (what the fake's careful worker sees).
IMAGES = [f"https://frames.example.com/cam{n}/{'person' if n % 2 else 'empty'}-{n:03d}.jpg" for n in range(6)]
MTURK_SERVER = {"workforce": "mturk", "mturk_poll_seconds": 0.05, "reward_per_answer": 0.05, "seed": 7}


def truth(image_url: str, label: str) -> bool:
    return label in image_url.rsplit("/", 1)[-1]


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out waiting for {what}.")
        time.sleep(0.05)


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """boto3 in the server (in-process or child) finds the fake's credentials in the environment."""
    for name, value in FakeMTurk.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield


def connect(monkeypatch: pytest.MonkeyPatch, server: LocalCrowdServer) -> ImageContainsHook:
    monkeypatch.setenv("AIRFLOW_CONN_IMAGECONTAINS_DEFAULT", json.dumps(server.airflow_connection()))
    return ImageContainsHook()


def inputs(images: list[str], label: str = "person") -> dict[str, dict[str, Any]]:
    return {f"frame-{n}": {"image": {"url": url}, "target": {"label": label}} for n, url in enumerate(images)}


def finished(hook: ImageContainsHook, names: list[str]) -> dict[str, dict[str, Any]]:
    """The task documents once every task finished, else {} (also while the server is down)."""
    try:
        documents = hook.get_tasks("image-contains", names)
    except CrowdApiError:
        return {}
    return documents if all(d["state"] != "processing" for d in documents.values()) else {}


def assert_exactly_once(fake: FakeMTurk, server: LocalCrowdServer, tasks: int) -> None:
    """One HIT per task, every assignment asked for was answered once and read once, nothing charged twice."""
    assert len(fake.hits) == tasks == len(server.tasks("image-contains"))
    assert len({hit.token for hit in fake.hits.values()}) == tasks
    with sqlite3.connect(server.db_path) as db:  # votes and "cant-tell"s
        answers = sorted(worker for (worker,) in db.execute("SELECT worker FROM answers"))
    assignments = fake.assignments()
    assert answers == sorted(f"mturk:{a.worker}" for a in assignments)  # every answer from its own assignment
    for hit in fake.hits.values():
        assert len(hit.assignments) == hit.max_assignments  # no assignment beyond what was asked for
    store = TaskStore(server.db_path)
    try:
        spent = 1000_000_000 - store.balance(server.account.account_id)
    finally:
        store.close()
    assert spent == 60_000 * len(assignments)  # $0.05 reward + $0.01 fee, once per assignment


def test_operator_to_xcom_through_fake_mturk(
    airflow_db: str, fake_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        FakeMTurk(truth, worker_accuracy=1.0, cant_tell_rate=0.2) as fake,
        LocalCrowdServer(
            tmp_path / "crowd.db", subprocess=True, mturk_endpoint_url=fake.endpoint_url, **MTURK_SERVER
        ) as server,
    ):
        results = tmp_path / "results.json"
        env = {
            **os.environ,
            **server.airflow_connection_env(),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "IMAGECONTAINS_TEST_IMAGES": json.dumps(IMAGES),
            "IMAGECONTAINS_TEST_FUNCTION": "image-contains",
            "IMAGECONTAINS_TEST_RESULTS": str(results),
        }
        airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
        run = subprocess.run(
            [airflow, "dags", "test", "imagecontains_templated"], env=env, capture_output=True, text=True, timeout=240
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        records = json.loads(results.read_text())
        assert sorted(r["url"] for r in records) == sorted(IMAGES)
        for record in records:
            assert record["state"] == "completed" and record["contains_target"] is truth(record["url"], "person")
        # Each HIT shows its own image and label, and the workers' answers were approved once read.
        shown = sorted((hit.page.image_url, hit.page.label) for hit in fake.hits.values())
        assert shown == sorted((url, "person") for url in IMAGES)
        wait_until(lambda: all(a.status == "Approved" for a in fake.assignments()), 10, "approvals")
        assert fake.calls["ApproveAssignment"] == len(fake.assignments())
        assert_exactly_once(fake, server, len(IMAGES))
        # Every "cant-tell" is stored as one (no vote), none lost or taken for a vote.
        with sqlite3.connect(server.db_path) as db:
            stored_cant_tell = db.execute("SELECT COUNT(*) FROM answers WHERE answer = -1").fetchone()[0]
        assert stored_cant_tell == sum(a.answer == {"containsTarget": "cant-tell"} for a in fake.assignments())
        # Deleting the finished tasks disposes of their HITs.
        hook = connect(monkeypatch, server)
        for record in records:
            hook.delete_task("image-contains", record["task_name"])
        wait_until(lambda: not fake.hits, 10, "DeleteHIT")


def test_killed_server_resumes_without_a_second_hit_or_assignment(
    fake_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGKILL the server right after MTurk acted on a call and before the server heard back.
    kill_after = {
        ("CreateHIT", 2),
        ("CreateAdditionalAssignmentsForHIT", 1),
        ("ApproveAssignment", 3),
        ("CreateHIT", 4),
    }
    succeeded: Counter[str] = Counter()
    life = threading.Lock()  # the fake kills from its own thread: never while the test (re)starts the server
    with FakeMTurk(truth, worker_accuracy=0.9, seed=3) as fake:
        server = LocalCrowdServer(
            tmp_path / "crowd.db", subprocess=True, mturk_endpoint_url=fake.endpoint_url, **MTURK_SERVER
        )

        def kill_mid_call(operation: str, params: dict[str, Any]) -> None:
            succeeded[operation] += 1
            if (operation, succeeded[operation]) in kill_after:
                kill_after.discard((operation, succeeded[operation]))
                with life:
                    server.kill()

        fake.after_call = kill_mid_call
        server.start()
        try:
            hook = connect(monkeypatch, server)
            hook.put_tasks("image-contains", inputs(IMAGES[:4]))
            deadline = time.monotonic() + 90
            # Watch the database, not the API: the server is down now and then.
            while any(task["state"] == "processing" for task in server.tasks("image-contains")):
                assert time.monotonic() < deadline, f"tasks did not finish: {server.tasks()}, {fake.calls}, {fake.hits}"
                with life:
                    if not server.running:
                        server.start()
                time.sleep(0.05)
            done = {task["task_name"]: task for task in server.tasks("image-contains")}
            assert not kill_after, f"the run never reached {kill_after}"
            assert all(t["state"] == "completed" or t["problem"]["code"] == "Inconclusive" for t in done.values())
            # A resent CreateHIT was refused as already done, and its HIT found by its token.
            assert fake.calls["CreateHIT"] > 4 and fake.calls["ListHITs"] >= 1
            assert_exactly_once(fake, server, 4)
            wait_until(lambda: all(a.status == "Approved" for a in fake.assignments()), 10, "approvals")
            assert fake.calls["ApproveAssignment"] >= len(fake.assignments())
        finally:
            fake.after_call = None
            server.stop()


def test_throttling_and_outages_are_ridden_out_while_the_api_keeps_answering(
    fake_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        FakeMTurk(truth, worker_accuracy=1.0) as fake,
        LocalCrowdServer(tmp_path / "crowd.db", mturk_endpoint_url=fake.endpoint_url, **MTURK_SERVER) as server,
    ):
        hook = connect(monkeypatch, server)
        tasks = inputs(IMAGES[:4])
        names = list(tasks)
        fake.delay_seconds = 0.8  # slow MTurk calls must not slow the Crowd API down
        hook.put_tasks("image-contains", {name: tasks[name] for name in names[:2]})
        wait_until(lambda: fake.calls["CreateHIT"] >= 1, 30, "the first HIT")
        fake.throttle_next, fake.unavailable_next = 2, 2  # botocore's retries see four failures in a row
        hook.put_tasks("image-contains", {name: tasks[name] for name in names[2:]})
        slowest = 0.0
        deadline = time.monotonic() + 60
        while not (done := finished(hook, names)):
            assert time.monotonic() < deadline, "tasks did not finish"
            started = time.monotonic()
            hook.get_task("image-contains", names[0])
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
        assert fake.calls["throttled"] == 2 and fake.calls["unavailable"] == 2
        assert all(d["state"] == "completed" for d in done.values())
        assert slowest < fake.delay_seconds  # the API never waited for an MTurk call
        assert_exactly_once(fake, server, 4)


def test_exhausted_balance_fails_insufficient_funds_without_a_hit(
    fake_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $0.10 pays for one assignment ($0.05 + $0.01 fee), not two.
    with (
        FakeMTurk(truth, worker_accuracy=1.0, balance=0.10) as fake,
        LocalCrowdServer(tmp_path / "crowd.db", mturk_endpoint_url=fake.endpoint_url, **MTURK_SERVER) as server,
    ):
        hook = connect(monkeypatch, server)
        hook.put_tasks("image-contains", inputs(IMAGES[:2]))
        wait_until(lambda: bool(finished(hook, ["frame-0", "frame-1"])), 30, "both tasks to fail")
        documents = hook.get_tasks("image-contains", ["frame-0", "frame-1"])
        assert {d["problemDetails"]["code"] for d in documents.values()} == {"InsufficientFunds"}
        # One HIT with the one assignment the money covered; the other task never got a HIT.
        assert len(fake.hits) == 1 and fake.calls["CreateHIT"] == 1
        assert [hit.max_assignments for hit in fake.hits.values()] == [1]
        assert fake.balance == pytest.approx(0.04)


def test_expired_task_expires_its_hit_and_delete_disposes_of_it(
    fake_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        FakeMTurk(truth, workers=0) as fake,  # nobody takes the HIT
        LocalCrowdServer(
            tmp_path / "crowd.db", mturk_endpoint_url=fake.endpoint_url, task_deadline_seconds=1.5, **MTURK_SERVER
        ) as server,
    ):
        hook = connect(monkeypatch, server)
        hook.put_task("image-contains", "frame-0", inputs(IMAGES[:1])["frame-0"])
        wait_until(lambda: fake.calls["UpdateExpirationForHIT"] == 1, 30, "UpdateExpirationForHIT")
        assert hook.get_task("image-contains", "frame-0")["problemDetails"]["code"] == "Expired"
        (hit,) = fake.hits.values()
        assert hit.expires_at <= time.time()
        hook.delete_task("image-contains", "frame-0")
        wait_until(lambda: not fake.hits, 10, "DeleteHIT")


def test_images_mturk_workers_cannot_load_are_refused_at_put(
    fake_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        FakeMTurk(truth) as fake,
        LocalCrowdServer(tmp_path / "crowd.db", mturk_endpoint_url=fake.endpoint_url, **MTURK_SERVER) as server,
    ):
        hook = connect(monkeypatch, server)
        with pytest.raises(CrowdApiError, match="MTurk workers cannot reach") as refused:
            hook.put_task("image-contains", "local", inputs([f"{server.endpoint_url}/images/cam1/1.jpg"])["frame-0"])
        assert refused.value.code == "InvalidInput"
        time.sleep(0.3)
        assert server.tasks() == [] and fake.calls["CreateHIT"] == 0


def test_opening_the_database_again_in_the_server_process_keeps_its_writes_visible(tmp_path: Path) -> None:
    """The server opens its database more than once (task store, workforce store). Closing a descriptor of an
    open SQLite file drops the process's locks on it; another process's last close then checkpoints and deletes
    the WAL the server still writes to, and every later write is invisible to everyone else."""
    db = str(tmp_path / "crowd.db")
    store = TaskStore(db)
    TaskStore(db)  # a second store in the same process, as the server's workforce store
    read = [
        sys.executable,
        "-c",
        "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM tasks').fetchone()[0])",
        db,
    ]
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout.strip() == "0"
    store.insert("123456789012", "image-contains", "frame-0", "{}", time.time(), time.time() + 60)
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout.strip() == "1"
