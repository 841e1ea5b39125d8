"""The example DAGs' building blocks: sample frames, image listing, the triage report and the
training manifest, checked against the demo's answer key. The DAG runs themselves are in
test_example_dags_e2e.py."""

from __future__ import annotations

import csv
import json
import os
import struct
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pytest
from example_io import list_images, no_images_hint, read_image, read_output, write_output

from demo.frames import ANSWER_KEY_NAME, HEIGHT, SHIRT, WIDTH, frame_name, generate_frames
from demo.run_demo import EARLIER_FRAMES, FRAMES_IN_INTERVAL, INTERVAL, RUN_AFTER, prepare_frames, serve_folder

EXAMPLE_DAGS = Path(__file__).resolve().parent.parent / "example_dags"

# What write_report is given for the report's cost lines (the DAG reads them from its environment).
COSTS = {"reward_per_answer": 0.01, "crowd_task_cost": None}


def decode_png(data: bytes) -> list[list[tuple[int, int, int]]]:
    """Decode the frames' own PNG form (8-bit RGB, filter 0) back to pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    return [[tuple(raw[y * stride + 1 + 3 * x : y * stride + 4 + 3 * x]) for x in range(width)] for y in range(height)]


def answer(
    url: str, label: str, contains: bool | None, state: str = "completed", confidence=None, answers=None
) -> dict:
    problem = None if state == "completed" else {"code": "Expired", "message": "Not enough Workers"}
    return {
        "url": url,
        "label": label,
        "task_name": f"task-{label}-{url.rsplit('/', 1)[-1]}",
        "state": state,
        "contains_target": contains,
        "confidence": confidence,
        "answers": answers,
        "problem": problem,
    }


# --- sample frames -----------------------------------------------------------------------------


def test_frames_are_deterministic_and_match_the_answer_key(tmp_path):
    first = generate_frames(tmp_path / "a", 12)
    second = generate_frames(tmp_path / "b", 12)
    assert first == second
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    key = json.loads((tmp_path / "a" / ANSWER_KEY_NAME).read_text())
    assert key == {"images": first}
    with_person = [name for name, labels in first.items() if "person" in labels]
    assert 0 < len(with_person) < len(first)


def test_only_frames_with_a_person_show_the_figure(tmp_path):
    images = generate_frames(tmp_path, 6)
    for name, labels in images.items():
        pixels = decode_png((tmp_path / name).read_bytes())
        assert (len(pixels), len(pixels[0])) == (HEIGHT, WIDTH)
        shirt_pixels = sum(row.count(SHIRT) for row in pixels)
        assert (shirt_pixels > 100) == ("person" in labels), name


def test_generate_frames_rejects_a_bad_count(tmp_path):
    with pytest.raises(ValueError, match="Invalid frame count 0"):
        generate_frames(tmp_path, 0)


# --- listing images ----------------------------------------------------------------------------


def test_demo_frames_outside_the_interval_are_not_listed(tmp_path):
    in_interval = prepare_frames(tmp_path)
    listed = list_images(
        str(tmp_path),
        base_url="http://127.0.0.1:9/frames/",
        modified_since=RUN_AFTER - INTERVAL,
        modified_before=RUN_AFTER,
    )
    assert [item["url"].rsplit("/", 1)[-1] for item in listed] == list(in_interval)
    assert len(listed) == FRAMES_IN_INTERVAL
    assert frame_name(EARLIER_FRAMES - 1) not in in_interval
    assert listed[0] == {
        "source": str(tmp_path / frame_name(EARLIER_FRAMES)),
        "url": f"http://127.0.0.1:9/frames/{frame_name(EARLIER_FRAMES)}",
    }


def test_interval_end_is_exclusive_and_start_inclusive(tmp_path):
    start = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    for name, when in (("at-start.png", start), ("at-end.png", start + INTERVAL), ("notes.txt", start)):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (when.timestamp(), when.timestamp()))
    listed = list_images(
        str(tmp_path), base_url="https://cams.example", modified_since=start, modified_before=start + INTERVAL
    )
    assert [item["url"] for item in listed] == ["https://cams.example/at-start.png"]


def test_local_folder_needs_an_http_base_url(tmp_path):
    with pytest.raises(ValueError, match=r"Invalid base URL 'file:///x'.*serve the folder"):
        list_images(str(tmp_path), base_url="file:///x")
    with pytest.raises(ValueError, match="Invalid image folder"):
        list_images(str(tmp_path / "missing"), base_url="http://127.0.0.1/")


@pytest.fixture(scope="module")
def s3_conn_id(s3_endpoint):
    """An Amazon connection to the local S3 (moto's server on loopback, its address in the extras), as
    ``ObjectStoragePath`` reaches it; one id per server, since Airflow caches a connection's filesystem by id."""
    conn_id = f"example_s3_{s3_endpoint.rsplit(':', 1)[1]}"
    extra = {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    os.environ[variable] = json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra})
    yield conn_id
    del os.environ[variable]


def test_s3_prefix_is_listed_read_and_written_through_the_connection(s3_client, s3_conn_id):
    s3 = s3_client()
    s3.create_bucket(Bucket="cams")
    for key in ("frames/a.png", "frames/night/b.jpg", "frames/readme.txt", "other/c.png"):
        s3.put_object(Bucket="cams", Key=key, Body=key.encode())
    now = datetime.now(timezone.utc)

    listed = list_images(
        "s3://cams/frames/", conn_id=s3_conn_id, modified_since=now - INTERVAL, modified_before=now + INTERVAL
    )
    assert sorted(item["url"] for item in listed) == ["s3://cams/frames/a.png", "s3://cams/frames/night/b.jpg"]
    assert all(item["source"] == item["url"] for item in listed)
    assert list_images("s3://cams/frames/", conn_id=s3_conn_id, modified_before=now - INTERVAL) == []
    assert read_image("s3://cams/frames/night/b.jpg", s3_conn_id) == b"frames/night/b.jpg"

    page = "s3://cams/reports/run/index.html"
    assert write_output(page, b"<h1>run</h1>", "text/html; charset=utf-8", s3_conn_id) == page
    stored = s3.get_object(Bucket="cams", Key="reports/run/index.html")
    assert (stored["Body"].read(), stored["ContentType"]) == (b"<h1>run</h1>", "text/html; charset=utf-8")
    assert read_output(page, s3_conn_id) == b"<h1>run</h1>"
    assert read_output("s3://cams/reports/run/missing.json", s3_conn_id) is None


def test_report_and_audit_pairs_of_s3_frames_stay_on_s3(s3_client, s3_conn_id):
    import audit_pairs
    import triage_report

    s3 = s3_client()
    s3.create_bucket(Bucket="night-cams")
    s3.put_object(Bucket="night-cams", Key="frames/a.png", Body=b"frame a")
    flagged = {**answer("s3://night-cams/frames/a.png", "person", True), "source": "crowd"}
    flagged.update(model_score=0.7, model_contains_target=None)
    summary = {"label": "person", "run_id": "r", "data_interval_start": "a", "data_interval_end": "b"}

    report = triage_report.write_report([flagged], summary, "s3://night-cams/reports/r", conn_id=s3_conn_id, **COSTS)

    assert report["report_csv"] == "s3://night-cams/reports/r/inspect.csv"
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="night-cams", Prefix="reports/r/")["Contents"]}
    assert keys == {
        f"reports/r/{name}" for name in ("inspect.csv", "triage.json", "index.html", "thumbnails/00000-a.png")
    }
    thumbnail = s3.get_object(Bucket="night-cams", Key="reports/r/thumbnails/00000-a.png")["Body"].read()
    assert thumbnail == b"frame a"

    location = "s3://night-cams/calibration/audit-pairs.json"
    assert audit_pairs.load_audit_pairs(location, s3_conn_id) == []
    assert audit_pairs.store_audit_pairs(location, [flagged], 1.0, 10, s3_conn_id) == 1
    assert audit_pairs.store_audit_pairs(location, [flagged], 1.0, 10, s3_conn_id) == 1  # a re-run replaces its pair
    assert [pair["url"] for pair in audit_pairs.load_audit_pairs(location, s3_conn_id)] == [flagged["url"]]


# --- the triage report -------------------------------------------------------------------------


def test_report_flags_people_and_unanswered_frames(tmp_path):
    import triage_report

    key = generate_frames(tmp_path / "frames", 8)
    with serve_folder(tmp_path / "frames") as base_url:
        answers = [
            {
                **answer(f"{base_url}/{name}", "person", "person" in labels, confidence=0.97, answers=2),
                "source": "crowd",
            }
            for name, labels in key.items()
        ]
        answers[1] = answer(answers[1]["url"], "person", None, state="failed")
        summary = {"label": "person", "run_id": "manual__1", "data_interval_start": "a", "data_interval_end": "b"}
        report = triage_report.write_report(answers, summary, str(tmp_path / "report"), **COSTS)

    expected = [name for name, labels in key.items() if "person" in labels] + [frame_name(1)]
    expected.sort()
    assert report["frames"] == 8
    assert report["flagged"] == len(expected)
    assert report["clear"] == 8 - len(expected)
    assert report["unanswered"] == 1
    with open(report["report_csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    # Every frame, those to inspect first, each with what was decided, how surely, on how many answers, by whom.
    assert sorted(row["frame"] for row in rows) == sorted(key)
    assert sorted(row["frame"] for row in rows[: len(expected)]) == expected
    by_frame = {row["frame"]: row for row in rows}
    assert by_frame[frame_name(1)]["reason"] == "no answer (Expired)"
    assert by_frame[frame_name(1)]["answer"] == "no answer (Expired)"
    assert (by_frame[frame_name(0)]["reason"], by_frame[frame_name(0)]["answer"]) == ("contains person", "person")
    clear = rows[len(expected)]
    assert (clear["flagged"], clear["answer"], clear["confidence"], clear["answers"], clear["source"]) == (
        "False",
        "no person",
        "97%",
        "2",
        "crowd",
    )
    for row in rows[: len(expected)]:
        copied = tmp_path / "report" / row["thumbnail"]
        assert copied.read_bytes() == (tmp_path / "frames" / row["frame"]).read_bytes()
    assert report["crowd_answers"] == 2 * 7 and report["cost"].startswith("at least $0.14 ")
    saved = json.loads(Path(report["report_json"]).read_text())
    assert saved["flagged"] == report["flagged"] and len(saved["inspect"]) == len(expected)
    assert len(saved["cleared"]) == 8 - len(expected)
    page = Path(report["report_html"]).read_text()
    assert page.count('<tr class="frame flagged">') == len(expected)
    assert page.count('<tr class="frame clear">') == 8 - len(expected)
    assert "crowd cost" in page
    for absent in ("settled_by_model", "spend_avoided", "audited"):
        assert absent not in report, "no pre-screen lines without a pre-screen"
    assert "settled by the model" not in page and "audits" not in page


def test_report_counts_what_the_model_settled_and_pairs_are_kept_per_frame(tmp_path, monkeypatch):
    import audit_pairs
    import triage_report

    settled = {**answer("http://127.0.0.1:9/a.png", "person", True), "source": "model", "task_name": None}
    settled.update(model_score=0.98, model_contains_target=True)
    audit = {**answer("http://127.0.0.1:9/b.png", "person", False), "source": "crowd"}
    audit.update(model_score=0.01, model_contains_target=False)
    unsure = {**answer("http://127.0.0.1:9/c.png", "person", True), "source": "crowd"}
    unsure.update(model_score=0.5, model_contains_target=None)
    summary = {"label": "person", "run_id": "r", "data_interval_start": "a", "data_interval_end": "b"}

    report = triage_report.write_report([settled, audit, unsure], summary, str(tmp_path), **COSTS)

    assert (report["settled_by_model"], report["sent_to_crowd"], report["audited"]) == (1, 2, 1)
    assert report["audit_agreement"] == "100.0% (1 of 1)"
    assert report["spend_avoided"] == "n/a (set IMAGECONTAINS_CROWD_TASK_COST)"
    assert (
        triage_report.write_report(
            [settled], summary, str(tmp_path / "again"), reward_per_answer=0.01, crowd_task_cost=0.04
        )["spend_avoided"]
        == "$0.04"
    )
    saved = json.loads(Path(report["report_json"]).read_text())
    reasons = {row["frame"]: row["reason"] for row in saved["inspect"]}
    assert reasons == {"a.png": "contains person (model, score 0.98)", "c.png": "contains person"}
    assert (saved["inspect"][0]["frame"], saved["inspect"][0]["source"], saved["inspect"][0]["confidence"]) == (
        "a.png",
        "model",
        "model score 0.98",
    )
    assert [row["frame"] for row in saved["cleared"]] == ["b.png"]
    assert "settled by the model: <strong>1</strong>" in Path(report["report_html"]).read_text()

    stored = [{"url": "http://127.0.0.1:9/c.png", "label": "person", "score": 0.4, "crowd": False, "weight": 1.0}]
    stored += [{"url": f"old{n}", "label": "person", "score": 0.1, "crowd": False, "weight": 1.0} for n in range(5)]
    pairs = audit_pairs.merge_audit_pairs(stored, [settled, audit, unsure], audit_rate=0.25, window=4)
    # A re-run replaces its frame's pair; the newest pairs are kept; the model-settled frame is no pair.
    assert [(p["url"], p["score"], p["weight"]) for p in pairs] == [
        ("old3", 0.1, 1.0),
        ("old4", 0.1, 1.0),
        ("http://127.0.0.1:9/b.png", 0.01, 4.0),
        ("http://127.0.0.1:9/c.png", 0.5, 1.0),
    ]


def test_report_escapes_html_and_survives_a_missing_image(tmp_path):
    import triage_report

    bad = answer("http://127.0.0.1:9/<script>.png", "person", True)
    summary = {"label": "<b>person</b>", "run_id": "r", "data_interval_start": "a", "data_interval_end": "b"}
    report = triage_report.write_report([bad], summary, str(tmp_path), **COSTS)
    page = Path(report["report_html"]).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>person</b>" not in page
    assert "(image unavailable)" in page
    assert report["flagged"] == 1


# --- the training manifest ---------------------------------------------------------------------


def test_manifest_records_and_ground_truth_form_follow_the_answers():
    import manifests

    images = [{"source": f"s3://b/{n}.png", "url": f"s3://b/{n}.png"} for n in ("a", "b", "c")]
    labels = ["person", "car"]
    answers = [
        answer("s3://b/a.png", "person", True),
        answer("s3://b/a.png", "car", True),
        answer("s3://b/b.png", "person", False),
        answer("s3://b/b.png", "car", True),
        answer("s3://b/c.png", "person", True),
        answer("s3://b/c.png", "car", None, state="failed"),
    ]
    records = manifests.label_records(images, labels, answers)
    assert [r["labels"] for r in records] == [["person", "car"], ["car"], ["person"]]
    assert records[2]["answers"] == {"person": True, "car": None}

    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    manifest = manifests.ground_truth_manifest(records, labels, "training_data_etl", created)
    assert [line["source-ref"] for line in manifest] == ["s3://b/a.png", "s3://b/b.png"]
    assert manifest[1]["image-contains"] == [1]
    assert manifest[1]["image-contains-metadata"] == {
        "job-name": "labeling-job/training_data_etl",
        "class-map": {"1": "car"},
        "human-annotated": "yes",
        "creation-date": "2026-01-02T03:04:05.000000",
        "type": "groundtruth/image-classification-multilabel",
    }


def test_manifest_carries_the_crowds_confidence_and_worker_count_the_ground_truth_way():
    import manifests

    images = [{"source": "s3://b/a.png", "url": "s3://b/a.png"}]
    answers = [
        answer("s3://b/a.png", "person", True, confidence=0.9846, answers=3),
        answer("s3://b/a.png", "car", False, confidence=0.991, answers=4),
    ]
    (record,) = manifests.label_records(images, ["person", "car"], answers)
    assert (record["confidence"], record["workers"]) == ({"person": 0.9846, "car": 0.991}, {"person": 3, "car": 4})
    created = datetime(2026, 1, 2, tzinfo=timezone.utc)
    (line,) = manifests.ground_truth_manifest([record], ["person", "car"], "etl", created)
    assert line["image-contains-metadata"]["confidence-map"] == {"0": 0.9846}
    assert line["image-contains-metadata"]["worker-count-map"] == {"0": 3}
    assert line["image-contains-metadata"]["human-annotated"] == "yes"


# --- the DAGs as Airflow parses them -----------------------------------------------------------


def _dag_bag(folder):
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag
    return DagBag(str(folder))


@pytest.fixture(scope="module")
def example_dags():
    bag = _dag_bag(EXAMPLE_DAGS)
    assert bag.import_errors == {}
    return bag.dags


def test_only_the_three_example_dags_are_parsed(example_dags):
    assert sorted(example_dags) == ["example_imagecontains", "surveillance_triage", "training_data_etl"]


def test_surveillance_triage_runs_hourly_over_the_past_hour_in_mapped_batches(example_dags):
    dag = example_dags["surveillance_triage"]
    # A run at hh:00 covers the hour before it (the demo's run relies on this too).
    # The SDK's timetable (Airflow 3.2+) names these expression and interval, the core one before it _expression, _interval.
    timetable = dag.timetable
    expression = getattr(timetable, "expression", None) or timetable._expression
    interval = getattr(timetable, "interval", None) or timetable._interval
    assert (expression, interval) == ("0 * * * *", INTERVAL)
    assert dag.task_dict["ask_crowd"].is_mapped and dag.task_dict["wait_for_answers"].is_mapped
    assert dag.task_dict["wait_for_answers"].partial_kwargs["failed_policy"] == "report"
    assert set(dag.task_dict["wait_for_answers"].downstream_task_ids) == {
        "report_frames_to_inspect",
        "count_clear_frames",
        "keep_audit_pairs",
    }
    # The pre-screen's thresholds come from the pairs kept by earlier runs, which the DAG keeps as an Asset.
    assert "calibrate_prescreen" in dag.task_dict["ask_crowd"].upstream_task_ids
    [asset] = dag.task_dict["keep_audit_pairs"].outlets
    assert asset.name == "imagecontains_surveillance_audit_pairs"


def test_training_data_etl_declares_its_dataset_as_an_asset(example_dags):
    dag = example_dags["training_data_etl"]
    assert dag.task_dict["ask_crowd"].is_mapped
    [asset] = dag.task_dict["write_dataset"].outlets
    assert asset.name == "imagecontains_training_dataset"
    assert asset.uri.startswith("file://")


def test_the_readmes_minimal_dag_parses(tmp_path):
    readme = (EXAMPLE_DAGS.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "find_people.py").write_text(code)
    bag = _dag_bag(tmp_path)
    assert bag.import_errors == {}
    dag = bag.dags["find_people"]
    assert dag.task_dict["submit"].images[1] == "https://example.com/cam2/0002.jpg"
    assert dag.task_dict["wait"].downstream_task_ids == {"people"}


def test_frames_the_crowd_could_not_settle_can_go_to_the_teams_reviewers(monkeypatch):
    monkeypatch.setenv("IMAGECONTAINS_ESCALATE_TO_REVIEWERS", "true")
    from airflow.providers.standard.operators.hitl import HITLOperator

    bag = _dag_bag(EXAMPLE_DAGS)
    assert bag.import_errors == {}
    dag = bag.dags["surveillance_triage"]
    ask = dag.task_dict["ask_reviewers"]
    assert ask.is_mapped and issubclass(ask.operator_class, HITLOperator)
    assert ask.partial_kwargs["options"] == ["Contains it", "Does not contain it", "Cannot tell"]
    assert ask.partial_kwargs["defaults"] == "Cannot tell"  # taken when nobody answers in time
    assert ask.upstream_task_ids == {"frames_for_reviewers"}
    assert ask.downstream_task_ids == {"record_reviews"}
    assert dag.task_dict["record_reviews"].trigger_rule == "all_done"


def test_review_questions_and_answers_follow_the_unsettled_frames(tmp_path):
    import reviews

    answers = [
        answer("http://h/ok.png", "person", True),
        answer("http://h/a.png", "person", None, state="failed"),
        {**answer("s3://b/c.png", "person", None, state="failed"), "problem": {"code": "Inconclusive", "message": "m"}},
    ]
    requests = reviews.review_requests(answers, "person")
    assert [r["subject"] for r in requests] == ["Does frame a.png show a person?", "Does frame c.png show a person?"]
    assert requests[0]["body"].startswith("![a.png](http://h/a.png)") and "Expired" in requests[0]["body"]
    assert "![" not in requests[1]["body"] and "s3://b/c.png" in requests[1]["body"]

    answered = [{"chosen_options": ["Contains it"], "responded_by_user": {"id": "1", "name": "ana"}}, None]
    outcomes = reviews.review_outcomes(answers, answered)
    assert [
        (o["frame"], o["review"], o["contains_target"], o["reviewed_by"], o["crowd_problem"]) for o in outcomes
    ] == [
        ("a.png", "Contains it", True, "ana", "Expired"),
        ("c.png", None, None, None, "Inconclusive"),
    ]
    assert reviews.write_reviews(outcomes, str(tmp_path / "run")) == {"reviewed": 1, "contains": 1, "unanswered": 1}
    assert json.loads((tmp_path / "run" / "reviews.json").read_text()) == outcomes


def test_report_copies_frames_the_crowd_server_serves_from_its_images_folder(tmp_path, crowd_server):
    import surveillance_triage
    import triage_report

    key = generate_frames(tmp_path / "frames", 2)
    server = crowd_server(workforce="human", images_dir=str(tmp_path / "frames"))
    answers = [answer(f"{server.endpoint_url}/images/{name}", "person", True) for name in key]
    summary = {"label": "person", "run_id": "r", "data_interval_start": "a", "data_interval_end": "b"}

    report = triage_report.write_report(
        answers,
        summary,
        str(tmp_path / "report"),
        surveillance_triage.frame_reader("imagecontains_default", None),
        **COSTS,
    )

    page = Path(report["report_html"]).read_text()
    assert "(image unavailable)" not in page
    for name in key:
        (copied,) = (tmp_path / "report" / "thumbnails").glob(f"*-{name}")
        assert copied.read_bytes() == (tmp_path / "frames" / name).read_bytes()


def test_a_run_that_finds_no_frame_in_its_interval_says_file_times_choose_them(tmp_path):
    generate_frames(tmp_path / "frames", 2)  # modified now, long after the interval below
    start = datetime(2026, 1, 1, 11, tzinfo=timezone.utc)
    hint = no_images_hint(str(tmp_path / "frames"), "http://127.0.0.1:9/frames", None, start)
    assert "holds 2 images" in hint and "modification time" in hint and "2026-01-01T11:00:00+00:00" in hint
    (tmp_path / "empty").mkdir()
    assert no_images_hint(str(tmp_path / "empty"), "http://127.0.0.1:9/", None, start) is None
