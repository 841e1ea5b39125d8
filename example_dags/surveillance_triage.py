"""Hourly triage of surveillance frames: the crowd says which frames show a person.

Every run lists the frames that arrived during its data interval (a local folder served over
HTTP, or an S3 prefix), asks the crowd whether each contains a person in batches spread over the
workers by dynamic task mapping, waits for the answers, then writes the frames that need a
look by a human (a person was seen, or the crowd could not answer) to a report: CSV, JSON and an
HTML page with thumbnails (written by the helper ``triage_report.py``). The other frames are counted.

Configuration (DAG params, their defaults from environment variables):

* ``frames_source`` (``IMAGECONTAINS_FRAMES_SOURCE``): a local folder or ``s3://bucket/prefix/``.
* ``frames_base_url`` (``IMAGECONTAINS_FRAMES_BASE_URL``): http(s) URL under which a local folder is served.
* ``label`` (``person``), ``batch_size`` (frames per mapped task, 100).
* ``reports_dir`` (``IMAGECONTAINS_REPORTS_DIR``): a local folder or S3 prefix; one sub-folder per run.
* ``aws_conn_id`` (``IMAGECONTAINS_AWS_CONN_ID``, default ``aws_default``): the Amazon connection through which
  ``s3://`` frames, reports and audit pairs are read and written (Airflow's ``ObjectStoragePath``), and with
  which the operator presigns ``s3://`` frames for the crowd.

The connection is ``IMAGECONTAINS_CONN_ID`` (default ``imagecontains_default``): the local server
by default, the real service once the connection points there.

Pre-screen (docs/prescreen.md): with ``IMAGECONTAINS_PRESCREEN`` set to a scorer's import path (e.g.
``airflow_provider_imagecontains.prescreen.people.PeopleScorer``), a model answers the frames it is sure
about and only the rest are paid for. Its thresholds are earned: every run adds the (score, crowd answer)
pairs of its frames to the Asset ``imagecontains_surveillance_audit_pairs`` (``IMAGECONTAINS_AUDIT_PAIRS_URI``,
the most recent ``audit_window`` pairs), and the next run calibrates from them at
``target_precision``. Until there are enough pairs the model settles nothing; if it starts to disagree
with the crowd on the audited frames (``IMAGECONTAINS_AUDIT_RATE``, default 5%), its share shrinks again.

Escalation: with ``IMAGECONTAINS_ESCALATE_TO_REVIEWERS=true`` (Airflow 3.1 and later), every frame the crowd
could not settle (``Inconclusive``, ``Expired``, ...) becomes a question for the team's own reviewers
through Airflow's human-in-the-loop operator (one mapped ``ask_reviewers`` task per frame, answered in the
Airflow UI's Required Actions); ``record_reviews`` writes their answers to ``reviews.json`` next to the
report. The report itself does not wait for them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Asset, Param, dag, task
from audit_pairs import load_audit_pairs, store_audit_pairs
from example_io import as_records, batched, join_location, list_images, no_images_hint, read_image
from reviews import REVIEW_OPTIONS, review_outcomes, review_requests, write_reviews
from triage_report import needs_inspection, write_report

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.prescreen import PreScreen, calibrate_thresholds
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor

ESCALATE_TO_REVIEWERS = os.environ.get("IMAGECONTAINS_ESCALATE_TO_REVIEWERS", "").lower() in ("1", "true", "yes")
if ESCALATE_TO_REVIEWERS:
    try:
        from airflow.providers.standard.operators.hitl import HITLOperator
    except ImportError as err:
        raise ImportError(
            "IMAGECONTAINS_ESCALATE_TO_REVIEWERS needs Airflow 3.1 or later with apache-airflow-providers-standard "
            "1.6 or later (human-in-the-loop operators)."
        ) from err

try:
    from airflow.sdk import CronTriggerTimetable
except ImportError:  # Airflow < 3.2; common-compat does not re-export timetables
    from airflow.timetables.trigger import CronTriggerTimetable

log = logging.getLogger(__name__)

AIRFLOW_HOME = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
CONN_ID = os.environ.get("IMAGECONTAINS_CONN_ID", "imagecontains_default")
POLL_INTERVAL_SECONDS = float(os.environ.get("IMAGECONTAINS_POLL_INTERVAL", "60"))
# Spend cap of one hourly run: crowd tasks planned by all mapped instances together (max_run_tasks).
MAX_RUN_TASKS = int(os.environ.get("IMAGECONTAINS_MAX_RUN_TASKS", "20000"))
# A question nobody answers in time is closed as "Cannot tell": the frame stays in the report to inspect.
REVIEW_TIMEOUT = timedelta(hours=float(os.environ.get("IMAGECONTAINS_REVIEW_HOURS", "24")))
PRESCREEN = os.environ.get("IMAGECONTAINS_PRESCREEN") or None
AUDIT_RATE = float(os.environ.get("IMAGECONTAINS_AUDIT_RATE", "0.05"))
# Dollars a crowd task costs on average (answers per task x reward per answer), for the spend the model avoided.
CROWD_TASK_COST = (
    float(os.environ["IMAGECONTAINS_CROWD_TASK_COST"]) if os.environ.get("IMAGECONTAINS_CROWD_TASK_COST") else None
)
# Dollars paid per crowd answer (the local server's --reward), for the run's cost in the report.
REWARD_PER_ANSWER = float(os.environ.get("IMAGECONTAINS_REWARD_PER_ANSWER", "0.01"))
# Fixed when the DAG is parsed, because an Asset names one place.
AUDIT_PAIRS = Asset(
    name="imagecontains_surveillance_audit_pairs",
    uri=os.environ.get(
        "IMAGECONTAINS_AUDIT_PAIRS_URI", "file://" + os.path.join(AIRFLOW_HOME, "imagecontains", "audit-pairs.json")
    ),
)


def frame_reader(conn_id: str, aws_conn_id: str | None) -> Callable[[str], bytes]:
    """Reads a frame by its URL (an ``s3://`` one on ``aws_conn_id``); frames the crowd server serves itself
    (``--images-dir``) answer signed-in people only, so those are read through a URL presigned for the
    connection's account."""
    hook = ImageContainsHook(conn_id)
    return lambda url: read_image(hook.presign_image_url(url), aws_conn_id)


@dag(
    schedule=CronTriggerTimetable("0 * * * *", timezone="UTC", interval=timedelta(hours=1)),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["imagecontains", "example"],
    params={
        "frames_source": Param(
            os.environ.get("IMAGECONTAINS_FRAMES_SOURCE", os.path.join(AIRFLOW_HOME, "imagecontains", "frames")),
            type="string",
            description="Local folder or s3://bucket/prefix/ where the cameras drop frames.",
        ),
        "frames_base_url": Param(
            os.environ.get("IMAGECONTAINS_FRAMES_BASE_URL"),
            type=["null", "string"],
            description="http(s) URL under which a local frames folder is served to the crowd.",
        ),
        "aws_conn_id": Param(
            os.environ.get("IMAGECONTAINS_AWS_CONN_ID", "aws_default"),
            type="string",
            description="Amazon connection for s3:// frames, reports and audit pairs (the operator presigns "
            "frames with it too).",
        ),
        "label": Param("person", type="string", minLength=1, description="What to look for in each frame."),
        "batch_size": Param(100, type="integer", minimum=1, description="Frames per mapped crowd task."),
        "target_precision": Param(
            0.99,
            type="number",
            exclusiveMinimum=0.5,
            exclusiveMaximum=1,
            description="How often the pre-screen model's own answers must be right (each side).",
        ),
        "audit_window": Param(
            50_000,
            type="integer",
            minimum=1,
            description="Most recent audited pairs kept: enough for the model's own answers to be checked by "
            "their audits alone (at audit_rate), few enough that a drifting model loses its thresholds.",
        ),
        "crowd_accuracy_on_yes": Param(
            0.95,
            type="number",
            exclusiveMinimum=0.5,
            maximum=1,
            description="How often the crowd answers 'yes' for a frame with the label (measure it with gold questions).",
        ),
        "crowd_accuracy_on_no": Param(
            0.95,
            type="number",
            exclusiveMinimum=0.5,
            maximum=1,
            description="How often the crowd answers 'no' for a frame without the label.",
        ),
        "min_pairs": Param(
            200, type="integer", minimum=1, description="Audited pairs needed before the model answers anything."
        ),
        "reports_dir": Param(
            os.environ.get("IMAGECONTAINS_REPORTS_DIR", os.path.join(AIRFLOW_HOME, "imagecontains", "reports")),
            type="string",
            description="Local folder or S3 prefix for the reports (one sub-folder per run).",
        ),
    },
)
def surveillance_triage():
    @task
    def list_frames(params: dict[str, Any], data_interval_start=None, data_interval_end=None) -> list[list[dict]]:
        """The frames that arrived in this run's data interval, as batches of questions."""
        frames = list_images(
            params["frames_source"],
            base_url=params["frames_base_url"],
            conn_id=params["aws_conn_id"],
            modified_since=data_interval_start,
            modified_before=data_interval_end,
        )
        log.info("%d frames arrived between %s and %s", len(frames), data_interval_start, data_interval_end)
        if not frames:
            hint = no_images_hint(
                params["frames_source"], params["frames_base_url"], params["aws_conn_id"], data_interval_start
            )
            if hint:
                log.warning(hint)
        questions = [{"url": frame["url"], "label": params["label"]} for frame in frames]
        return batched(questions, params["batch_size"])

    @task(multiple_outputs=True)
    def calibrate_prescreen(params: dict[str, Any]) -> dict[str, Any]:
        """Thresholds from the audited pairs kept so far; none (everything to the crowd) until they suffice."""
        if PRESCREEN is None:
            return {"accept_above": None, "reject_below": None, "pairs": 0, "reason": "no pre-screen configured"}
        pairs = load_audit_pairs(AUDIT_PAIRS.uri, params["aws_conn_id"])
        target = params["target_precision"]
        thresholds = calibrate_thresholds(
            pairs,
            contains_precision=target,
            not_contains_precision=target,
            crowd_accuracy_on_yes=params["crowd_accuracy_on_yes"],
            crowd_accuracy_on_no=params["crowd_accuracy_on_no"],
            min_pairs=params["min_pairs"],
        )
        log.info("Pre-screen thresholds from %d audited pairs: %s", len(pairs), thresholds)
        return thresholds.to_dict()

    batches = list_frames()
    thresholds = calibrate_prescreen()
    prescreen = (
        PreScreen(
            scorer=PRESCREEN,
            accept_above=thresholds["accept_above"],
            reject_below=thresholds["reject_below"],
            calibration_pairs=thresholds["pairs"],
            audit_rate=AUDIT_RATE,
            crowd_task_cost=CROWD_TASK_COST,
        )
        if PRESCREEN is not None
        else None
    )
    submissions = ImageContainsOperator.partial(
        task_id="ask_crowd",
        imagecontains_conn_id=CONN_ID,
        aws_conn_id="{{ params.aws_conn_id }}",
        max_run_tasks=MAX_RUN_TASKS,
        prescreen=prescreen,
    ).expand(images=batches)
    # The thresholds inside PreScreen resolve when ask_crowd renders; Airflow finds no dependency inside an object.
    thresholds >> submissions
    answers = (
        ImageContainsSensor.partial(
            task_id="wait_for_answers", failed_policy="report", poke_interval=POLL_INTERVAL_SECONDS, deferrable=True
        )
        .expand(submission=submissions.output)
        .output
    )

    @task(trigger_rule="none_failed")
    def report_frames_to_inspect(
        answers, params: dict[str, Any], run_id=None, data_interval_start=None, data_interval_end=None
    ):
        summary = {
            "label": params["label"],
            "run_id": run_id,
            "data_interval_start": data_interval_start.isoformat(),
            "data_interval_end": data_interval_end.isoformat(),
        }
        run_dir = join_location(params["reports_dir"], data_interval_start.strftime("%Y%m%dT%H%M%S"))
        report = write_report(
            as_records(answers),
            summary,
            run_dir,
            frame_reader(CONN_ID, params["aws_conn_id"]),
            conn_id=params["aws_conn_id"],
            reward_per_answer=REWARD_PER_ANSWER,
            crowd_task_cost=CROWD_TASK_COST,
        )
        log.info(
            "%d of %d frames need inspection; report: %s", report["flagged"], report["frames"], report["report_html"]
        )
        return report

    @task(trigger_rule="none_failed")
    def count_clear_frames(answers) -> int:
        clear = sum(1 for answer in as_records(answers) if not needs_inspection(answer))
        log.info("%d frames are clear", clear)
        return clear

    @task(trigger_rule="none_failed", outlets=[AUDIT_PAIRS])
    def keep_audit_pairs(answers, params: dict[str, Any]) -> int:
        """Add this run's (score, crowd answer) pairs to the Asset the next run calibrates from."""
        if PRESCREEN is None:
            return 0
        kept = store_audit_pairs(
            AUDIT_PAIRS.uri, as_records(answers), AUDIT_RATE, params["audit_window"], params["aws_conn_id"]
        )
        log.info("%d audited pairs kept for calibration", kept)
        return kept

    report_frames_to_inspect(answers)
    count_clear_frames(answers)
    keep_audit_pairs(answers)

    if ESCALATE_TO_REVIEWERS:

        @task(trigger_rule="none_failed")
        def frames_for_reviewers(answers, params: dict[str, Any]) -> list[dict[str, str]]:
            requests = review_requests(as_records(answers), params["label"])
            log.info("%d frames the crowd could not settle go to the team's reviewers", len(requests))
            return requests

        requests = frames_for_reviewers(answers)
        reviews = HITLOperator.partial(
            task_id="ask_reviewers",
            options=REVIEW_OPTIONS,
            defaults=REVIEW_OPTIONS[2],
            response_timeout=REVIEW_TIMEOUT,
        ).expand_kwargs(requests)

        @task(trigger_rule="all_done")
        def record_reviews(answers, params: dict[str, Any], ti=None, data_interval_start=None) -> dict[str, int]:
            """Write the reviewers' answers next to the run's report (a failed question is recorded unanswered)."""
            records = as_records(answers)
            count = sum(1 for answer in records if answer["state"] != "completed")
            reviews = [ti.xcom_pull(task_ids="ask_reviewers", map_indexes=index) for index in range(count)]
            outcomes = review_outcomes(records, reviews)
            run_dir = join_location(params["reports_dir"], data_interval_start.strftime("%Y%m%dT%H%M%S"))
            counts = write_reviews(outcomes, run_dir, params["aws_conn_id"])
            log.info("Reviewers on %d unsettled frames: %s", len(outcomes), counts)
            return counts

        reviews >> record_reviews(answers)


surveillance_triage()
