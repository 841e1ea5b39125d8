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
runs after every new dataset.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import Asset, Param, dag, task
from example_io import as_records, batched, join_location, list_images, write_output

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
LABEL_ATTRIBUTE = "image-contains"


def label_records(images: list[dict[str, str]], labels: list[str], answers: list[dict[str, Any]]) -> list[dict]:
    """One record per image: the labels the crowd saw, and every label's answer (None if unanswered).

    :param images: ``{"source", "url"}`` records, as listed.
    :param labels: the labels asked about, in order.
    :param answers: the sensor's answers, one per image and label.
    """
    by_question = {(answer["url"], answer["label"]): answer for answer in answers}
    records = []
    for image in images:
        found, confidence, workers = {}, {}, {}
        for label in labels:
            answer = by_question.get((image["url"], label))
            completed = answer is not None and answer["state"] == "completed"
            found[label] = answer["contains_target"] if completed else None
            confidence[label] = answer.get("confidence") if completed else None
            workers[label] = answer.get("answers") if completed else None
        records.append(
            {
                "source": image["source"],
                "url": image["url"],
                "labels": [label for label in labels if found[label]],
                "answers": found,
                "confidence": confidence,
                "workers": workers,
            }
        )
    return records


def ground_truth_manifest(records: list[dict], labels: list[str], job_name: str, created: datetime) -> list[dict]:
    """The records as Ground Truth multi-label classification output lines (fully answered images only).

    :param records: what :func:`label_records` returned.
    :param labels: the labels asked about; a label's class id is its position in this list.
    :param job_name: recorded as ``labeling-job/<job_name>``.
    :param created: the manifest's creation date.
    """
    lines = []
    for record in records:
        if None in record["answers"].values():
            continue
        class_ids = [labels.index(label) for label in record["labels"]]
        metadata = {
            "job-name": f"labeling-job/{job_name}",
            "class-map": {str(class_id): labels[class_id] for class_id in class_ids},
            "human-annotated": "yes",
            "creation-date": created.strftime("%Y-%m-%dT%H:%M:%S.%f"),
            "type": "groundtruth/image-classification-multilabel",
        }
        confidences = {str(i): record.get("confidence", {}).get(labels[i]) for i in class_ids}
        if confidences and None not in confidences.values():
            metadata["confidence-map"] = confidences
        # Not a Ground Truth field (its consolidation records no worker count); named like confidence-map.
        worker_counts = {str(i): record.get("workers", {}).get(labels[i]) for i in class_ids}
        if worker_counts and None not in worker_counts.values():
            metadata["worker-count-map"] = worker_counts
        lines.append(
            {"source-ref": record["source"], LABEL_ATTRIBUTE: class_ids, f"{LABEL_ATTRIBUTE}-metadata": metadata}
        )
    return lines


def json_lines(items: list[dict]) -> bytes:
    return "".join(json.dumps(item, sort_keys=True) + "\n" for item in items).encode()


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
        "labels": Param(["person", "car"], type="array", minItems=1, description="What to look for in each image."),
        "batch_size": Param(100, type="integer", minimum=1, description="Questions per mapped crowd task."),
    },
)
def training_data_etl():
    @task
    def list_dataset_images(params: dict[str, Any]) -> list[dict[str, str]]:
        images = list_images(params["images_source"], base_url=params["images_base_url"])
        log.info("%d images to label with %s", len(images), params["labels"])
        return images

    @task
    def make_questions(images: list[dict[str, str]], params: dict[str, Any]) -> list[list[dict[str, str]]]:
        """One question per image and label, in batches of ``batch_size``."""
        questions = [{"url": image["url"], "label": label} for image in images for label in params["labels"]]
        return batched(questions, params["batch_size"])

    images = list_dataset_images()
    submissions = ImageContainsOperator.partial(
        task_id="ask_crowd", imagecontains_conn_id=CONN_ID, max_run_tasks=MAX_RUN_TASKS
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
        labels = params["labels"]
        records = label_records(images, labels, as_records(answers))
        manifest = ground_truth_manifest(records, labels, dag_run.dag_id, datetime.now(timezone.utc))
        folder = TRAINING_DATASET.uri
        written = {
            "labels_jsonl": write_output(
                join_location(folder, "labels.jsonl"), json_lines(records), "application/jsonl"
            ),
            "ground_truth_manifest": write_output(
                join_location(folder, "output.manifest"), json_lines(manifest), "application/jsonl"
            ),
        }
        log.info("Labelled %d images (%d fully answered): %s", len(records), len(manifest), written)
        return {"images": len(records), "fully_answered": len(manifest), **written}

    write_dataset(images, answers)


training_data_etl()
