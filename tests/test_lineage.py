"""OpenLineage: the operator and sensor report their images as input datasets, read by the OpenLineage
provider's own extractor (the provider is part of the dev install)."""

from __future__ import annotations

import json
from datetime import datetime

import boto3
from airflow.providers.openlineage.extractors.base import DefaultExtractor
from airflow.sdk import DAG

from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor

IMAGES = [
    "https://img.example.com/cam1/0001.jpg",
    "https://img.example.com/cam1/0002.jpg",
    "https://img.example.com:8443/cam2/0001.jpg",
    "s3://frames/cam3/0001.jpg",
    "s3://frames/cam3/0002.jpg",
    "s3://frames/top.jpg",
]
FOLDERS = [
    ("https://img.example.com", "/cam1"),
    ("https://img.example.com:8443", "/cam2"),
    ("s3://frames", "/"),
    ("s3://frames", "cam3"),
]


def _lineage(operator) -> list[tuple[str, str]]:
    metadata = DefaultExtractor(operator).extract_on_complete(task_instance=None)
    assert metadata is not None and metadata.outputs == []
    return sorted((dataset.namespace, dataset.name) for dataset in metadata.inputs)


def test_operator_and_sensor_report_the_image_folders_as_inputs(crowd_server, s3_endpoint, monkeypatch) -> None:
    crowd_server()
    extra = {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_TEST", json.dumps({"conn_type": "aws", "login": "k", "password": "s", "extra": extra})
    )
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="k", aws_secret_access_key="s")
    s3.create_bucket(Bucket="frames")
    with DAG("lineage_dag", schedule=None, start_date=datetime(2026, 1, 1)):
        submit = ImageContainsOperator(
            task_id="submit",
            images=IMAGES,
            target_label="person",
            function_name="image-contains-test",
            aws_conn_id="aws_test",
        )
    handle = submit.execute({})
    with DAG("lineage_dag", schedule=None, start_date=datetime(2026, 1, 1)):
        wait = ImageContainsSensor(task_id="wait", submission=handle)

    assert _lineage(submit) == FOLDERS
    assert _lineage(wait) == FOLDERS


def test_the_training_manifest_folder_is_the_etl_dags_output(monkeypatch) -> None:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.providers.openlineage.extractors.manager import ExtractorManager

    monkeypatch.setenv("IMAGECONTAINS_DATASET_URI", "s3://training-data/person-v1")
    import importlib

    import training_data_etl

    try:
        etl = importlib.reload(training_data_etl).training_data_etl()
        lineage = OperatorLineage()
        ExtractorManager().extract_inlets_and_outlets(lineage, etl.get_task("write_dataset"))
    finally:  # other tests use the module as parsed with the default dataset location
        monkeypatch.undo()
        importlib.reload(training_data_etl)
    # The folder holding output.manifest and labels.jsonl, as the OpenLineage provider reports the task's Asset.
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://training-data", "person-v1")]
