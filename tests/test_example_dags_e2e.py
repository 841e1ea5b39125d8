"""The example DAGs run through Airflow (``airflow dags test``) against the local crowd server,
their outputs checked against the sample frames' answer key. Also `make demo`'s runner."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import sqlite3
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urljoin

import pytest
from fake_prolific import FakeProlific
from prolific_participants import Page, Participant, open_places, prolific_server, wait_until

from airflow_provider_imagecontains.prescreen import is_audited
from demo.frames import ANSWER_KEY_NAME, frame_name, generate_frames
from demo.run_demo import EARLIER_FRAMES, run_dag, run_demo, serve_folder, stamp_arrivals
from imagecontains_gateway.config import DEMO_ACCOUNT
from imagecontains_gateway.testing import LocalCrowdServer
from tests.test_prolific_workforce import approvals, bonus_payments, dashboard_figures


def child_pids() -> set[int]:
    """Processes whose parent is this test process (Linux /proc)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                children.add(int(entry.name))
    return children


@pytest.mark.slow
def test_demo_flags_the_frames_with_a_person_and_leaves_nothing_running(tmp_path):
    before = child_pids()
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", worker_accuracy=1.0, echo=lines.append)

    with_person = sorted(name for name, labels in result.answer_key.items() if "person" in labels)
    report = result.report
    assert sorted(row["frame"] for row in report["inspect"]) == with_person
    assert all(row["reason"] == "contains person" for row in report["inspect"])
    assert (report["frames"], report["flagged"], report["clear"]) == (24, len(with_person), 24 - len(with_person))
    # Frames that arrived before the run's interval were not asked about.
    assert frame_name(0) not in result.answer_key and frame_name(EARLIER_FRAMES) in result.answer_key
    assert result.answers_bought >= report["frames"]
    assert result.cost == result.answers_bought * 0.01
    assert result.report_html.is_file()
    for row in report["inspect"]:
        assert (result.report_html.parent / row["thumbnail"]).is_file()
    assert child_pids() <= before
    # The connection's secret reached Airflow only through the environment: no log, report, XCom
    # (the Airflow database) or crowd database holds it.
    secret = DEMO_ACCOUNT.secret_access_key.encode()
    assert [p for p in (tmp_path / "demo").rglob("*") if p.is_file() and secret in p.read_bytes()] == []


@pytest.fixture
def airflow_home(airflow_db, tmp_path):
    """An Airflow home of the test's own, its database a copy of the session's freshly migrated one: nothing that
    other tests' runs left there, such as the dataset Asset's name at another URI (without a scheduler, Airflow
    keeps the first URI active and fails a task whose outlet is another)."""
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copyfile(Path(airflow_db) / "airflow.pristine.db", home / "airflow.db")
    return home


@pytest.mark.slow
def test_training_data_etl_writes_the_answer_keys_labels_and_an_asset_event(tmp_path, airflow_home):
    images_dir, dataset = tmp_path / "images", tmp_path / "dataset"
    key = generate_frames(images_dir, 9)
    log_path = tmp_path / "airflow.log"
    with (
        LocalCrowdServer(
            tmp_path / "crowd.db", answer_key_path=str(images_dir / ANSWER_KEY_NAME), worker_accuracy=1.0
        ) as crowd,
        serve_folder(images_dir) as images_url,
    ):
        env = {
            **crowd.airflow_connection_env(),
            "IMAGECONTAINS_IMAGES_SOURCE": str(images_dir),
            "IMAGECONTAINS_IMAGES_BASE_URL": images_url,
            "IMAGECONTAINS_DATASET_URI": f"file://{dataset}",
            "IMAGECONTAINS_POLL_INTERVAL": "1",
        }
        # 9 images x 2 labels in batches of 5: four mapped crowd tasks.
        params = {"labels": ["person", "car"], "batch_size": 5}
        run_dag("training_data_etl", datetime(2026, 2, 1, tzinfo=timezone.utc), airflow_home, env, log_path, params)
        asked = crowd.tasks("image-contains")

    assert len(asked) == 18
    records = [json.loads(line) for line in (dataset / "labels.jsonl").read_text().splitlines()]
    assert {Path(r["source"]).name: r["labels"] for r in records} == {
        name: [label for label in ("person", "car") if label in labels] for name, labels in key.items()
    }
    assert all(r["url"] == f"{images_url}/{Path(r['source']).name}" for r in records)
    manifest = [json.loads(line) for line in (dataset / "output.manifest").read_text().splitlines()]
    assert len(manifest) == 9
    for line in manifest:
        labels = key[Path(line["source-ref"]).name]
        assert sorted(line["image-contains-metadata"]["class-map"].values()) == sorted(labels)
        assert line["image-contains"] == [
            ["person", "car"].index(label) for label in ("person", "car") if label in labels
        ]
        # The local server's confidence in each label found, the Ground Truth way.
        confidences = line["image-contains-metadata"].get("confidence-map", {})
        assert sorted(confidences) == sorted(str(class_id) for class_id in line["image-contains"])
        assert all(0.95 <= confidence < 1 for confidence in confidences.values())
    assert all(
        0.95 <= c < 1 and w >= 1
        for r in records
        for c, w in zip(r["confidence"].values(), r["workers"].values(), strict=True)
    )

    assert dataset_events(airflow_home) == [f"file://{dataset}"]


def dataset_events(airflow_home: Path) -> list[str]:
    """The URI of each event of training_data_etl's dataset Asset in the Airflow database."""
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute(
            "SELECT asset.uri FROM asset_event JOIN asset ON asset.id = asset_event.asset_id WHERE asset.name = ?",
            ("imagecontains_training_dataset",),
        ).fetchall()
    return [uri for (uri,) in rows]


@pytest.mark.slow
def test_training_data_etl_reads_and_writes_s3_through_its_aws_connection(
    tmp_path, airflow_home, s3_endpoint, s3_client
):
    """Images listed from an S3 prefix and the dataset written to one, through ObjectStoragePath on the
    ``aws_conn_id`` param's connection (moto's S3 on loopback, its address in the connection's extras only),
    which the operator also presigns the images with."""
    log_path = tmp_path / "airflow.log"
    key = generate_frames(tmp_path / "images", 3)
    s3 = s3_client()
    s3.create_bucket(Bucket="training")
    for name in key:
        s3.upload_file(str(tmp_path / "images" / name), "training", f"images/{name}")
    s3.put_object(Bucket="training", Key="images/notes.txt", Body=b"not an image")
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    with LocalCrowdServer(
        tmp_path / "crowd.db", answer_key_path=str(tmp_path / "images" / ANSWER_KEY_NAME), worker_accuracy=1.0
    ) as crowd:
        env = {
            **crowd.airflow_connection_env(),
            "AIRFLOW_CONN_TRAINING_S3": json.dumps(connection),
            "IMAGECONTAINS_IMAGES_SOURCE": "s3://training/images/",
            "IMAGECONTAINS_DATASET_URI": "s3://training/dataset",
            "IMAGECONTAINS_POLL_INTERVAL": "1",
        }
        params = {"labels": ["person"], "batch_size": 5, "aws_conn_id": "training_s3"}
        run_dag("training_data_etl", datetime(2026, 2, 2, tzinfo=timezone.utc), airflow_home, env, log_path, params)
        asked = [task["input"]["image"]["url"] for task in crowd.tasks("image-contains")]

    assert len(asked) == 3 and all(url.startswith(f"{s3_endpoint}/training/images/") for url in asked)
    assert all("X-Amz-Signature=" in url for url in asked)
    labels = s3.get_object(Bucket="training", Key="dataset/labels.jsonl")["Body"].read().decode()
    records = [json.loads(line) for line in labels.splitlines()]
    assert {r["source"]: r["labels"] for r in records} == {
        f"s3://training/images/{name}": [label for label in ("person",) if label in labels]
        for name, labels in key.items()
    }
    manifest = s3.get_object(Bucket="training", Key="dataset/output.manifest")["Body"].read().decode()
    assert len(manifest.splitlines()) == 3
    assert dataset_events(airflow_home) == ["s3://training/dataset"]


class FrameViewer(Participant):
    """A participant who loads each frame through the participant pages and answers as the frames' answer key says.

    :param answer_key: each frame's name -> the labels it shows.
    """

    def __init__(self, fake: FakeProlific, study: str, pid: str, answer_key: dict[str, list[str]]) -> None:
        super().__init__(fake, study, pid)
        self.answer_key = answer_key

    def sees(self, page: Page, image: str, label: str) -> bool:
        frame = self.browser.get(urljoin(page.url, image), timeout=30)
        assert frame.status_code == 200 and frame.headers["content-type"] == "image/png", (image, frame.status_code)
        return label in self.answer_key[Path(image).name]


# The fake Prolific's effects (FakeProlific.effects) that cost money or commit to it: each must happen once.
PAID_CALLS = ("create_study", "publish", "approve_call", "approve", "create_bonuses", "pay")


def take_every_place(fake: FakeProlific, answer_key: dict[str, list[str]], stop: threading.Event) -> list[Participant]:
    """Participants of the fake Prolific take each place its studies open, answer their batch (0.1 s an answer)
    and submit the completion code, until ``stop``; returns them."""
    participants: list[Participant] = []
    while not stop.is_set():
        study = next((study for study in list(fake.studies) if open_places(fake, study) > 0), None)
        if study is None:
            stop.wait(0.05)
            continue
        assert len(participants) < 40, "the work should need far fewer places"
        participant = FrameViewer(fake, study, f"pid{len(participants):03d}", answer_key)
        participant.submit(participant.take_part(seconds_per_answer=0.1))
        participants.append(participant)
    return participants


@pytest.mark.slow
def test_training_data_etl_gets_adjudicated_answers_from_paid_prolific_participants(tmp_path, airflow_home):
    """Issue 21's "done when": the DAG against a gateway with ``workforce="prolific"``, paid participants of the
    fake Prolific answering over HTTP; every paid call made once, and the dashboard's spend is Prolific's."""
    images_dir, dataset = tmp_path / "images", tmp_path / "dataset"
    key = generate_frames(images_dir, 6)
    stop = threading.Event()
    # Pay assumed for 0.05 s an answer at 3600 an hour: participants take longer, so each is due a top-up bonus.
    with (
        FakeProlific() as fake,
        prolific_server(
            tmp_path, fake, images_dir=str(images_dir), prolific_seconds_per_answer=0.05, prolific_hourly_rate=3600.0
        ) as crowd,
        concurrent.futures.ThreadPoolExecutor(1) as crowd_of_participants,
    ):
        taking_part = crowd_of_participants.submit(take_every_place, fake, key, stop)
        env = {
            **crowd.airflow_connection_env(),
            "IMAGECONTAINS_IMAGES_SOURCE": str(images_dir),
            # The gateway's own images: participants load them from the gateway, as the question they hold.
            "IMAGECONTAINS_IMAGES_BASE_URL": f"{crowd.endpoint_url}/images",
            "IMAGECONTAINS_DATASET_URI": f"file://{dataset}",
            "IMAGECONTAINS_POLL_INTERVAL": "1",
        }
        try:
            run_dag(
                "training_data_etl",
                datetime(2026, 12, 3, tzinfo=timezone.utc),
                airflow_home,
                env,
                tmp_path / "airflow.log",
                {"labels": ["person"], "batch_size": 3},
            )
        finally:
            stop.set()
            participants = taking_part.result()  # a participant's failed check is the test's
        asked = crowd.tasks("image-contains")
        answering = {worker for task in asked for worker, _ in task["answers"]}
        wait_until(lambda: len(approvals(fake)) == len(participants), what="every submission approved")
        # A top-up for each who answered (a participant who came after the work was done answered nothing).
        wait_until(lambda: len(bonus_payments(fake)) == len(answering), what="each answering participant's top-up")
        time.sleep(0.5)  # more review cycles: nothing is paid twice
        figures = dashboard_figures(crowd)

    records = {Path(r["source"]).name: r for r in map(json.loads, (dataset / "labels.jsonl").read_text().splitlines())}
    assert {name: record["labels"] for name, record in records.items()} == {
        name: ["person"] if "person" in labels else [] for name, labels in key.items()
    }
    assert all(record["confidence"]["person"] >= 0.95 for record in records.values()), records
    assert len(asked) == 6 and answering <= {f"prolific:{p.pid}" for p in participants}
    # Every paid call exactly once: one study created and published, each submission approved once (one call),
    # each bonus created and paid once.
    paid = Counter(kind for kind, _ in fake.effects if kind in PAID_CALLS)
    assert {call: n for call, n in fake.effects.items() if call[0] in PAID_CALLS and n != 1} == {}
    assert len(fake.studies) == 1 and fake.requests[("POST", "/api/v1/studies/")] == 1
    assert approvals(fake) == Counter(p.session_id for p in participants)
    assert paid == {
        "create_study": 1,
        "publish": 1,
        "approve_call": len(participants),
        "approve": len(participants),
        "create_bonuses": len(answering),
        "pay": len(answering),
    }
    assert figures["spend"] == pytest.approx(fake.spent_cents / 100, abs=1e-4), "the dashboard's spend is Prolific's"
    assert figures["spend"] > 0 and figures["states"] == {"completed": 6}


def triage_env(
    crowd: LocalCrowdServer, frames: Path, frames_url: str, reports: Path, **settings: str
) -> dict[str, str]:
    """The environment of a ``surveillance_triage`` run on ``frames`` (served at ``frames_url``) against ``crowd``,
    polling every second, with its reports in ``reports``; ``settings`` are further variables."""
    return {
        **crowd.airflow_connection_env(),
        "IMAGECONTAINS_FRAMES_SOURCE": str(frames),
        "IMAGECONTAINS_FRAMES_BASE_URL": frames_url,
        "IMAGECONTAINS_REPORTS_DIR": str(reports),
        "IMAGECONTAINS_POLL_INTERVAL": "1",
        **settings,
    }


@pytest.mark.slow
def test_surveillance_triage_writes_an_empty_report_for_an_interval_without_frames(tmp_path, airflow_home):
    (tmp_path / "frames").mkdir()
    generate_frames(tmp_path / "frames", 3)  # modified now, long after the interval
    env = {
        "IMAGECONTAINS_FRAMES_SOURCE": str(tmp_path / "frames"),
        "IMAGECONTAINS_FRAMES_BASE_URL": "http://127.0.0.1:9",
        "IMAGECONTAINS_REPORTS_DIR": str(tmp_path / "reports"),
    }
    run_dag("surveillance_triage", datetime(2026, 3, 1, 8, tzinfo=timezone.utc), airflow_home, env, tmp_path / "log")
    report = json.loads((tmp_path / "reports" / "20260301T070000" / "triage.json").read_text())
    assert (report["frames"], report["flagged"], report["inspect"]) == (0, 0, [])
    assert "No frame arrived in this interval." in (tmp_path / "reports" / "20260301T070000" / "index.html").read_text()


@pytest.mark.slow
def test_surveillance_triage_earns_the_prescreens_trust_from_the_pairs_it_keeps(tmp_path, airflow_home):
    # The Asset's default place: the session's other runs of this DAG registered it, and one name names one place.
    frames, pairs_file = tmp_path / "frames", airflow_home / "imagecontains" / "audit-pairs.json"
    pairs_file.unlink(missing_ok=True)
    key = generate_frames(frames, 60)
    names = sorted(key)
    first_hour = datetime(2026, 4, 1, 8, tzinfo=timezone.utc)
    stamp_arrivals(frames, names[:30], first_hour, timedelta(minutes=1))
    stamp_arrivals(frames, names[30:], first_hour + timedelta(hours=1), timedelta(minutes=1))
    repo = Path(__file__).resolve().parent.parent
    with (
        LocalCrowdServer(
            tmp_path / "crowd.db", answer_key_path=str(frames / ANSWER_KEY_NAME), worker_accuracy=1.0
        ) as crowd,
        serve_folder(frames) as frames_url,
    ):
        env = triage_env(
            crowd,
            frames,
            frames_url,
            tmp_path / "reports",
            IMAGECONTAINS_PRESCREEN="prescreen_scorers.ShirtScorer",
            IMAGECONTAINS_AUDIT_RATE="0.5",
            PYTHONPATH=f"{repo / 'tests'}:{repo}",
        )
        # 30 pairs vouch for a precision of 0.8 (not for 0.99): enough for a test of the mechanism.
        params = {"target_precision": 0.8, "min_pairs": 20}
        for hour in (1, 2):
            run_dag(
                "surveillance_triage", first_hour + timedelta(hours=hour), airflow_home, env, tmp_path / "log", params
            )
            if hour == 1:
                first_tasks = len(crowd.tasks("image-contains"))
                first_pairs = json.loads(pairs_file.read_text())
        asked = {task["input"]["image"]["url"].rsplit("/", 1)[-1] for task in crowd.tasks("image-contains")}

    # First run: no evidence yet, so every frame went to the crowd and became a pair.
    assert first_tasks == 30 and len(first_pairs) == 30
    assert {pair["score"] for pair in first_pairs} == {0.05, 0.95}
    # Second run: the model was trusted on both sides; only its audits were paid for.
    audited = {name for name in names[30:] if is_audited(f"{frames_url}/{name}", "person", 0.5)}
    assert asked - set(names[:30]) == audited and 0 < len(audited) < 30
    report = json.loads((tmp_path / "reports" / "20260401T090000" / "triage.json").read_text())
    assert (report["settled_by_model"], report["sent_to_crowd"], report["audited"]) == (
        30 - len(audited),
        len(audited),
        len(audited),
    )
    assert report["audit_agreement"] == f"100.0% ({len(audited)} of {len(audited)})"
    assert sorted(row["frame"] for row in report["inspect"]) == sorted(n for n in names[30:] if "person" in key[n])
    assert len(json.loads(pairs_file.read_text())) == 30 + len(audited)


def answer_review_questions(answers: dict[str, str], stop: threading.Event) -> list[str]:
    """Act as the team's reviewer "ana": answer each human-in-the-loop question about a frame in ``answers``
    (frame name -> option) once Airflow waits for it, through the function behind the REST API's (and the
    Required Actions page's) PATCH of a HITL detail; return the frames answered, in order."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    reviewer = SimpleAuthManagerUser(username="ana", role="USER")
    answered: list[str] = []
    while not stop.is_set():
        with create_session() as session:
            waiting = session.scalars(
                select(TaskInstance)
                .where(TaskInstance.state == TaskInstanceState.AWAITING_INPUT)
                .options(joinedload(TaskInstance.hitl_detail))
            )
            for ti in waiting.all():
                frame = next(name for name in answers if f"frame {name} " in ti.hitl_detail.subject)
                choice = UpdateHITLDetailPayload(chosen_options=[answers[frame]], params_input={})
                update_hitl_detail(ti.dag_id, ti.run_id, ti.task_id, choice, reviewer, session, map_index=ti.map_index)
                answered.append(frame)
        stop.wait(0.5)
    return answered


@pytest.mark.slow
def test_surveillance_triage_asks_the_teams_reviewers_about_the_frames_the_crowd_could_not_settle(tmp_path, airflow_db):
    # The reviewer answers through this process's Airflow database: the session's.
    airflow_home = Path(airflow_db)
    frames = tmp_path / "frames"
    key = generate_frames(frames, 4)
    names = sorted(key)
    interval_end = datetime(2026, 5, 1, 9, tzinfo=timezone.utc)
    stamp_arrivals(frames, names, interval_end - timedelta(hours=1), timedelta(minutes=1))
    options = {True: "Contains it", False: "Does not contain it"}
    # The reviewers settle three frames; on the fourth they cannot tell either.
    reviewed = {name: options["person" in key[name]] for name in names[:3]} | {names[3]: "Cannot tell"}
    stop = threading.Event()
    with (
        # Two answers never reach the confidence of 0.95: every frame ends Inconclusive.
        LocalCrowdServer(
            tmp_path / "crowd.db",
            answer_key_path=str(frames / ANSWER_KEY_NAME),
            worker_accuracy=1.0,
            max_answers_per_task=2,
        ) as crowd,
        serve_folder(frames) as frames_url,
        concurrent.futures.ThreadPoolExecutor(1) as reviewers,
    ):
        answering = reviewers.submit(answer_review_questions, reviewed, stop)
        env = triage_env(crowd, frames, frames_url, tmp_path / "reports", IMAGECONTAINS_ESCALATE_TO_REVIEWERS="true")
        try:
            run_dag("surveillance_triage", interval_end, airflow_home, env, tmp_path / "log")
        finally:
            stop.set()
            answered = answering.result()  # a reviewer's error is the test's

    assert sorted(answered) == names
    run_dir = tmp_path / "reports" / "20260501T080000"
    report = json.loads((run_dir / "triage.json").read_text())
    assert report["unanswered"] == 4
    reviews = {row["frame"]: row for row in json.loads((run_dir / "reviews.json").read_text())}
    assert sorted(reviews) == names
    for name in names:
        assert (reviews[name]["crowd_problem"], reviews[name]["reviewed_by"]) == ("Inconclusive", "ana")
        assert reviews[name]["review"] == reviewed[name]
    assert [reviews[name]["contains_target"] for name in names] == [*("person" in key[n] for n in names[:3]), None]


def test_example_imagecontains_runs_every_snippet_against_a_gateway(airflow_db, tmp_path):
    import subprocess
    import sys

    generate_frames(tmp_path / "frames", 6)
    records = tmp_path / "records"
    with (
        LocalCrowdServer(tmp_path / "crowd.db", subprocess=True) as server,
        serve_folder(tmp_path / "frames") as frames_url,
    ):
        env = {
            **os.environ,
            **server.airflow_connection_env(),
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parent.parent / "example_dags"),
            "IMAGECONTAINS_EXAMPLE_IMAGES_URL": frames_url,
            "IMAGECONTAINS_EXAMPLE_RECORDS_PATH": f"file://{records}",
        }
        airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
        run = subprocess.run(
            [airflow, "dags", "test", "example_imagecontains"], env=env, capture_output=True, text=True, timeout=300
        )
        tasks = server.tasks(function_name="image-contains-test")
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success" in output.replace("DagRunState.SUCCESS", "success"), output[-3000:]
    by_label = {label: sum(1 for t in tasks if t["input"]["target"]["label"] == label) for label in ("person", "car")}
    # The dry run (person and car) created nothing; the mapped batches made the 6 car tasks.
    assert by_label == {"person": 6, "car": 6}
    [stored] = list(records.rglob("*.records.jsonl"))
    assert len(stored.read_text().splitlines()) == 6
