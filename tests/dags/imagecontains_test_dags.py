"""DAGs run by the operator/sensor tests through ``airflow dags test`` and a real deployment.

Settings come from the environment so one file serves every scenario:
``IMAGECONTAINS_TEST_IMAGES`` (JSON list of images), ``IMAGECONTAINS_TEST_FUNCTION``,
``IMAGECONTAINS_TEST_SENSOR_MODE`` (``deferrable``, ``poke`` or ``reschedule``) and
``IMAGECONTAINS_TEST_RESULTS`` (file the last task writes the results to, as JSON).
"""

from __future__ import annotations

import json
import os
from datetime import datetime

from airflow.sdk import dag, task

from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor

FUNCTION = os.environ.get("IMAGECONTAINS_TEST_FUNCTION", "image-contains-test")
SENSOR_MODE = os.environ.get("IMAGECONTAINS_TEST_SENSOR_MODE", "deferrable")


@task
def list_image_batches() -> list[list[str]]:
    images = json.loads(os.environ["IMAGECONTAINS_TEST_IMAGES"])
    return [images[: len(images) // 2], images[len(images) // 2 :]]


@task
def save_results(results: list[list[dict]]) -> None:
    with open(os.environ["IMAGECONTAINS_TEST_RESULTS"], "w") as file:
        json.dump([record for batch in list(results) for record in batch], file)


@dag(dag_id="imagecontains_mapped", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def imagecontains_mapped():
    submissions = ImageContainsOperator.partial(
        task_id="submit", target_label="person", function_name=FUNCTION, namespace="tests-mapped"
    ).expand(images=list_image_batches())
    answers = ImageContainsSensor.partial(
        task_id="wait",
        failed_policy="report",
        poke_interval=0.2,
        timeout=120,
        deferrable=SENSOR_MODE == "deferrable",
        mode="reschedule" if SENSOR_MODE == "reschedule" else "poke",
    ).expand(submission=submissions.output)
    save_results(answers.output)


@task
def save_single_result(results: list[dict]) -> None:
    with open(os.environ["IMAGECONTAINS_TEST_RESULTS"], "w") as file:
        json.dump(results, file)


@dag(dag_id="imagecontains_templated", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def imagecontains_templated():
    submit = ImageContainsOperator(
        task_id="submit",
        images=json.loads(os.environ.get("IMAGECONTAINS_TEST_IMAGES", "[]")),
        target_label="person",
        function_name=FUNCTION,
        namespace="tests-templated",
    )
    wait = ImageContainsSensor(
        task_id="wait",
        submission="{{ ti.xcom_pull(task_ids='submit') }}",
        failed_policy="report",
        poke_interval=0.2,
        timeout=120,
    )
    submit >> wait >> save_single_result(wait.output)


@dag(dag_id="imagecontains_run_cap", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def imagecontains_run_cap():
    # Two mapped instances of half the images each; the cap admits the first one's tasks only.
    ImageContainsOperator.partial(
        task_id="submit",
        target_label="person",
        function_name=FUNCTION,
        namespace="tests-run-cap",
        max_run_tasks=int(os.environ.get("IMAGECONTAINS_TEST_MAX_RUN_TASKS", "1000")),
    ).expand(images=list_image_batches())


imagecontains_mapped()
imagecontains_templated()
imagecontains_run_cap()
