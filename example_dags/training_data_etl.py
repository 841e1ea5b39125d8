"""Label a folder of images for training: one crowd question per image and label.

Lists the images of a local folder (served over HTTP) or an S3 prefix, asks whether each image
contains each label in batches spread over the workers by dynamic task mapping, waits for the
answers, and writes the labelled dataset into the ``IMAGECONTAINS_DATASET_URI`` folder or S3 prefix:

* ``labels.jsonl``: one record per image, ``{"source", "url", "labels", "answers", "confidence", "workers"}``,
  where ``labels`` lists the labels the crowd saw, ``answers`` maps every label asked to true, false
  or null (the crowd could not answer), ``confidence`` each label to the adjudicator's confidence in its
  answer and ``workers`` to the number of workers whose votes decided it (null where the service gives none);
* ``output.manifest``: the same labels as a SageMaker Ground Truth augmented manifest
  (``groundtruth/image-classification-multilabel``, with Ground Truth's ``confidence-map`` for the labels
  found when the service gave confidences, and ``worker-count-map``, the workers whose votes decided each,
  when it gave those), without the images that have an unanswered label, since that
  form cannot say "unknown".

The folder is the Airflow Asset ``imagecontains_training_dataset``: a training DAG scheduled on it
runs after every new dataset. ``s3://`` images and dataset folders are read and written through Airflow's
``ObjectStoragePath`` on the ``aws_conn_id`` param's connection (``IMAGECONTAINS_AWS_CONN_ID``, default
``aws_default``), with which the operator also presigns ``s3://`` images for the crowd.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import Asset, Param, dag, task
from example_io import as_records, batched, list_images
from manifests import write_labelled_dataset

from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor

log = logging.getLogger(__name__)

AIRFLOW_HOME = os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow"))
CONN_ID = os.environ.get("IMAGECONTAINS_CONN_ID", "imagecontains_default")
POLL_INTERVAL_SECONDS = float(os.environ.get("IMAGECONTAINS_POLL_INTERVAL", "60"))
# Spend cap of one run: crowd tasks planned by all mapped instances together (max_run_tasks).
MAX_RUN_TASKS = int(os.environ.get("IMAGECONTAINS_MAX_RUN_TASKS", "100000"))
# Fixed when the DAG is parsed, because an Asset names one place.
TRAINING_DATASET = Asset(
    name="imagecontains_training_dataset",
    uri=os.environ.get(
        "IMAGECONTAINS_DATASET_URI", "file://" + os.path.join(AIRFLOW_HOME, "imagecontains", "training-dataset")
    ),
)


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["imagecontains", "example"],
    params={
        "images_source": Param(
            os.environ.get("IMAGECONTAINS_IMAGES_SOURCE", os.path.join(AIRFLOW_HOME, "imagecontains", "images")),
            type="string",
            description="Local folder or s3://bucket/prefix/ of the images to label.",
        ),
        "images_base_url": Param(
            os.environ.get("IMAGECONTAINS_IMAGES_BASE_URL"),
            type=["null", "string"],
            description="http(s) URL under which a local images folder is served to the crowd.",
        ),
        "aws_conn_id": Param(
            os.environ.get("IMAGECONTAINS_AWS_CONN_ID", "aws_default"),
            type="string",
            description="Amazon connection for s3:// images and datasets (the operator presigns images with it too).",
        ),
        "labels": Param(["person", "car"], type="array", minItems=1, description="What to look for in each image."),
        "batch_size": Param(100, type="integer", minimum=1, description="Questions per mapped crowd task."),
    },
)
def training_data_etl():
    @task
    def list_dataset_images(params: dict[str, Any]) -> list[dict[str, str]]:
        images = list_images(params["images_source"], base_url=params["images_base_url"], conn_id=params["aws_conn_id"])
        log.info("%d images to label with %s", len(images), params["labels"])
        return images

    @task
    def make_questions(images: list[dict[str, str]], params: dict[str, Any]) -> list[list[dict[str, str]]]:
        """One question per image and label, in batches of ``batch_size``."""
        questions = [{"url": image["url"], "label": label} for image in images for label in params["labels"]]
        return batched(questions, params["batch_size"])

    images = list_dataset_images()
    submissions = ImageContainsOperator.partial(
        task_id="ask_crowd",
        imagecontains_conn_id=CONN_ID,
        aws_conn_id="{{ params.aws_conn_id }}",
        max_run_tasks=MAX_RUN_TASKS,
    ).expand(images=make_questions(images))
    answers = (
        ImageContainsSensor.partial(
            task_id="wait_for_answers", failed_policy="report", poke_interval=POLL_INTERVAL_SECONDS, deferrable=True
        )
        .expand(submission=submissions.output)
        .output
    )

    @task(outlets=[TRAINING_DATASET])
    def write_dataset(images: list[dict[str, str]], answers, params: dict[str, Any], dag_run=None) -> dict[str, Any]:
        written = write_labelled_dataset(
            TRAINING_DATASET.uri,
            images,
            params["labels"],
            as_records(answers),
            dag_run.dag_id,
            params["aws_conn_id"],
        )
        log.info("Labelled %d images (%d fully answered): %s", written["images"], written["fully_answered"], written)
        return written

    write_dataset(images, answers)


training_data_etl()
