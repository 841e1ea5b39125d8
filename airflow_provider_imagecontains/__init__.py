"""Apache Airflow provider for the MTurk Crowd image-contains API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow (the ``apache_airflow_provider`` entry point)."""
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
                    "airflow_provider_imagecontains.hooks.credentials",
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
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port"],
                    "relabeling": {"login": "AWS Access Key ID", "password": "AWS Secret Access Key"},
                    "placeholders": {
                        "login": "leave empty to use boto3's default credential chain",
                        "password": "leave empty to use boto3's default credential chain",
                        "extra": '{"service_config": {"sts": {"endpoint_url": "https://sts.us-east-1.amazonaws.com"}}}',
                    },
                },
                "conn-fields": {
                    "region_name": {
                        "label": "Region",
                        "description": "Region the requests are signed for.",
                        "schema": {"type": ["string", "null"], "default": "us-east-1"},
                    },
                    "endpoint_url": {
                        "label": "Endpoint URL",
                        "description": "Crowd API base URL (also used for STS unless service_config.sts.endpoint_url is set).",
                        "schema": {
                            "type": ["string", "null"],
                            "format": "url",
                            "default": "https://crowd.us-east-1.amazonaws.com",
                        },
                    },
                    "account_id": {
                        "label": "AWS Account ID",
                        "description": "12-digit account id of the task URLs; leave empty to learn it once through STS GetCallerIdentity.",
                        "schema": {"type": ["string", "null"], "pattern": "^[0-9]{12}$"},
                    },
                    "aws_session_token": {
                        "label": "AWS Session Token",
                        "description": "Session token of temporary access keys.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "role_arn": {
                        "label": "Role ARN",
                        "description": "IAM role to assume through STS; its credentials are refreshed before they expire.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "profile_name": {
                        "label": "Profile Name",
                        "description": "AWS shared-config profile to take credentials from when no keys are given.",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            }
        ],
    }
