"""The provider's operator and sensor, one feature per snippet; docs/operators.md shows each snippet.

It runs as is against a gateway (``imagecontains-server``) on the ``imagecontains_default`` connection
with the free ``image-contains-test`` function. Environment: ``IMAGECONTAINS_CONN_ID``,
``IMAGECONTAINS_EXAMPLE_FUNCTION`` (``image-contains`` asks the gateway's workforce),
``IMAGECONTAINS_EXAMPLE_IMAGES_URL`` (where the frames are served) and ``IMAGECONTAINS_EXAMPLE_RECORDS_PATH``.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.prescreen import PreScreen
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor
from airflow_provider_imagecontains.storage import read_records

CONN_ID = os.environ.get("IMAGECONTAINS_CONN_ID", "imagecontains_default")
FUNCTION = os.environ.get("IMAGECONTAINS_EXAMPLE_FUNCTION", "image-contains-test")
IMAGES_URL = os.environ.get("IMAGECONTAINS_EXAMPLE_IMAGES_URL", "https://images.example.com/cams")
RECORDS_PATH = os.environ.get("IMAGECONTAINS_EXAMPLE_RECORDS_PATH", "file:///tmp/imagecontains-example")
FRAMES = [f"{IMAGES_URL}/frame_{n:04d}.png" for n in range(6)]

with DAG(
    dag_id="example_imagecontains",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "imagecontains"],
    default_args={"imagecontains_conn_id": CONN_ID},
):
    # [START howto_operator_imagecontains]
    # One crowd task per image; the names are derived from (DAG id, function, URL, label), so a retry or
    # a re-run finds the tasks it made before and pays for nothing twice.
    submit = ImageContainsOperator(
        task_id="submit",
        images=FRAMES,
        target_label="person",
        function_name=FUNCTION,
    )
    # [END howto_operator_imagecontains]

    # [START howto_sensor_imagecontains_deferrable]
    # One trigger watches every task of the submission; no worker slot is held while the crowd works.
    wait = ImageContainsSensor(
        task_id="wait",
        submission=submit.output,
        deferrable=True,
        poke_interval=5,
        timeout=3600,
    )
    # [END howto_sensor_imagecontains_deferrable]

    # [START howto_operator_imagecontains_dry_run]
    # Counts the tasks a real run would create (and pay for); submits nothing. A sensor given this
    # result skips.
    count_new_tasks = ImageContainsOperator(
        task_id="count_new_tasks",
        images=FRAMES,
        target_label=["person", "car"],
        function_name=FUNCTION,
        dry_run=True,
    )
    # [END howto_operator_imagecontains_dry_run]

    # [START howto_operator_imagecontains_mapped]
    @task
    def frame_batches() -> list[list[str]]:
        return [FRAMES[:3], FRAMES[3:]]

    # [START howto_operator_imagecontains_max_run_tasks]
    # max_tasks caps one mapped instance; max_run_tasks caps all instances of the run together.
    submit_batches = ImageContainsOperator.partial(
        task_id="submit_batches",
        target_label="car",
        function_name=FUNCTION,
        max_tasks=3,
        max_run_tasks=6,
    ).expand(images=frame_batches())
    # [END howto_operator_imagecontains_max_run_tasks]
    wait_for_batches = ImageContainsSensor.partial(
        task_id="wait_for_batches",
        deferrable=True,
        poke_interval=5,
    ).expand(submission=submit_batches.output)
    # [END howto_operator_imagecontains_mapped]

    # [START howto_operator_imagecontains_records_path]
    # Thousands of images: the handle's tasks and the records go to object storage (any scheme of
    # ObjectStoragePath, with records_conn_id), and XCom holds a small reference.
    submit_stored = ImageContainsOperator(
        task_id="submit_stored",
        images=FRAMES,
        target_label="bicycle",
        function_name=FUNCTION,
        records_path=RECORDS_PATH,
    )
    wait_stored = ImageContainsSensor(
        task_id="wait_stored",
        submission=submit_stored.output,
        records_path=RECORDS_PATH,
        deferrable=True,
        poke_interval=5,
    )

    @task
    def count_bicycles(reference: dict) -> int:
        return sum(1 for record in read_records(reference) if record["contains_target"])

    count_bicycles(wait_stored.output)
    # [END howto_operator_imagecontains_records_path]

    # [START howto_operator_imagecontains_prescreen]
    # A model answers the frames it is sure about; only the rest are paid crowd tasks, and a stable 5%
    # of its answers are audited by the crowd. The built-in people scorer needs the [vision] extra; a
    # scorer that cannot be built fails the task before anything is paid.
    screened = ImageContainsOperator(
        task_id="submit_screened",
        images=FRAMES,
        target_label="person",
        function_name=FUNCTION,
        prescreen=PreScreen(
            scorer="airflow_provider_imagecontains.prescreen.people.PeopleScorer",  # built when the task runs
            accept_above=0.97,  # templated, as are reject_below and calibration_pairs
            reject_below=0.03,
            audit_rate=0.05,
        ),
        wait_for_completion=True,
        deferrable=True,
        poll_interval=5,
    )
    # [END howto_operator_imagecontains_prescreen]
