"""Apache Airflow provider for the MTurk Crowd image-contains API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow (the ``apache_airflow_provider`` entry point)."""
    from airflow_provider_imagecontains.hooks.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

    return {
        "package-name": "airflow-provider-imagecontains",
        "name": "MTurk Crowd Image Contains",
        "description": "Crowd-verified answers to 'does this image contain X?' from the MTurk Crowd API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "MTurk Crowd Image Contains",
                "external-doc-url": "https://github.com/awslabs/mturk-crowd-beta-client-python",
                "tags": ["aws"],
            }
        ],
        "hooks": [
            {
                "integration-name": "MTurk Crowd Image Contains",
                "python-modules": [
                    "airflow_provider_imagecontains.hooks.base_crowd",
                    "airflow_provider_imagecontains.hooks.imagecontains",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": "MTurk Crowd Image Contains",
                "python-modules": ["airflow_provider_imagecontains.operators.imagecontains"],
            }
        ],
        "sensors": [
            {
                "integration-name": "MTurk Crowd Image Contains",
                "python-modules": ["airflow_provider_imagecontains.sensors.imagecontains"],
            }
        ],
        "triggers": [
            {
                "integration-name": "MTurk Crowd Image Contains",
                "python-modules": ["airflow_provider_imagecontains.triggers.imagecontains"],
            }
        ],
        "extra-links": ["airflow_provider_imagecontains.links.imagecontains.CrowdDashboardLink"],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_imagecontains.hooks.imagecontains.ImageContainsHook",
                "hook-name": "MTurk Crowd Image Contains",
                "connection-type": "imagecontains",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
