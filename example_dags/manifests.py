"""The training dataset of training_data_etl: one record per image from the crowd's answers, and the
SageMaker Ground Truth multi-label form of them, written into the dataset folder. Helpers of the example DAG
(kept out of parsing by ``.airflowignore``); nothing here is the provider's."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from example_io import join_location, write_output

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


def write_labelled_dataset(
    folder: str,
    images: list[dict[str, str]],
    labels: list[str],
    answers: list[dict[str, Any]],
    job_name: str,
    conn_id: str | None = None,
) -> dict[str, Any]:
    """Write ``labels.jsonl`` (every image) and ``output.manifest`` (the fully answered ones) into ``folder``.

    :param folder: a local folder, ``file://`` URI or object-storage prefix.
    :param conn_id: the Airflow connection of its storage.
    :return: how many images were labelled and fully answered, and where each file went.
    """
    records = label_records(images, labels, answers)
    manifest = ground_truth_manifest(records, labels, job_name, datetime.now(timezone.utc))
    return {
        "images": len(records),
        "fully_answered": len(manifest),
        "labels_jsonl": write_output(
            join_location(folder, "labels.jsonl"), json_lines(records), "application/jsonl", conn_id
        ),
        "ground_truth_manifest": write_output(
            join_location(folder, "output.manifest"), json_lines(manifest), "application/jsonl", conn_id
        ),
    }
