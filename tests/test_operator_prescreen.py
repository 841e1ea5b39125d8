"""ImageContainsOperator and ImageContainsSensor with a pre-screen model, against the local crowd server."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import fields
from datetime import datetime

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred
from airflow.sdk import DAG
from loopback import LoopbackServer

from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.prescreen import PreScreen
from airflow_provider_imagecontains.prescreen.screening import is_audited
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor

TEST_FN = "image-contains-test"


class ByteScorer:
    """Scores an image by the number written in its bytes: proves the bytes were fetched and judged."""

    def score(self, url: str, image: bytes, label: str) -> float | None:
        text = image.decode()
        if text == "raise":
            raise RuntimeError("model crashed")
        return None if text == "none" else float(text)


@pytest.fixture
def images():
    """A loopback image host: ``/<name>`` answers with the bytes registered for it, anything else 404."""
    served: dict[str, bytes] = {}

    def answer(method, path, headers, body):
        name = path.lstrip("/")
        return (200, {"Content-Type": "image/jpeg"}, served[name]) if name in served else (404, {}, b"")

    server = LoopbackServer(answer)

    def add(name: str, content: str) -> str:
        served[name] = content.encode()
        return f"{server.endpoint_url}/{name}"

    yield add
    server.close()


PRESCREEN_FIELDS = {field.name for field in fields(PreScreen)}


def _operator(image_urls, *, no_prescreen: bool = False, **kwargs) -> ImageContainsOperator:
    """The operator with ``PreScreen(ByteScorer(), accept_above=0.9, reject_below=0.1, audit_rate=0)``, changed
    by the PreScreen fields in ``kwargs``; the rest go to the operator."""
    settings = {"scorer": ByteScorer(), "accept_above": 0.9, "reject_below": 0.1, "audit_rate": 0.0}
    settings.update({key: kwargs.pop(key) for key in PRESCREEN_FIELDS & kwargs.keys()})
    with DAG("prescreen_dag", schedule=None, start_date=datetime(2026, 1, 1)):
        return ImageContainsOperator(
            task_id="submit",
            images=image_urls,
            target_label="person",
            function_name=TEST_FN,
            prescreen=None if no_prescreen else PreScreen(**settings),
            **kwargs,
        )


def _crowd_urls(server) -> list[str]:
    return sorted(task["input"]["image"]["url"] for task in server.tasks(function_name=TEST_FN))


def test_only_the_uncertain_images_become_crowd_tasks_and_records_cover_every_image(crowd_server, images) -> None:
    server = crowd_server()
    scores = [0.99, 0.02, 0.5, 0.95, 0.1, 0.9, 0.3, 0.05]
    urls = [images(f"{n}.jpg", str(score)) for n, score in enumerate(scores)]

    records = _operator(urls, wait_for_completion=True, deferrable=False, poll_interval=0.05).execute({})

    uncertain = [url for url, score in zip(urls, scores, strict=True) if 0.1 < score < 0.9]
    assert _crowd_urls(server) == sorted(uncertain)
    assert [r["url"] for r in records] == urls  # every image, in submission order
    for record, score in zip(records, scores, strict=True):
        assert record["model_score"] == score and record["state"] == "completed"
        if record["url"] in uncertain:
            assert record["source"] == "crowd" and record["task_name"] and record["model_contains_target"] is None
            assert isinstance(record["contains_target"], bool)
        else:
            assert record["source"] == "model" and record["task_name"] is None and record["problem"] is None
            assert record["contains_target"] is (score >= 0.9) is record["model_contains_target"]


def test_the_audit_share_holds_and_a_rerun_audits_the_same_images(crowd_server, images, capsys) -> None:
    server = crowd_server()
    urls = [images(f"{n}.jpg", "0.97" if n % 3 else "0.03") for n in range(400)]

    handle = _operator(urls, audit_rate=0.25).execute({})
    audited = _crowd_urls(server)
    again = _operator(urls, audit_rate=0.25).execute({})

    assert again == handle and _crowd_urls(server) == audited  # same audits, no new tasks
    assert audited == sorted(url for url in urls if is_audited(url, "person", 0.25))
    assert 70 <= len(audited) <= 130  # 100 expected; binomial standard deviation 8.7
    crowd_entries = [t for t in handle["tasks"] if t["task_name"] is not None]
    assert all(t["model_contains_target"] is not None for t in crowd_entries)
    log = capsys.readouterr().out
    assert f"the model settled {400 - len(audited)} of 400 images" in log
    assert f"{len(audited)} audits of model answers" in log


def test_a_missing_image_and_a_raising_scorer_end_in_the_crowd_with_the_reason_logged(
    crowd_server, images, capsys
) -> None:
    server = crowd_server()
    urls = [images("sure.jpg", "0.99"), images("crash.jpg", "raise"), images("unsure.jpg", "none")]
    missing = urls[0].replace("sure.jpg", "gone.jpg")
    urls.append(missing)

    records = _operator(urls, wait_for_completion=True, deferrable=False, poll_interval=0.05).execute({})

    assert _crowd_urls(server) == sorted(urls[1:])
    assert [(r["source"], r["model_score"]) for r in records] == [
        ("model", 0.99),
        ("crowd", None),
        ("crowd", None),
        ("crowd", None),
    ]
    log = capsys.readouterr().out
    assert "3 images have no model score and go to the crowd" in log
    assert "crash.jpg (label 'person'): scorer failed: RuntimeError: model crashed" in log
    assert "unsure.jpg (label 'person'): the scorer cannot judge this label" in log
    assert "gone.jpg (label 'person'): fetch failed: HTTPError: 404" in log


class NeedsAMissingLibrary:
    def __init__(self) -> None:
        import no_such_vision_library  # noqa: F401  (as a scorer whose extra is not installed)


@pytest.mark.parametrize(
    "scorer", ["no_such_module.Scorer", f"{__name__}.NoSuchClass", f"{__name__}.NeedsAMissingLibrary"]
)
def test_a_scorer_that_cannot_be_loaded_fails_the_task_before_anything_is_paid(crowd_server, images, scorer) -> None:
    server = crowd_server()
    urls = [images(f"{n}.jpg", "0.99") for n in range(3)]
    for dry_run in (False, True):
        with pytest.raises(AirflowFailException, match=r"could not be loaded .*nothing was fetched or submitted"):
            _operator(urls, scorer=scorer, dry_run=dry_run).execute({})
    assert server.tasks(function_name=TEST_FN) == []
    assert not [key for key in server.request_counts() if key[0] in ("PUT", "GET")]


def test_a_scorer_given_by_import_path_is_built_when_the_task_runs(crowd_server, images) -> None:
    server = crowd_server()
    urls = [images("a.jpg", "0.99"), images("b.jpg", "0.5")]
    _operator(urls, scorer=f"{__name__}.ByteScorer").execute({})
    assert _crowd_urls(server) == [urls[1]]


def test_deferred_wait_and_the_sensor_give_the_same_complete_records(crowd_server, images) -> None:
    crowd_server()
    scores = [0.99, 0.5, 0.01, 0.6]
    urls = [images(f"{n}.jpg", str(score)) for n, score in enumerate(scores)]
    operator = _operator(urls, wait_for_completion=True, deferrable=True, poll_interval=0.05)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    assert deferred.value.kwargs == {"model_scores": scores}
    event = asyncio.run(anext(deferred.value.trigger.run())).payload
    records = operator.execute_complete({}, event, **deferred.value.kwargs)

    handle = _operator(urls).execute({})  # same tasks: the sensor path
    with DAG("prescreen_dag", schedule=None, start_date=datetime(2026, 1, 1)):
        sensor = ImageContainsSensor(task_id="wait", submission=handle, deferrable=False, poke_interval=0.05)
    assert sensor.execute({}) == records
    assert [(r["source"], r["model_score"]) for r in records] == [
        ("model", 0.99),
        ("crowd", 0.5),
        ("model", 0.01),
        ("crowd", 0.6),
    ]


def test_s3_images_are_fetched_with_the_operators_aws_connection(
    crowd_server, s3_endpoint, s3_client, monkeypatch
) -> None:
    server = crowd_server()
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_PRESCREEN",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
            }
        ),
    )
    s3 = s3_client()
    s3.create_bucket(Bucket="prescreen-frames")
    s3.put_object(Bucket="prescreen-frames", Key="sure.jpg", Body=b"0.99")
    s3.put_object(Bucket="prescreen-frames", Key="unsure.jpg", Body=b"0.5")

    handle = _operator(
        ["s3://prescreen-frames/sure.jpg", "s3://prescreen-frames/unsure.jpg"], aws_conn_id="aws_prescreen"
    ).execute({})

    assert [(t["url"], t["model_score"], t["task_name"] is None) for t in handle["tasks"]] == [
        ("s3://prescreen-frames/sure.jpg", 0.99, True),
        ("s3://prescreen-frames/unsure.jpg", 0.5, False),
    ]
    assert len(server.tasks(function_name=TEST_FN)) == 1


def test_thresholds_are_checked_before_any_image_is_fetched_or_task_submitted(crowd_server, images) -> None:
    server = crowd_server()
    url = images("a.jpg", "0.5")
    with pytest.raises(AirflowFailException, match=r"reject_below=0\.9 must be below accept_above=0\.8"):
        _operator([url], accept_above=0.8, reject_below=0.9).execute({})
    with pytest.raises(AirflowFailException, match="audit_rate"):
        _operator([url], audit_rate=1.5).execute({})
    with pytest.raises(ValueError, match="import path"):
        _operator([url], scorer="Scorer")
    assert server.tasks(function_name=TEST_FN) == []


def test_thresholds_rendered_by_templates_are_numbers(crowd_server, images) -> None:
    server = crowd_server()
    urls = [images("a.jpg", "0.97"), images("b.jpg", "0.5")]
    _operator(urls, accept_above="0.95", reject_below="None").execute({})
    assert _crowd_urls(server) == [urls[1]]


def test_without_a_prescreen_records_say_crowd(crowd_server, caplog) -> None:
    crowd_server()
    caplog.set_level(logging.INFO)
    records = _operator(
        ["https://img.example.com/x.jpg"],
        no_prescreen=True,
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.05,
    ).execute({})
    assert [(r["source"], r["model_score"], r["model_contains_target"]) for r in records] == [("crowd", None, None)]


def test_a_dry_run_scores_and_counts_only_the_crowd_tasks(crowd_server, images) -> None:
    server = crowd_server()
    urls = [images("a.jpg", "0.97"), images("b.jpg", "0.5"), images("c.jpg", "0.02")]
    summary = _operator(urls, dry_run=True).execute({})
    assert (summary["total_tasks"], summary["new_tasks"], summary["settled_by_model"]) == (1, 1, 2)
    assert server.tasks(function_name=TEST_FN) == []


def test_images_the_crowd_server_serves_are_scored_through_urls_presigned_for_the_account(
    crowd_server, tmp_path, capsys
) -> None:
    # The documented private-team set-up: frames under --images-dir, people on the worker page.
    (tmp_path / "frames").mkdir()
    for name, score in (("a.jpg", "0.99"), ("b.jpg", "0.02"), ("c.jpg", "0.5")):
        (tmp_path / "frames" / name).write_bytes(score.encode())
    server = crowd_server(workforce="human", images_dir=str(tmp_path / "frames"))
    urls = [f"{server.endpoint_url}/images/{name}" for name in ("a.jpg", "b.jpg", "c.jpg")]

    handle = _operator(urls).execute({})

    assert "scored 3 of 3 images" in capsys.readouterr().out
    assert [entry["model_score"] for entry in handle["tasks"]] == [0.99, 0.02, 0.5]
    assert _crowd_urls(server) == [urls[2]], "the crowd is shown the plain URL, never a signed one"


class DetectorScorer(ByteScorer):
    """A detector's scorer: it gives at most 0.2 to an image in which it detects nothing."""

    nothing_detected_score = 0.2


def test_hand_set_thresholds_warn_and_no_image_is_rejected_at_a_nothing_detected_score(
    crowd_server, images, capsys
) -> None:
    server = crowd_server()
    urls = [images("nothing.jpg", "0.09"), images("weak.jpg", "0.25"), images("sure.jpg", "0.97")]

    handle = _operator(urls, scorer=DetectorScorer(), reject_below=0.3).execute({})

    assert [entry["model_contains_target"] for entry in handle["tasks"]] == [None, False, True]
    assert _crowd_urls(server) == [urls[0]], "a frame the detector saw nothing in goes to the crowd"
    log = capsys.readouterr().out
    assert "were set by hand, without calibration pairs" in log

    _operator(urls, scorer=DetectorScorer(), reject_below=0.3, calibration_pairs=500).execute({})
    assert "set by hand" not in capsys.readouterr().out, "calibrated thresholds raise no warning"
    _operator(urls, scorer=DetectorScorer(), reject_below=0.1, calibration_pairs=500).execute({})
    assert "the model answers 'does not contain' for no image" in capsys.readouterr().out


def test_templated_settings_inside_the_prescreen_render_with_the_task_and_each_task_renders_its_own(
    crowd_server, images
) -> None:
    server = crowd_server()
    urls = [images("a.jpg", "0.97"), images("b.jpg", "0.5"), images("c.jpg", "0.02")]
    shared = PreScreen(
        scorer=ByteScorer(),
        accept_above="{{ params.accept_above }}",
        reject_below="{{ params.reject_below }}",
        calibration_pairs="{{ params.pairs }}",
        audit_rate=0.0,
    )
    with DAG("prescreen_dag", schedule=None, start_date=datetime(2026, 1, 1)):
        first, second = (
            ImageContainsOperator(
                task_id=f"submit_{n}", images=urls, target_label="person", function_name=TEST_FN, prescreen=shared
            )
            for n in (1, 2)
        )
    first.render_template_fields({"params": {"accept_above": 0.95, "reject_below": 0.01, "pairs": 300}})

    assert (first.prescreen.accept_above, first.prescreen.reject_below, first.prescreen.calibration_pairs) == (
        "0.95",
        "0.01",
        "300",
    )
    assert second.prescreen.accept_above == "{{ params.accept_above }}", "the other task renders its own copy"
    handle = first.execute({})
    assert [entry["model_contains_target"] for entry in handle["tasks"]] == [True, None, None]
    assert _crowd_urls(server) == urls[1:]


def test_the_separate_prescreen_arguments_still_work_with_a_deprecation_warning(crowd_server, images) -> None:
    server = crowd_server()
    urls = [images("a.jpg", "0.97"), images("b.jpg", "0.5")]
    with DAG("prescreen_dag", schedule=None, start_date=datetime(2026, 1, 1)):
        with pytest.warns(AirflowProviderDeprecationWarning, match=r"prescreen=PreScreen\("):
            operator = ImageContainsOperator(
                task_id="submit",
                images=urls,
                target_label="person",
                function_name=TEST_FN,
                prescreen=f"{__name__}.ByteScorer",
                accept_above=0.9,
                audit_rate=0.0,
                prescreen_concurrency=2,
            )
    assert operator.prescreen == PreScreen(
        scorer=f"{__name__}.ByteScorer", accept_above=0.9, audit_rate=0.0, concurrency=2
    )
    operator.execute({})
    assert _crowd_urls(server) == [urls[1]]


def test_prescreen_settings_given_twice_or_without_a_scorer_are_refused() -> None:
    with DAG("prescreen_dag", schedule=None, start_date=datetime(2026, 1, 1)):
        with pytest.raises(ValueError, match=r"inside prescreen=PreScreen\(...\) only, not also as accept_above"):
            ImageContainsOperator(
                task_id="twice", images=[], prescreen=PreScreen(scorer=ByteScorer()), accept_above=0.9
            )
        with pytest.raises(ValueError, match="reject_below set without a prescreen"):
            ImageContainsOperator(task_id="no_scorer", images=[], reject_below=0.1)
    with pytest.raises(ValueError, match="Invalid concurrency 0"):
        PreScreen(scorer=ByteScorer(), concurrency=0)
