"""The imagecontains connection form, for every Airflow 3 release.

Airflow 3.2 and later read it from provider info (``ui-field-behaviour`` and ``conn-fields``); 3.0 and 3.1
only from the hook's ``get_ui_field_behaviour`` and ``get_connection_form_widgets``. Both are built from
the two dicts here, so the form is the same everywhere. Light on purpose: provider discovery imports it.
"""

from __future__ import annotations

from typing import Any

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["host", "schema", "port"],
    "relabeling": {"login": "AWS Access Key ID", "password": "AWS Secret Access Key"},
    "placeholders": {
        "login": "leave empty to use boto3's default credential chain",
        "password": "leave empty to use boto3's default credential chain",
        "extra": '{"service_config": {"sts": {"endpoint_url": "https://sts.us-east-1.amazonaws.com"}}}',
    },
}

# Extra fields stored under these keys of the connection's extra JSON (read by hooks/credentials.py).
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "region_name": {
        "label": "Region",
        "description": "Region the requests are signed for.",
        "schema": {"type": ["string", "null"], "default": "us-east-1"},
    },
    "endpoint_url": {
        "label": "Endpoint URL",
        "description": (
            "Base URL of the gateway (imagecontains-server), e.g. http://crowd.internal:8787. Never used for STS: "
            "that is service_config.sts.endpoint_url, else boto3's own endpoint."
        ),
        "schema": {"type": ["string", "null"], "format": "url"},
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
}


def hook_field_behaviour() -> dict[str, Any]:
    """:data:`UI_FIELD_BEHAVIOUR` in the hook method's spelling (``hidden_fields``)."""
    return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}


def hook_form_widgets() -> dict[str, Any]:
    """:data:`CONN_FIELDS` as the WTForms fields of ``get_connection_form_widgets`` (Airflow 3.0, 3.1)."""
    from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import PasswordField, StringField
    from wtforms.validators import Optional

    widgets: dict[str, Any] = {}
    for name, field in CONN_FIELDS.items():
        secret = field["schema"].get("format") == "password"
        field_class, widget = (PasswordField, BS3PasswordFieldWidget) if secret else (StringField, BS3TextFieldWidget)
        widgets[name] = field_class(
            lazy_gettext(field["label"]),
            widget=widget(),
            description=field["description"],
            validators=[Optional()],
            default=field["schema"].get("default"),
        )
    return widgets
